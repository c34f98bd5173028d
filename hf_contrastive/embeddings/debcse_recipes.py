"""Recipe task `debcse`: DebCSE (Miao et al. 2023) sampled triples, InfoNCE training, STS before/after.

A recipe with `task: debcse` has the sections of the `contrastive` task, plus the reference encoder and the
sampler's settings::

    model:  {name_or_path: ${minilm}, reference: ${minilm}}      # SentenceEncoder.from_pretrained arguments
    data:   {train: {type: text, path: ..., max_rows: 1000}, eval_sts: dev, text_column: text}
    method: {temperature: 0.05, positive_threshold: 0.5, false_negative_cutoff: 0.9, ...}   # DebCSEMethod
    args:   {learning_rate: 3e-5, per_device_train_batch_size: 64, ...}   # ContrastiveConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [query, value]}       # optional (peft.LoraConfig)

`model.reference` names the frozen reference encoder (a folder or Hub id loaded with
`SentenceEncoder.from_pretrained`); without it the model to be trained embeds the corpus before training
(its weights are then those of a frozen copy). The sentences of `data.train` (one text column) go through
[`DebiasedPairSampler`]; the sampled (anchor, positive, negative) rows train [`ContrastiveTrainer`] with
InfoNCE and one hard negative per anchor (`loss: auto` picks `infonce` for triples).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.recipes import RecipeError, RecipeTask, build_args, lora_config, read_method
from hf_contrastive.embeddings.debcse import DEBCSE_CITATION, DebiasedPairSampler
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.recipes import DATA_SCHEMA as CONTRASTIVE_DATA_SCHEMA
from hf_contrastive.embeddings.recipes import MODEL_SCHEMA as CONTRASTIVE_MODEL_SCHEMA
from hf_contrastive.embeddings.recipes import train_evaluate_save
from hf_contrastive.embeddings.sts import STSEvaluator
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

__all__ = ["DATA_SCHEMA", "DEBCSE_TASK", "MODEL_SCHEMA", "DebCSEMethod", "run_debcse_recipe"]

MODEL_SCHEMA: dict[str, Any] = {**CONTRASTIVE_MODEL_SCHEMA, "reference": str}
"""The `model` keys of `debcse` recipes: those of `contrastive` recipes plus `reference`, the frozen reference
encoder's folder or Hub id."""

DATA_SCHEMA: dict[str, Any] = {**CONTRASTIVE_DATA_SCHEMA, "text_column": str}
"""The `data` keys of `debcse` recipes: those of `contrastive` recipes plus `text_column`, the sentence column
of the training source (default: `text` / `sentence` / `sentences` or its only column)."""

SAMPLER_FIELDS = (
    "num_candidates",
    "positive_threshold",
    "false_negative_cutoff",
    "selection_temperature",
    "overlap_bins",
    "length_bins",
    "smoothing",
    "max_weight",
    "population_pairs",
)


