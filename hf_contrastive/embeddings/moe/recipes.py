"""Recipe task `moe`: split a sentence encoder's MLPs into one expert per domain, train it with MNRL, report
F1 at the best cosine threshold per domain before and after training, save it with its card.

A recipe with `task: moe` has these sections::

    model:  {name_or_path: ${minilm}, domains: [paraphrase, sts], moe_layers: null, ...}
    data:   {benchmark: ${data}, eval_batch_size: 64}     # or train: {...}, eval_dev: {...}, eval_test: {...}
    method: {loss: mnrl, temperature: 0.05, domain_column: domain}           # MoEMethod
    args:   {learning_rate: 1e-4, per_device_train_batch_size: 16, ...}       # ContrastiveConfig fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [query, value]}           # optional (peft.LoraConfig)

`model.name_or_path` is a dense encoder (converted with [`MoESentenceEncoder.from_dense`]; `domains` is then
required, or taken from the benchmark split) or a saved mixture-of-experts encoder (loaded as it is).
`data.benchmark` builds the two-domain split of [`domain_pair_splits`] (MRPC paraphrases, STS-B pairs):
the matching train pairs are the training set, dev pairs choose the thresholds, test pairs are scored.
Otherwise `data.train` is anything [`hf_contrastive.core.data.loaders.load_source`] reads (with an `anchor`,
a `positive` and a domain column), and `eval_dev` / `eval_test` are sources of labelled pairs (`sentence1`,
`sentence2`, `label`, `domain`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_contrastive.core.data.loaders import load_source
from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import (
    BACKBONE_LOAD_OPTIONS,
    RecipeError,
    RecipeTask,
    build_args,
    lora_config,
    read_method,
    schema_of,
)
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.moe.configuration import MoESentenceEncoderConfig
from hf_contrastive.embeddings.moe.data import domain_pair_splits, positive_pairs
from hf_contrastive.embeddings.moe.evaluation import evaluate_domain_pairs
from hf_contrastive.embeddings.moe.modeling import MoESentenceEncoder
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

__all__ = ["DATA_SCHEMA", "MODEL_SCHEMA", "MOE_TASK", "MoEMethod", "run_moe_recipe"]

MODEL_SCHEMA: dict[str, Any] = {
    "name_or_path": str,
    "domains": list[str],
    "default_domain": str,
    "moe_layers": list[int],
    **schema_of(SentenceEncoderConfig.__init__, skip=("backbone_config",)),
    **BACKBONE_LOAD_OPTIONS,
}
"""The `model` keys of `moe` recipes: the dense or MoE folder / Hub id, the domains (one expert each), the
default domain, the layers to convert, the [`SentenceEncoderConfig`] head settings and backbone loading options."""

DATA_SCHEMA: dict[str, Any] = {
    "benchmark": str,
    "sts_positive_min": float,
    "sts_negative_max": float,
    "train": dict[str, Any],
    "eval_dev": dict[str, Any],
    "eval_test": dict[str, Any],
    "eval_batch_size": int,
    "dataset_name": str,
}
"""The `data` keys of `moe` recipes: the benchmark folder of the two-domain split (and its STS-B label bounds),
or explicit training / dev / test sources; the evaluation batch size and the data set's Hub name for the card."""


@dataclass
class MoEMethod:
    r"""The `method` section of `moe` recipes (Hallee et al. 2024): the contrastive objective and the routing column.

    Each setting is the [`ContrastiveConfig`] field of the same name.

    Args:
        loss (`str`, *optional*, defaults to `"mnrl"`):
            Multiple-negatives ranking loss (InfoNCE over in-batch negatives), the paper's objective; any loss
            name `ContrastiveConfig` accepts.
        temperature (`float`, *optional*, defaults to 0.05):
            Softmax temperature; 0.05 is the MNRL scale of 20.
        symmetric (`bool`, *optional*, defaults to `False`):
            Add the positive -> anchor term (the paper's symmetric variant).
        domain_column (`str`, *optional*, defaults to `"domain"`):
            Training column holding each row's domain, mapped through the model's `domain2id` to route it.
    """

    loss: str = "mnrl"
    temperature: float = 0.05
    symmetric: bool = False
    domain_column: str = "domain"


def _saved_model_type(name_or_path: str) -> str | None:
    config = Path(name_or_path).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as err:
        raise RecipeError(f"{config} is not valid JSON: {err}") from None


