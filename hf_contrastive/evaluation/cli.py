"""``hf-contrastive eval``: STS evaluation of a sentence encoder from the command line."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="Evaluate a sentence encoder on STS Benchmark (Spearman/Pearson of cosine and others).",
        description="Evaluate a sentence encoder (our folder, a sentence-transformers folder, a SimCSE "
        "checkpoint or a plain backbone with --pooling) on STS Benchmark.",
    )
    p.add_argument("model", help="model folder or Hub id")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--data-dir", default=None, help="benchmark data root (default: $HF_CONTRASTIVE_DATA)")
    p.add_argument(
        "--pooling", default=None, help="pooling for a plain backbone (e.g. mean, cls, last_token)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--similarities",
        default="cosine,dot,euclidean,manhattan",
        help="comma-separated similarity functions",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hf_contrastive.evaluation.sts import evaluate_sts, load_sts_benchmark
    from hf_contrastive.modeling import SentenceEncoder

    kwargs = {"pooling": args.pooling} if args.pooling else {}
    model = SentenceEncoder.from_pretrained(args.model, **kwargs)
    rows = load_sts_benchmark(args.split, args.data_dir)
    sims = tuple(s.strip() for s in args.similarities.split(",") if s.strip())
    res = evaluate_sts(model, rows, batch_size=args.batch_size, similarities=sims)
    if args.json:
        print(json.dumps({"model": args.model, "split": args.split, **res}, indent=2))
    else:
        print(f"STS Benchmark {args.split} ({len(rows)} pairs), {args.model}")
        for sim in sims:
            print(f"  {sim:<10} spearman {res[f'spearman_{sim}']:.4f}  pearson {res[f'pearson_{sim}']:.4f}")
    return 0
