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
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the full traceback instead of one line"
    )
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


USAGE_ERROR = 2
"""Exit status of a command that cannot run as written (a wrong argument, recipe key or value)."""

RUNTIME_ERROR = 1
"""Exit status of a command that failed while running (a file that cannot be read, a failed training)."""


def _is_usage_error(err: BaseException) -> bool:
    # Recipe problems (unknown keys, wrong types, a missing recipe) are the user's to change. Matched by name:
    # importing hf_contrastive.core.recipes here would slow `--help` down.
    return any(cls.__name__ == "RecipeError" for cls in type(err).__mro__)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if not text or not isinstance(err, (ValueError, TypeError, OSError, RuntimeError)):
        text = f"{type(err).__name__}: {text}".rstrip(": ")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    An error is reported in one line (`hf-contrastive: error: ...`, what to change) with exit status 2 for a
    command that cannot run as written (an unknown argument, recipe key or value) and 1 for a failure while
    running; `--debug` prints the full traceback instead.

    Args:
        argv (`list[str]`, *optional*):
            The arguments (default: `sys.argv[1:]`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    # Verbs that take free-form overrides (train) receive the unknown arguments.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        if debug:
            raise
        status = USAGE_ERROR if _is_usage_error(err) else RUNTIME_ERROR
        print(f"{parser.prog}: error: {_one_line(err)} (run with --debug for the traceback)", file=sys.stderr)
        return status
    finally:
        _end_distributed()
    return int(result or 0)


def _end_distributed() -> None:
    """Destroy the process group a distributed run (`torchrun ... hf_contrastive train`) set up.

    Left to interpreter teardown, gloo's worker threads can abort the process (SIGABRT) after the work is done.
    """
    dist = sys.modules.get("torch.distributed")  # never imported: no process group to end
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
