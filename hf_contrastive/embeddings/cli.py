"""`hf-contrastive eval` (STS evaluation of a sentence encoder) and `hf-contrastive card` (write or push
a saved encoder's model card). Heavy imports stay inside the handlers so `--help` is fast."""

from __future__ import annotations

import argparse
import json

from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.sts import evaluate_sts, load_sts_benchmark


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
    _register_card(sub)


def _run(args: argparse.Namespace) -> int:

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


def _register_card(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        help="Write the model card (README.md) of a saved sentence encoder; optionally push it.",
        description="Render the model card of a saved model folder from its config and metadata, "
        "and optionally upload the folder to the Hub.",
    )
    p.add_argument("folder", help="folder written by save_pretrained")
    p.add_argument("--base-model", default=None, help="Hub id of the model it was fine-tuned from")
    p.add_argument(
        "--dataset", action="append", default=None, help="Hub id of a training dataset (repeatable)"
    )
    p.add_argument("--license", default=None)
    p.add_argument("--push", metavar="REPO_ID", default=None, help="upload the folder to this Hub repository")
    p.add_argument("--private", action="store_true")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite a folder in another format (e.g. a sentence-transformers folder) as an hf-contrastive one",
    )
    p.set_defaults(func=_run_card)


def _run_card(args: argparse.Namespace) -> int:

    model = SentenceEncoder.from_pretrained(args.folder)
    if args.base_model:
        model.card_info.base_model = args.base_model
    if args.dataset:
        model.card_info.datasets = list(args.dataset)
    if args.license:
        model.card_info.license = args.license
    if args.push:
        model.push_to_hub(args.push, private=args.private or None)
        print(f"Pushed {args.folder} to https://huggingface.co/{args.push}")
    else:
        model.save_pretrained(args.folder, overwrite=args.overwrite)
        print(f"Wrote {args.folder}/README.md")
    return 0
