"""Pushing saved models (weights, config, tokenizer, rendered card) to the Hub in one commit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from hf_contrastive._version import __version__


def _api() -> HfApi:
    return HfApi(library_name="hf-contrastive", library_version=__version__)


def folder_operations(folder: str | os.PathLike) -> list[CommitOperationAdd]:
    """One add-operation per file under ``folder`` (hidden files and ``checkpoint-*`` folders skipped)."""
    root = Path(folder)
    ops = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0].startswith("checkpoint-"):
            continue
        ops.append(CommitOperationAdd(path_in_repo=rel.as_posix(), path_or_fileobj=str(path)))
    return ops


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
) -> Any:
    """Create ``repo_id`` if needed and upload every file of ``folder`` in a single commit."""
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}.")
    api = _api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id=repo_id, branch=revision, token=token, exist_ok=True)
    operations = folder_operations(folder)
    if not operations:
        raise ValueError(f"Nothing to upload: {folder} has no files.")
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message or "Upload model with hf-contrastive",
        commit_description=commit_description,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


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
    **save_kwargs: Any,
) -> Any:
    """Save ``model`` (with its card, naming ``repo_id``) to a temporary folder and upload it."""
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model.save_pretrained(folder, repo_id=repo_id, max_shard_size=max_shard_size, **save_kwargs)
        return push_folder_to_hub(
            folder,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


__all__ = ["push_to_hub", "push_folder_to_hub", "folder_operations"]


_HUB_KWARGS = ("commit_message", "commit_description", "private", "token", "create_pr", "revision")


def save_folder_with_card(
    model: Any,
    save_directory: str | os.PathLike,
    save_weights,
    render_card=None,
    *,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    **kwargs: Any,
) -> None:
    """Write a head's folder atomically: weights/config (``save_weights(tmp, **kwargs)``), its tokenizer,
    and the card from ``render_card(model, repo_id=..., load_path=...)``; then push it if asked.

    Shared by the heads' ``save_pretrained``. Everything goes to a temporary folder next to
    ``save_directory`` and is moved into place only once complete; Hub arguments (``commit_message``,
    ``private``, ``token``, ...) are taken out of ``kwargs`` for the push.
    """
    from hf_contrastive.core.utils import atomic_save

    if os.path.isfile(save_directory):
        raise ValueError(f"save_directory should be a folder, got an existing file: {save_directory}")
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    with atomic_save(save_directory) as tmp:
        save_weights(tmp, **kwargs)
        if getattr(model, "tokenizer", None) is not None:
            model.tokenizer.save_pretrained(tmp)
        if render_card is not None:
            card = render_card(model, repo_id=repo_id, load_path=os.fspath(Path(save_directory).resolve()))
            card.save(Path(tmp) / "README.md")
    if push_to_hub:
        push_folder_to_hub(save_directory, repo_id or Path(save_directory).name, **hub_kwargs)
