"""``hf-contrastive card``: (re)write a saved model's card, optionally push the folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hf_contrastive.modeling import SentenceEncoder

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
        model.save_pretrained(args.folder)
        print(f"Wrote {args.folder}/README.md")
    return 0