def _load_model(model_cfg: dict[str, Any], default_domains: list[str] | None) -> MoESentenceEncoder:
    name = model_cfg.pop("name_or_path")
    domains = model_cfg.pop("domains", None)
    moe_layers = model_cfg.pop("moe_layers", None)
    default_domain = model_cfg.pop("default_domain", None)
    if _saved_model_type(name) == MoESentenceEncoderConfig.model_type:
        if moe_layers is not None:
            raise RecipeError("model.moe_layers cannot change for a saved mixture-of-experts encoder.")
        if default_domain is not None:
            model_cfg["default_domain"] = default_domain
        model = MoESentenceEncoder.from_pretrained(name, **model_cfg)
        if domains is not None and list(domains) != model.config.domains:
            raise RecipeError(
                f"model.domains {list(domains)} differ from the saved model's {model.config.domains}."
            )
        return model
    domains = domains if domains is not None else default_domains
    if not domains:
        raise RecipeError("model.domains is required to convert a dense encoder (one expert per domain).")
    return MoESentenceEncoder.from_dense(
        name, list(domains), default_domain=default_domain, moe_layers=moe_layers, **model_cfg
    )


def run_moe_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Convert (or load) a mixture-of-experts encoder, train it, evaluate before and after, save it.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `before` / `after` (per domain and `all`: test F1, precision, recall, accuracy at the dev
        threshold, and the dev F1), when dev and test pairs are given; `output` (the saved encoder's folder) and
        `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise RecipeError("The recipe's model section needs name_or_path.")
    data_cfg = dict(recipe.get("data") or {})
    method = read_method(MoEMethod, recipe.get("method"), task="moe")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output", "report_to": "none"}
    if data_cfg.get("dataset_name"):
        defaults["dataset_name"] = data_cfg["dataset_name"]
    args = build_args(ContrastiveConfig, recipe.get("args"), method=method, defaults=defaults)

    dev = test = None
    if data_cfg.get("benchmark"):
        splits = domain_pair_splits(
            data_cfg["benchmark"],
            sts_positive_min=data_cfg.get("sts_positive_min", 4.0),
            sts_negative_max=data_cfg.get("sts_negative_max", 2.0),
        )
        train = load_source(data_cfg["train"]) if "train" in data_cfg else positive_pairs(splits["train"])
        dev, test = splits["dev"], splits["test"]
        benchmark_domains = list(dict.fromkeys(p.domain for p in splits["train"]))
    elif "train" in data_cfg:
        train = load_source(data_cfg["train"])
        benchmark_domains = None
    else:
        raise RecipeError("The recipe's data section needs a benchmark folder or a train source.")
    if "eval_dev" in data_cfg:
        dev = load_source(data_cfg["eval_dev"])
    if "eval_test" in data_cfg:
        test = load_source(data_cfg["eval_test"])
    if (dev is None) != (test is None):
        raise RecipeError("Give both eval_dev (threshold choice) and eval_test (reported F1), or neither.")

    model = _load_model(model_cfg, benchmark_domains)
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=train, peft_config=lora_config(recipe.get("lora"))
    )
    batch_size = int(data_cfg.get("eval_batch_size", 64))
    results: dict[str, Any] = {}
    if dev is not None:
        before = evaluate_domain_pairs(model, dev, test, batch_size=batch_size)
        results["before"] = {k: v.to_dict() for k, v in before.items()}
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if dev is not None:
        encoder = trainer.accelerator.unwrap_model(trainer.model)
        after = evaluate_domain_pairs(encoder, dev, test, batch_size=batch_size)
        results["after"] = {k: v.to_dict() for k, v in after.items()}
        name = data_cfg.get("dataset_name") or ("mrpc+stsb" if data_cfg.get("benchmark") else "domain pairs")
        for domain, figures in after.items():
            model.card_info.add_result(
                EvalEntry(
                    task_type="sentence-similarity",
                    dataset_name=f"{name} ({domain})",
                    dataset_type=f"{name}-{domain}",
                    dataset_split="test",
                    metric_type="f1",
                    metric_name="F1 at the dev-chosen cosine threshold",
                    metric_value=figures.f1,
                )
            )
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trainer.save_encoder(str(final), merge_lora=True)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


MOE_TASK = RecipeTask(
    name="moe",
    runner=run_moe_recipe,
    method=MoEMethod,
    description="mixture-of-experts sentence encoder, one expert per domain, F1 at the best threshold",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(ContrastiveConfig,),
)
