"""`hf-contrastive` command line: `train | eval | generate | card`.

Each verb lives next to the code it drives, in a module exposing `register(subparsers)`; the
module keeps heavy imports inside its handler so `hf-contrastive --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hf_contrastive._version import __version__

# Optional verbs are skipped when their module is absent.
_VERB_MODULES = (
    "hf_contrastive.quickstart",
    "hf_contrastive.recipes.cli",
    "hf_contrastive.embeddings.cli",
    "hf_contrastive.generation.cli",
    "hf_contrastive.embeddings.card_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-contrastive",
        description="Contrastive learning for the Hugging Face stack: train, evaluate, decode, write model cards.",
    )
    parser.add_argument("--version", action="version", version=f"hf-contrastive {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Verbs that take free-form overrides (train) receive the unknown arguments.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