@dataclass
class DebCSEMethod:
    r"""The `method` section of `debcse` recipes: the InfoNCE objective and the DebCSE sampler.

    The objective's settings are the [`ContrastiveConfig`] fields of the same name (SimCSE's defaults); the
    sampler's are the arguments of [`DebiasedPairSampler`]. The paper publishes no values for them:
    `selection_temperature` and `positive_threshold` were chosen on a development slice of wiki1m (lines
    6001-9000, all-MiniLM-L6-v2 as the reference), the others are round values.

    Args:
        loss (`str`, *optional*, defaults to `"auto"`):
            `auto` trains the sampled triples with `infonce` (hard negative in every anchor's denominator);
            `simcse_sup` and `mnrl` also take triples.
        temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature of InfoNCE (SimCSE's 0.05).
        learnable_temperature (`bool`, *optional*, defaults to `False`):
            Learn the scale (CLIP-style), clamped.
        hard_negative_weight (`float`, *optional*, defaults to 0.0):
            Logit bonus on each anchor's own hard negative.
        symmetric (`bool`, *optional*, defaults to `False`):
            Add the positive -> anchor InfoNCE term.
        num_candidates (`int`, *optional*, defaults to 32):
            Nearest neighbours per anchor under the reference encoder.
        positive_threshold (`float`, *optional*, defaults to 0.5):
            Smallest reference cosine of a positive; anchors without one are dropped (counted, logged).
        false_negative_cutoff (`float`, *optional*, defaults to 0.9):
            The false-negative threshold: candidates at or above this reference cosine are never negatives.
        selection_temperature (`float`, *optional*, defaults to 0.05):
            Temperature of the naive similarity-ranked selection the propensity describes.
        overlap_bins (`int`, *optional*, defaults to 5):
            Bins of the word overlap (Jaccard index) in the surface strata.
        length_bins (`int`, *optional*, defaults to 5):
            Bins of the relative length difference in the surface strata.
        smoothing (`float`, *optional*, defaults to 1.0):
            Pseudo-count per stratum of the propensity estimate.
        max_weight (`float`, *optional*, defaults to 10.0):
            Cap on the inverse-propensity weights.
        population_pairs (`int`, *optional*, defaults to 20000):
            Random sentence pairs that estimate the surface distribution of all pairs.
        sampler_seed (`int`, *optional*):
            Seed of the draws; defaults to `args.seed`.
        debias (`bool`, *optional*, defaults to `True`):
            Apply the inverse-propensity weights; `false` trains on the naive similarity-ranked selection (the
            ablation).
    """

    loss: str = "auto"
    temperature: float = 0.05
    learnable_temperature: bool = False
    hard_negative_weight: float = 0.0
    symmetric: bool = False
    num_candidates: int = 32
    positive_threshold: float = 0.5
    false_negative_cutoff: float = 0.9
    selection_temperature: float = 0.05
    overlap_bins: int = 5
    length_bins: int = 5
    smoothing: float = 1.0
    max_weight: float = 10.0
    population_pairs: int = 20_000
    sampler_seed: int | None = None
    debias: bool = True

    def sampler_settings(self) -> dict[str, Any]:
        """The [`DebiasedPairSampler`] keyword arguments among these settings."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in SAMPLER_FIELDS}


def run_debcse_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Sample DebCSE triples, train a sentence encoder on them, evaluate, save it; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `before` / `after` (STS figures, when `data.eval_sts` is set), `sampler` (sentences, training
        rows, dropped anchors by reason, seed), `output` (the saved encoder's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise RecipeError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    if "train" not in data_cfg:
        raise RecipeError(
            "The recipe's data section needs a train source (the sentences to sample pairs from)."
        )
    method = read_method(DebCSEMethod, recipe.get("method"), task="debcse")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output", "report_to": "none"}
    if data_cfg.get("dataset_name"):
        defaults["dataset_name"] = data_cfg["dataset_name"]
    args = build_args(ContrastiveConfig, recipe.get("args"), method=method, defaults=defaults)

    reference_path = model_cfg.pop("reference", None)
    model = SentenceEncoder.from_pretrained(model_cfg.pop("name_or_path"), **model_cfg)
    reference = SentenceEncoder.from_pretrained(reference_path) if reference_path else model
    sampler = DebiasedPairSampler(
        load_source(data_cfg["train"]),
        reference,
        text_column=data_cfg.get("text_column"),
        **method.sampler_settings(),
    )
    seed = args.seed if method.sampler_seed is None else method.sampler_seed
    sample = sampler.draw(seed=seed, debias=method.debias)
    del reference, sampler

    info = getattr(model, "card_info", None)
    if info is not None:
        if DEBCSE_CITATION not in info.citations:
            info.citations.append(DEBCSE_CITATION)
        info.tags = list(dict.fromkeys([*info.tags, "debcse"]))

    sts = STSEvaluator.sts_benchmark(str(data_cfg["eval_sts"])) if data_cfg.get("eval_sts") else None
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=sample.dataset,
        sts_evaluator=sts,
        peft_config=lora_config(recipe.get("lora")),
    )
    results: dict[str, Any] = {
        "sampler": {
            "sentences": int(len(sample.anchor_index) + sum(sample.dropped.values())),
            "rows": len(sample.dataset),
            "dropped": dict(sample.dropped),
            "seed": seed,
            "debiased": sample.debiased,
        }
    }
    return train_evaluate_save(trainer, results)


DEBCSE_TASK = RecipeTask(
    name="debcse",
    runner=run_debcse_recipe,
    method=DebCSEMethod,
    description="DebCSE: inverse-propensity-weighted positive / hard-negative sampling, InfoNCE, STS",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ContrastiveConfig,),
)
