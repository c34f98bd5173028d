"""One STS-B table for the sentence-embedding methods, all trained from the same start on the same data.

Every method starts from the same checkpoint (the packaged all-MiniLM-L6-v2, and for the unsupervised
methods also SmolLM2-135M-Instruct with LoRA, a causal LM never trained for embeddings) and trains on the
same data: the first `--n-unsup` wiki1m sentences for the unsupervised methods, the first `--n-sup`
SNLI triples (or their premises, for the methods that make their own pairs) for the supervised ones. The
learning rate of each method is chosen on STS-B dev (seed 0, from `--lr-grid`); STS-B test is computed
once per run with the chosen setting and reported as mean and spread over the seeds. Each row also has
alignment and uniformity on STS-B test (Wang & Isola 2020, as in the SimCSE paper's analysis), and the
script draws the alignment-uniformity plot (one point per method, lower-left is better).

    python examples/sts_methods.py                                    # all methods, MiniLM + SmolLM2
    python examples/sts_methods.py --methods simcse,whitenedcse --backbones minilm --seeds 0

Results go to `--output-dir` (`results.json`, `table.md`, `alignment_uniformity.png`); a rerun skips the
runs already in `results.json` (delete it to start again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig
from scipy.stats import spearmanr

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder
from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.data.loaders import snli_triples, text_lines
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.core.utils import data_dir, packaged_minilm_path
from hf_contrastive.embeddings.debcse import DebiasedPairSampler
from hf_contrastive.embeddings.geometry import alignment, uniformity
from hf_contrastive.embeddings.synthesis import MultiCSRData
from hf_contrastive.embeddings.synthesis.recipes import default_multicsr_dir
from hf_contrastive.embeddings.text2token import (
    Text2TokenConfig,
    Text2TokenTrainer,
    VocabularyProjection,
    model_derived_targets,
    tfidf_targets,
    token_target_dataset,
)

WIKI = "corpus/wiki1m_first11914.txt"


@dataclass
class Context:
    """What every method's training function receives."""

    backbone: str
    model_path: str
    unsup: Dataset
    sup: Dataset
    output_dir: Path
    lora: bool
    max_seq_length: int
    batch_size: int


def _encoder(ctx: Context, **overrides: Any) -> SentenceEncoder:
    pooling = "mean" if ctx.backbone == "minilm" else "last_token"
    kwargs: dict[str, Any] = {"pooling": pooling, "normalize": False}
    kwargs.update(overrides)
    model = SentenceEncoder.from_pretrained(ctx.model_path, **kwargs)
    if ctx.backbone == "smollm2" and model.tokenizer.pad_token is None:
        model.tokenizer.pad_token = model.tokenizer.eos_token
    return model


def _args(ctx: Context, seed: int, lr: float, **fields: Any) -> ContrastiveConfig:
    return ContrastiveConfig(
        output_dir=str(ctx.output_dir / "runs" / "tmp"),
        learning_rate=lr,
        per_device_train_batch_size=ctx.batch_size,
        max_seq_length=ctx.max_seq_length,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        logging_steps=50,
        disable_tqdm=True,
        **fields,
    )


def _lora(ctx: Context) -> LoraConfig | None:
    """LoRA on the attention projections of the causal LM (r 8); MiniLM is trained in full."""
    if not ctx.lora:
        return None
    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )


def _train(ctx: Context, model: SentenceEncoder, data: Dataset, args: ContrastiveConfig, **kw: Any) -> Any:
    peft = _lora(ctx)
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=data, peft_config=peft, **kw)
    trainer.train()
    return _merged(trainer.accelerator.unwrap_model(trainer.model))


def _merged(model: Any) -> Any:
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# -- the methods ------------------------------------------------------------------------------------------
def train_simcse(ctx: Context, seed: int, lr: float) -> Any:
    """Unsupervised SimCSE (the baseline row): two dropout views, in-batch negatives."""
    return _train(ctx, _encoder(ctx), ctx.unsup, _args(ctx, seed, lr, loss="simcse_unsup"))


def train_whitenedcse(ctx: Context, seed: int, lr: float) -> Any:
    """WhitenedCSE: three dropout views, shuffled group whitening (groups of 32 channels) in the loss."""
    model = _encoder(ctx, whitening_group_size=32)
    return _train(ctx, model, ctx.unsup, _args(ctx, seed, lr, loss="whitenedcse", num_views=3))


def train_debcse(ctx: Context, seed: int, lr: float) -> Any:
    """DebCSE: positives and hard negatives drawn with inverse-propensity weights among the neighbours of a
    frozen reference encoder (the zero-shot MiniLM), then InfoNCE with the hard negatives."""
    triples = _debcse_triples(ctx, seed)
    return _train(ctx, _encoder(ctx), triples, _args(ctx, seed, lr, loss="infonce"))


_DEBCSE_CACHE: dict[int, Dataset] = {}


