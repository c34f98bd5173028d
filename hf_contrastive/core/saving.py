"""Replacing a model folder whole, and refusing to replace one that holds a different model.

A save writes into a staging sibling `.{name}.tmp-{pid}-{random}` and then swaps it in:

- where the target exists, the two folders are exchanged in one step (`renameat2(RENAME_EXCHANGE)` on
  Linux), so a reader sees either the old folder or the new one, never a mix; the old one, now under the
  staging name, is then deleted;
- where that call is unavailable (another OS, a file system without it), the old folder is renamed aside to
  `.{name}.old-{pid}-{random}`, the staged one renamed into place, and the old one deleted; a failure of the
  second rename puts the old folder back. A kill between the two renames leaves the target absent and the
  old folder aside: [`recover_folder`] (run at the start of every save) renames it back.

Whatever a kill interrupts, the target holds exactly the old model or exactly the new one, plus at most a
leftover sibling with one of those two names, which the next save into the same target deletes.

Entries that belong to the folder rather than to the model (a Trainer's `checkpoint-*`, `runs/`,
`training_args.bin`, a git clone's `.git`) are carried into the new folder as hard links (copies where the
file system has none), so they survive the swap without ever being absent from the target.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hf_contrastive.core.configuration import registered_model_types

__all__ = [
    "KEPT_ENTRIES",
    "COMMON_MODEL_FILES",
    "MODEL_ENTRIES",
    "FolderContent",
    "apply_default_permissions",
    "carry_entries",
    "check_replaceable",
    "describe_folder",
    "new_staging_folder",
    "process_umask",
    "recover_folder",
    "swap_in",
]

# Top-level entries that belong to the folder, not to the model saved in it: kept by every save.
KEPT_ENTRIES: tuple[str, ...] = (
    "checkpoint-*",
    "runs",
    "training_args.bin",
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "*_results.json",
    ".git",
    ".gitattributes",
    ".cache",
)

# The files every model save writes (transformers, PEFT, tokenizers, processors), shared with the Hub upload
# filter (`core.hub.push.MODEL_FILE_PATTERNS`) so the two lists cannot drift apart.
COMMON_MODEL_FILES: tuple[str, ...] = (
    "README.md",
    "config.json",
    "generation_config.json",
    "pytorch_model*.bin",
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "feature_extractor_config.json",
)

# Top-level entries a model save writes (transformers, PEFT, tokenizers, processors, sentence-transformers):
# replacing the folder may delete these without asking when it holds the same model.
MODEL_ENTRIES: tuple[str, ...] = (
    *COMMON_MODEL_FILES,
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "additional_chat_templates",
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "[0-9]_*",
)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_EXCHANGE_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}
_CARD_LIBRARY = re.compile(r"^library_name:\s*['\"]?hf-contrastive['\"]?\s*$", re.M)


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def _old_prefix(target: Path) -> str:
    return f".{target.name}.old-"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# -- permissions ---------------------------------------------------------------------------------


def process_umask() -> int:
    """The process umask (read from `/proc` where possible, so that no other thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_permissions(folder: Path) -> None:
    """Give `folder` and everything in it at least the permissions a plain `mkdir` / `open` would give.

    `tempfile.mkdtemp` creates `0o700` folders (and `mkstemp` `0o600` files); a saved model is meant to be
    read like any other file, so the bits the umask allows (`0o755` / `0o644` under umask `022`) are added.

    Args:
        folder (`Path`): the staged folder.
    """
    mask = process_umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    for path in (folder, *folder.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777
        wanted = mode | (dir_mode if path.is_dir() else file_mode)
        if wanted != mode:
            os.chmod(path, wanted)


# -- staging, swapping, recovering ----------------------------------------------------------------


def new_staging_folder(target: Path) -> Path:
    """An empty sibling `.{name}.tmp-{pid}-{random}` of `target` with the umask's permissions."""
    folder = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(target)}{os.getpid()}-", dir=target.parent))
    apply_default_permissions(folder)
    return folder


def _owner_alive(path: Path, prefix: str) -> bool:
    # Leftovers carry the pid of the process that made them: those of a live process (a concurrent save) are
    # not touched.
    pid_text = path.name[len(prefix) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def recover_folder(target: str | os.PathLike) -> None:
    """Undo what a killed save left next to `target`.

    When `target` is absent and an old folder was renamed aside (a kill between the two renames of the
    fallback swap), it is renamed back. Leftover staging and aside folders of processes that are no longer
    running are deleted.

    Args:
        target (`str | os.PathLike`): the model folder.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    tmp_prefix, old_prefix = _tmp_prefix(target), _old_prefix(target)
    leftovers = [
        (p, prefix)
        for p in parent.iterdir()
        for prefix in (tmp_prefix, old_prefix)
        if p.name.startswith(prefix) and not _owner_alive(p, prefix)
    ]
    aside = sorted(
        (p for p, prefix in leftovers if prefix == old_prefix), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if aside and not os.path.lexists(target):
        os.rename(aside[0], target)
    for path, _ in leftovers:
        if not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Exchange two paths atomically; `False` where the system cannot (then nothing was changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(err, f"Could not exchange {a} and {b}: {os.strerror(err)}")


def swap_in(staged: Path, target: Path) -> None:
    """Replace the existing folder `target` by the complete folder `staged`, then delete the old one.

    A reader of `target` sees the old folder or the new one, never a mix; on failure `target` is the old
    folder, intact.

    Args:
        staged (`Path`): the complete new folder (a sibling of `target`).
        target (`Path`): the existing folder.
    """
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now the old folder
        return
    aside = target.parent / f"{_old_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def carry_entries(source: Path, staged: Path, keep: Iterable[str] = KEPT_ENTRIES) -> list[str]:
    """Link the entries of `source` that match `keep` into `staged` (unless the save wrote the same name).

    Files become hard links (copies where the file system has none), so nothing is moved: until the swap the
    old folder still holds them, after it the new one does.

    Args:
        source (`Path`): the folder being replaced.
        staged (`Path`): the new folder.
        keep (`Iterable[str]`, *optional*, defaults to `KEPT_ENTRIES`): glob patterns of top-level names.

    Returns:
        `list[str]`: the names carried.
    """
    keep = tuple(keep)
    carried = []
    for entry in sorted(source.iterdir()):
        if not _matches(entry.name, keep) or os.path.lexists(staged / entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staged / entry.name, symlinks=True, copy_function=_link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), staged / entry.name)
        else:
            _link_or_copy(os.fspath(entry), os.fspath(staged / entry.name))
        carried.append(entry.name)
    return carried


# -- what a folder holds ---------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class FolderContent:
    """What a model folder holds, as far as deciding whether a save may replace it.

    Args:
        formats (`tuple[str, ...]`): the formats the folder's files claim: `"sentence-transformers"`
            (`modules.json`), `"peft-adapter"` (`adapter_config.json`), `"transformers"` (`config.json`).
        model_type (`str`, *optional*): `model_type` of `config.json`.
        architectures (`tuple[str, ...]`): `architectures` of `config.json`.
        sub_models (`tuple[tuple[str, str], ...]`): `(key, model_type)` of the nested configs (a head's backbone).
        adapter (`tuple[str, str]`, *optional*): `(peft_type, base model)` of `adapter_config.json`.
        ours (`bool`): written by hf-contrastive (its card says so, or `model_type` is one of its heads).
    """

    formats: tuple[str, ...] = ()
    model_type: str | None = None
    architectures: tuple[str, ...] = ()
    sub_models: tuple[tuple[str, str], ...] = ()
    adapter: tuple[str, str] | None = None
    ours: bool = False

    def same_model(self, other: FolderContent) -> bool:
        """Whether `other` is the same kind of model (format, type, architecture, backbone, adapter)."""
        return (
            self.formats == other.formats
            and self.model_type == other.model_type
            and self.architectures == other.architectures
            and self.sub_models == other.sub_models
            and self.adapter == other.adapter
        )

    def describe(self) -> str:
        """A short phrase for error messages: `"a transformers model (model_type 'llama', LlamaForCausalLM)"`."""
        if not self.formats:
            return "no model (no config.json, adapter_config.json or modules.json)"
        parts = []
        if "sentence-transformers" in self.formats:
            parts.append("a sentence-transformers model (modules.json)")
        if "peft-adapter" in self.formats and self.adapter is not None:
            parts.append(f"a PEFT {self.adapter[0]} adapter of {self.adapter[1]!r}")
        if "transformers" in self.formats:
            what = f"model_type {self.model_type!r}"
            if self.architectures:
                what += f", {', '.join(self.architectures)}"
            if self.sub_models:
                what += ", " + ", ".join(f"{key} {value!r}" for key, value in self.sub_models)
            owner = "an hf-contrastive" if self.ours else "a transformers"
            parts.append(f"{owner} model ({what})")
        text = " and ".join(parts)
        return f"two formats at once: {text}" if len(parts) > 1 else text


def describe_folder(folder: str | os.PathLike) -> FolderContent:
    """Read what `folder` holds from its `config.json`, `adapter_config.json`, `modules.json` and card.

    Args:
        folder (`str | os.PathLike`): a model folder.

    Returns:
        [`FolderContent`]
    """
    folder = Path(folder)
    formats = []
    if (folder / "modules.json").is_file():
        formats.append("sentence-transformers")
    adapter = None
    if (folder / "adapter_config.json").is_file():
        formats.append("peft-adapter")
        cfg = _read_json(folder / "adapter_config.json")
        adapter = (str(cfg.get("peft_type")), str(cfg.get("base_model_name_or_path")))
    model_type, architectures, sub_models = None, (), ()
    if (folder / "config.json").is_file():
        formats.append("transformers")
        cfg = _read_json(folder / "config.json")
        model_type = cfg.get("model_type")
        architectures = tuple(cfg.get("architectures") or ())
        sub_models = tuple(
            sorted(
                (key, str(value["model_type"]))
                for key, value in cfg.items()
                if isinstance(value, dict) and "model_type" in value
            )
        )
    card = folder / "README.md"
    ours = model_type in registered_model_types()
    if not ours and card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            ours = bool(_CARD_LIBRARY.search(text.split("---", 2)[1] if text.count("---") >= 2 else ""))
    return FolderContent(
        formats=tuple(formats),
        model_type=model_type,
        architectures=architectures,
        sub_models=sub_models,
        adapter=adapter,
        ours=ours,
    )


def check_replaceable(target: Path, staged: Path, keep: Iterable[str] = KEPT_ENTRIES) -> None:
    """Raise unless replacing `target` by `staged` only replaces an earlier save of the same model.

    Allowed: an empty folder, a folder holding only entries that are kept (`keep`), or an earlier
    hf-contrastive save of the same kind of model (same format, `model_type`, architecture, backbone,
    adapter) whose only entries the new save lacks are model files ([`MODEL_ENTRIES`]). Refused: a
    sentence-transformers or plain transformers folder, another model, a folder claiming two formats, and
    any other file or folder that the save would delete.

    Args:
        target (`Path`): the existing folder.
        staged (`Path`): the complete new folder.
        keep (`Iterable[str]`, *optional*, defaults to `KEPT_ENTRIES`): glob patterns of names the save keeps.

    Raises:
        `ValueError`: naming what the folder holds and what the save would delete.
    """
    keep = tuple(keep)
    entries = sorted(p.name for p in target.iterdir() if not _matches(p.name, keep))
    if not entries:
        return
    old, new = describe_folder(target), describe_folder(staged)
    written = set(os.listdir(staged))
    deleted = [name for name in entries if name not in written]
    foreign = [name for name in deleted if not _matches(name, MODEL_ENTRIES)]
    problems = []
    if not (old.ours and old.same_model(new)):
        problems.append(f"it holds {old.describe()}, and this save writes {new.describe()}")
    if foreign:
        problems.append(f"these entries are not files of a saved model and would be deleted: {foreign}")
    if problems:
        raise ValueError(
            f"Refusing to save into {target}: {'; '.join(problems)}. A save replaces the folder whole (old "
            f"files would be deleted: {deleted or 'none'}). Pass overwrite=True to replace it anyway (entries "
            f"matching {list(keep)} are kept), or save into another folder."
        )
