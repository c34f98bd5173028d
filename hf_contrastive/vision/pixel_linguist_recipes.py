"""Recipe task `pixel-linguist`: train a pixel sentence encoder through a staged curriculum, report STS-B
Spearman before and after, save the encoder with its card.

A recipe with `task: pixel-linguist` has these sections::

    model:  {backbone_config: {hidden_size: 256, num_hidden_layers: 4, ...}}   # a ViT-MAE body from scratch
            or {name_or_path: a saved PixelLinguistModel folder}
            + PixelLinguistConfig settings (max_patches, font_size, head_dropout, projection_dim, ...)
    data:   {eval: {split: dev, max_rows: 500}, dataset_name: ...}             # STS-B, before and after
    method: {loss_temperature: 0.05, stages: [{name, data, learning_rate, max_steps, runs}, ...]}
    args:   PixelLinguistTrainingArguments fields (batch size, seed, schedule...)

Each stage's `data` is a source of `load_stage_data`: `{type: text, path: ..., positives: [typo, shuffle,
clause_shuffle]}` (sentences paired with visual positives), `{type: snli, split: dev}` (NLI pairs) or
`{type: files, format: json, path: ...}` (anchor / positive pairs). A stage with `runs: 4` trains four runs
from the same start and averages their weights, as the paper does for its visual-alignment stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import RecipeError, RecipeTask, build_args, read_method, schema_of
from hf_contrastive.core.utils import data_dir
from hf_contrastive.embeddings.sts import evaluate_sts
from hf_contrastive.vision.pixel_linguist import (
    CurriculumStage,
    PixelLinguistConfig,
    PixelLinguistModel,
    PixelLinguistTrainingArguments,
    run_curriculum,
)

__all__ = [
    "DATA_SCHEMA",
    "MODEL_SCHEMA",
    "PIXEL_LINGUIST_TASK",
    "PixelLinguistMethod",
    "run_pixel_linguist_recipe",
]


def _default_stages() -> list[dict[str, Any]]:
    return [
        {
            "name": "visual-alignment",
            "data": {
                "type": "text",
                "path": str(data_dir() / "corpus" / "wiki1m_first11914.txt"),
                "positives": ["typo", "shuffle", "clause_shuffle"],
            },
            "learning_rate": 3e-6,
            "max_steps": 1300,
            "runs": 4,
        }
    ]


@dataclass
class PixelLinguistMethod:
    r"""The `method` section of `pixel-linguist` recipes (Xiao et al. 2024).

    Args:
        loss_temperature (`float`, *optional*, defaults to `0.05`):
            Temperature of the symmetric InfoNCE (cosine similarities are divided by it).
        stages (`list[dict]`, *optional*):
            The curriculum, in order; each a [`CurriculumStage`] mapping (`name`, `data`, `learning_rate`,
            `max_steps`, optional `runs` and `per_device_train_batch_size`). Default: the paper's stage 0, visual
            alignment on wiki sentences with typo and shuffle positives, lr 3e-6, 1300 steps, four runs averaged.
    """

    loss_temperature: float = 0.05
    stages: list[dict[str, Any]] = field(default_factory=_default_stages)


MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "backbone_config": dict[str, Any],
    **schema_of(PixelLinguistConfig.__init__, skip=("backbone_config", "loss_temperature")),
}
"""The `model` keys of `pixel-linguist` recipes: a saved encoder (`name_or_path`) or a ViT-MAE config to train
from scratch (`backbone_config`), and [`PixelLinguistConfig`] settings."""

DATA_SCHEMA: dict[str, Any] = {"eval": dict[str, Any], "dataset_name": str}
"""The `data` keys of `pixel-linguist` recipes: the STS-B evaluation (`split`, `max_rows`, `path`) and a data set
name for the card."""


def _sts_rows(spec: dict[str, Any]) -> list:
    unknown = sorted(set(spec) - {"split", "max_rows", "path"})
    if unknown:
        raise RecipeError(f"Unknown key(s) {unknown} in data.eval (split, max_rows, path).")
    rows = load_sts_benchmark(spec.get("split", "dev"), spec.get("path"))
    return rows[: spec["max_rows"]] if spec.get("max_rows") else rows


def run_pixel_linguist_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a [`PixelLinguistModel`] through the recipe's curriculum, evaluate it on STS-B, save it.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `stages` (per stage: name, rows, runs with their train loss, folder), with `data.eval` `before`
        and `after` (STS-B Spearman of cosine similarities), `output` (the saved encoder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    if recipe.get("lora"):
        raise RecipeError("Task 'pixel-linguist' trains its encoder in full; remove the lora section.")
    if "name_or_path" in model_cfg and "backbone_config" in model_cfg:
        raise RecipeError("The pixel-linguist model section takes name_or_path or backbone_config, not both.")
    method = read_method(PixelLinguistMethod, recipe.get("method"), task="pixel-linguist")
    try:
        stages = [CurriculumStage.from_dict(s) for s in method.stages]
    except (TypeError, ValueError) as err:
        raise RecipeError(f"method.stages: {err}") from err
    if not stages:
        raise RecipeError("method.stages must hold at least one stage.")
    args = build_args(
        PixelLinguistTrainingArguments,
        recipe.get("args"),
        defaults={"output_dir": "hf-contrastive-output/pixel-linguist", "report_to": "none"},
    )
    if "name_or_path" in model_cfg:
        source = model_cfg.pop("name_or_path")
        model = PixelLinguistModel.from_pretrained(source, **model_cfg)
        model.config.loss_temperature = float(method.loss_temperature)
    else:
        config = PixelLinguistConfig(loss_temperature=method.loss_temperature, **model_cfg)
        model = PixelLinguistModel(config)

    results: dict[str, Any] = {}
    evaluation = _sts_rows(dict(data_cfg["eval"])) if data_cfg.get("eval") else None
    if evaluation is not None:
        results["before"] = evaluate_sts(model, evaluation, similarities=("cosine",))["spearman_cosine"]
    results["stages"] = run_curriculum(model, stages, args)
    if evaluation is not None:
        results["after"] = evaluate_sts(model, evaluation, similarities=("cosine",))["spearman_cosine"]

    final = Path(args.output_dir) / "final"
    info = model.card_info
    if data_cfg.get("dataset_name"):
        info.datasets = [str(data_cfg["dataset_name"])]
    info.training = {
        "objective": f"symmetric InfoNCE, cosine / {method.loss_temperature}",
        "curriculum": "; ".join(
            f"{s.name}: lr {s.learning_rate:g}, {s.max_steps} steps"
            + (f", {s.runs} runs averaged" if s.runs > 1 else "")
            for s in stages
        ),
        "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
        "seed": args.seed,
    }
    if evaluation is not None:
        split = data_cfg["eval"].get("split", "dev")
        info.eval_results = [
            EvalEntry(
                "sentence-similarity",
                "STS Benchmark",
                "mteb/stsbenchmark-sts",
                "spearman",
                float(results["after"]),
                dataset_split=split,
                metric_name="Spearman (cosine)",
            )
        ]
    if args.should_save:
        model.save_pretrained(final)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


PIXEL_LINGUIST_TASK = RecipeTask(
    name="pixel-linguist",
    runner=run_pixel_linguist_recipe,
    method=PixelLinguistMethod,
    description="Pixel Linguist rendered-text sentence encoder: staged curriculum, weight averaging, STS-B",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(PixelLinguistTrainingArguments,),
)