def _debcse_triples(ctx: Context, seed: int) -> Dataset:
    if seed not in _DEBCSE_CACHE:
        reference = SentenceEncoder.from_pretrained(str(packaged_minilm_path()))
        reference.config.max_seq_length = ctx.max_seq_length
        sampler = DebiasedPairSampler(ctx.unsup, reference)
        _DEBCSE_CACHE[seed] = sampler.sample(seed)
    return _DEBCSE_CACHE[seed]


def train_multicsr(ctx: Context, seed: int, lr: float) -> Any:
    """MultiCSR on the triplets SmolLM2-135M-Instruct wrote (examples/multicsr_data.py), with in-batch
    false-negative masking by a frozen copy of the start model (phi 0.95)."""
    folder = default_multicsr_dir() / "triplets"
    if not folder.is_dir():
        raise SystemExit(f"No MultiCSR triplets at {folder}: run examples/multicsr_data.py first.")
    data = MultiCSRData.load_from_disk(folder).dataset
    reference = _encoder(ctx)
    args = _args(ctx, seed, lr, loss="multicsr", false_negative_threshold=0.95)
    return _train(ctx, _encoder(ctx), data, args, reference_model=reference)


def train_text2token(ctx: Context, seed: int, lr: float) -> Any:
    """Text2Token: stage 1 on tf-idf token targets, stage 2 on the stage-1 model's own top-20 tokens; the
    vocabulary projection is the tied input embedding matrix (MiniLM) or the tied LM head (SmolLM2)."""
    texts = list(ctx.unsup["text"])
    model = _encoder(ctx)
    projection = VocabularyProjection()
    vocab = projection.weights_for(model)[0].shape[0]
    targets = tfidf_targets(texts, model.tokenizer, max_length=ctx.max_seq_length, allow_empty=True)
    for stage in ("data_driven", "model_derived"):
        if stage == "model_derived":
            targets = model_derived_targets(
                model, texts, projection=projection, top_k=20, temperature=0.2, max_length=ctx.max_seq_length
            )
        data = token_target_dataset(texts, targets, vocab_size=vocab)
        fields = {k: v for k, v in vars(_args(ctx, seed, lr)).items() if k in _T2T_FIELDS}
        args = Text2TokenConfig(**{**fields, "loss": "text2token", "temperature": 0.2})
        trainer = Text2TokenTrainer(
            model=model, args=args, train_dataset=data, projection=projection, peft_config=_lora(ctx)
        )
        trainer.train()
        model = _merged(trainer.accelerator.unwrap_model(trainer.model))
    return model


_T2T_FIELDS = (
    "output_dir learning_rate per_device_train_batch_size max_seq_length num_train_epochs save_strategy "
    "report_to seed data_seed logging_steps disable_tqdm"
).split()


METHODS: dict[str, dict[str, Any]] = {
    "simcse": {"fn": train_simcse, "unsupervised": True, "label": "SimCSE (unsup, baseline)"},
    "whitenedcse": {"fn": train_whitenedcse, "unsupervised": True, "label": "WhitenedCSE"},
    "debcse": {"fn": train_debcse, "unsupervised": True, "label": "DebCSE (IPW-sampled triples)"},
    "text2token": {"fn": train_text2token, "unsupervised": True, "label": "Text2Token (stage 1 + 2)"},
    "multicsr": {"fn": train_multicsr, "unsupervised": False, "label": "MultiCSR (SmolLM2-written triplets)"},
}


# -- evaluation -------------------------------------------------------------------------------------------
def evaluate(model: Any, split: str) -> dict[str, float]:
    """STS-B Spearman (x100) of the model's pair scores; alignment and uniformity of its embeddings."""
    examples = load_sts_benchmark(split=split)
    s1 = [e.sentence1 for e in examples]
    s2 = [e.sentence2 for e in examples]
    gold = [e.score for e in examples]
    if hasattr(model, "score_pairs") and not isinstance(model, SentenceEncoder):
        scores = model.score_pairs(s1, s2)
        e1, e2 = model.encode(s1), model.encode(s2)
    else:
        e1 = model.encode(s1, batch_size=64, show_progress_bar=False)
        e2 = model.encode(s2, batch_size=64, show_progress_bar=False)
        scores = torch.nn.functional.cosine_similarity(e1, e2)
    out = {"spearman": 100.0 * float(spearmanr(torch.as_tensor(scores).float().cpu().numpy(), gold)[0])}
    positive = torch.tensor([g > 4.0 for g in gold])
    out["alignment"] = float(alignment(e1[positive], e2[positive]))
    out["uniformity"] = float(uniformity(torch.cat([e1, e2])))
    return out


