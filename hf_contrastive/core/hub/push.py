"""Pushing saved models (weights, config, tokenizer, rendered card) to the Hub in one commit.

Only a model's own files are uploaded by default (see [`MODEL_FILE_PATTERNS`]): a Trainer output folder
also holds `training_args.bin`, `trainer_state.json`, logs and `checkpoint-*` folders, which stay
local unless asked for with `extra_files=` (or a full `allow_patterns=` list).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from hf_contrastive._version import __version__
from hf_contrastive.core.saving import COMMON_MODEL_FILES

# What makes a model folder loadable: weights, configs, tokenizer / processor files, adapters, the card.
# A pattern without "/" matches files at the top of the folder only; one with "/" matches the whole
# relative path (PEFT writes adapters other than "default" into a subfolder named after them).
MODEL_FILE_PATTERNS: tuple[str, ...] = (
    *COMMON_MODEL_FILES,
    "model*.safetensors",
    "model*.safetensors.index.json",
    "pytorch_model*.bin.index.json",
    "*/adapter_config.json",
    "*/adapter_model.safetensors",
    "*/adapter_model.bin",
)

_HUB_KWARGS = ("commit_message", "commit_description", "private", "token", "create_pr", "revision")


def _api() -> HfApi:
    return HfApi(library_name="hf-contrastive", library_version=__version__)


def _matches(rel: Path, pattern: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatchcase(rel.as_posix(), pattern)
    return len(rel.parts) == 1 and fnmatch.fnmatchcase(rel.name, pattern)


def folder_operations(
    folder: str | os.PathLike,
    *,
    allow_patterns: Sequence[str] | None = None,
    extra_files: Sequence[str] | None = None,
) -> list[CommitOperationAdd]:
    """One add-operation per model file of `folder`.

    Args:
        folder (`str | os.PathLike`): the saved model folder.
        allow_patterns (`Sequence[str] | None`, *optional*): the patterns a file must match to be uploaded (`fnmatch`; a pattern without `/`
            matches top-level files only). Defaults to [`MODEL_FILE_PATTERNS`].
        extra_files (`Sequence[str] | None`, *optional*): further files to upload, as paths (or patterns) relative to `folder`, e.g.
            `["training_args.bin", "logs/*.json"]`. Each must match at least one file.

    Hidden files and `checkpoint-*` folders are never uploaded, whatever the patterns say.
    """

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"Expected a saved model folder, got {os.fspath(folder)!r} (not a folder).")
    patterns = tuple(MODEL_FILE_PATTERNS if allow_patterns is None else allow_patterns)
    extras = [Path(e).as_posix() for e in (extra_files or ())]
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0].startswith("checkpoint-"):
            continue
        files.append(rel)
    matched_extra = {e: [rel for rel in files if fnmatch.fnmatchcase(rel.as_posix(), e)] for e in extras}
    missing = [e for e, hits in matched_extra.items() if not hits]
    if missing:
        raise ValueError(
            f"extra_files {missing} match no file of {os.fspath(folder)!r} "
            "(give paths relative to that folder; hidden files and checkpoint-* folders are never uploaded)."
        )
    chosen = {rel for hits in matched_extra.values() for rel in hits}
    chosen.update(rel for rel in files if any(_matches(rel, p) for p in patterns))
    return [
        CommitOperationAdd(path_in_repo=rel.as_posix(), path_or_fileobj=str(root / rel))
        for rel in sorted(chosen, key=lambda r: r.as_posix())
    ]


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    allow_patterns: Sequence[str] | None = None,
    extra_files: Sequence[str] | None = None,
) -> Any:
    """Create `repo_id` if needed and upload the model files of `folder` in a single commit.

    Only the files matching [`MODEL_FILE_PATTERNS`] go up (weights, config, tokenizer / processor files,
    generation config, adapter files, `README.md`); `extra_files` (paths relative to `folder`) adds
    others and `allow_patterns` replaces the default list. See [`folder_operations`].
    """

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}.")
    operations = folder_operations(folder, allow_patterns=allow_patterns, extra_files=extra_files)
    if not operations:
        raise ValueError(f"Nothing to upload: {folder} has no model files.")
    api = _api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message or "Upload model with hf-contrastive",
        commit_description=commit_description,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


def copy_extra_files(
    extra_files: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | None, folder: Path
) -> list[str]:
    """Copy local files into a folder about to be pushed; return their paths relative to it.

    A sequence uploads each file under its own name; a mapping `{path_in_repo: local path}` chooses
    the name. A missing file raises `FileNotFoundError`.
    """

    if not extra_files:
        return []
    if isinstance(extra_files, (str, os.PathLike)):
        raise TypeError(
            "extra_files must be a list of paths or a {path_in_repo: local path} mapping, not one path."
        )
    pairs = (
        [(str(k), Path(v)) for k, v in extra_files.items()]
        if isinstance(extra_files, Mapping)
        else [(Path(f).name, Path(f)) for f in extra_files]
    )
    names = []
    for name, source in pairs:
        if not source.is_file():
            raise FileNotFoundError(f"extra file {os.fspath(source)!r} does not exist.")
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        names.append(Path(name).as_posix())
    return names


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    extra_files: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | None = None,
    **save_kwargs: Any,
) -> Any:
    """Save a head (with its card, naming `repo_id`) to a temporary folder and upload it in one commit.

    `model.save_pretrained(folder, repo_id=..., ...)` must write the card (heads using
    [`~hf_contrastive.core.hub.mixin.HubMixin`] do). `extra_files` are local files uploaded next to
    the model (see [`copy_extra_files`]).
    """

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.save_pretrained(folder, repo_id=repo_id, max_shard_size=max_shard_size, **save_kwargs)
        names = copy_extra_files(extra_files, folder)
        return push_folder_to_hub(
            folder,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            extra_files=names,
        )


__all__ = [
    "MODEL_FILE_PATTERNS",
    "copy_extra_files",
    "folder_operations",
    "push_folder_to_hub",
    "push_to_hub",
]