# -- driver -----------------------------------------------------------------------------------------------
def _load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _run(
    results: dict[str, Any],
    key: str,
    path: Path,
    splits: tuple[str, ...],
    fn: Callable[..., Any],
    *fn_args: Any,
    model: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Train with `fn(*fn_args)` (unless a trained `model` is given) and evaluate on the `splits` that
    `results[key]` lacks; return the record and the model (None when nothing had to be trained)."""
    record = results.setdefault(key, {})
    missing = [split for split in splits if split not in record]
    if not missing:
        return record, model
    if model is None:
        start = time.time()
        model = fn(*fn_args)
        record["seconds_train"] = round(time.time() - start, 1)
    for split in missing:
        record[split] = evaluate(model, split)
    _save_results(path, results)
    print(key, json.dumps(record), flush=True)
    return record, model


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--backbones", default="minilm,smollm2")
    p.add_argument("--seeds", default="0,1,2", help="MiniLM seeds (SmolLM2 runs seed 0 only)")
    p.add_argument("--lr-grid", default="1e-5,3e-5", help="MiniLM learning rates tried on STS-B dev")
    p.add_argument("--smollm2-lr", type=float, default=1e-4, help="LoRA learning rate for SmolLM2")
    p.add_argument("--n-unsup", type=int, default=1024)
    p.add_argument("--n-sup", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output-dir", default="hf-contrastive-output/sts-methods")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = _load_results(path)
    unsup = text_lines(data_dir() / WIKI, max_rows=a.n_unsup)
    sup = snli_triples(split="dev", max_rows=a.n_sup)
    seeds = [int(s) for s in a.seeds.split(",")]
    grid = [float(x) for x in a.lr_grid.split(",")]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {sorted(METHODS)}")

    backbones = {}
    if "minilm" in a.backbones:
        backbones["minilm"] = (str(packaged_minilm_path()), False, 32)
    if "smollm2" in a.backbones:
        backbones["smollm2"] = (str(smollm2_folder()), True, 32)
    for name, (model_path, lora, max_len) in backbones.items():
        ctx = Context(name, model_path, unsup, sup, out, lora, max_len, a.batch_size)
        _run(results, f"{name}/zero-shot", path, ("dev", "test"), _encoder, ctx)
        for method in methods:
            spec = METHODS[method]
            if name == "smollm2" and not spec["unsupervised"]:
                continue
            run_seeds = seeds if name == "minilm" else seeds[:1]
            lrs = grid if name == "minilm" else [a.smollm2_lr]
            # Learning rate chosen on STS-B dev with the first seed; test is read only for the chosen one.
            dev, trained = {}, {}
            for lr in lrs:
                key = f"{name}/{method}/lr={lr:g}/seed={run_seeds[0]}"
                rec, trained[lr] = _run(results, key, path, ("dev",), spec["fn"], ctx, run_seeds[0], lr)
                dev[lr] = rec["dev"]["spearman"]
            best = max(dev, key=dev.get)
            results.setdefault("chosen_lr", {})[f"{name}/{method}"] = best
            for seed in run_seeds:
                key = f"{name}/{method}/lr={best:g}/seed={seed}"
                kept = trained.get(best) if seed == run_seeds[0] else None
                _run(results, key, path, ("dev", "test"), spec["fn"], ctx, seed, best, model=kept)
            trained.clear()
            _save_results(path, results)
    write_report(results, out, methods, seeds)


def write_report(results: dict[str, Any], out: Path, methods: list[str], seeds: list[int]) -> None:
    """Markdown table (mean ± sd over seeds) and the alignment-uniformity plot."""
    lines = [
        "| backbone | method | lr (chosen on dev) | seeds | STS-B dev | STS-B test | alignment | uniformity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for backbone in ("minilm", "smollm2"):
        zero = results.get(f"{backbone}/zero-shot")
        if zero:
            t = zero["test"]
            lines.append(
                f"| {backbone} | zero-shot (no training) | - | - | {zero['dev']['spearman']:.2f} | "
                f"{t['spearman']:.2f} | {t['alignment']:.3f} | {t['uniformity']:.3f} |"
            )
            points.append((f"{backbone} zero-shot", t["alignment"], t["uniformity"]))
        for method in methods:
            lr = results.get("chosen_lr", {}).get(f"{backbone}/{method}")
            if lr is None:
                continue
            recs = [results[k] for s in seeds if (k := f"{backbone}/{method}/lr={lr:g}/seed={s}") in results]
            dev_m, dev_s = _mean_sd([r["dev"]["spearman"] for r in recs])
            test_m, test_s = _mean_sd([r["test"]["spearman"] for r in recs])
            al_m, _ = _mean_sd([r["test"]["alignment"] for r in recs])
            un_m, _ = _mean_sd([r["test"]["uniformity"] for r in recs])
            label = METHODS[method]["label"]
            lines.append(
                f"| {backbone} | {label} | {lr:g} | {len(recs)} | {dev_m:.2f} ± {dev_s:.2f} | "
                f"{test_m:.2f} ± {test_s:.2f} | {al_m:.3f} | {un_m:.3f} |"
            )
            points.append((f"{backbone} {method}", al_m, un_m))
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, al, un in points:
        if math.isfinite(al) and math.isfinite(un):
            ax.scatter(un, al)
            ax.annotate(label, (un, al), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("uniformity (lower is better)")
    ax.set_ylabel("alignment (lower is better)")
    ax.set_title("STS-B test: alignment vs uniformity")
    fig.tight_layout()
    fig.savefig(out / "alignment_uniformity.png", dpi=130)
    print(f"plot: {out / 'alignment_uniformity.png'}")


if __name__ == "__main__":
    main()
