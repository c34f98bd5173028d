"""Whole-or-nothing Trainer checkpoints, and a resume that never picks a partial one.

`transformers.Trainer` writes a checkpoint file by file into `checkpoint-N/` (weights, optimizer, scheduler,
RNG, `trainer_state.json`), and a subclass adds its own files afterwards. A process killed in between leaves
a folder that looks like a checkpoint but is not one: resuming from it fails, or worse, succeeds with part
of the state at its defaults. [`AtomicCheckpointMixin`] makes every checkpoint of a Trainer subclass
atomic:

1. every file of the checkpoint (those of `Trainer._save_checkpoint` and the trainer's own state, see
   `_library_state`) is written into `.checkpoint-N.tmp-staging/checkpoint-N` next to the final folder;
2. the files are flushed to disk and a manifest (`checkpoint_manifest.json`: each file and its size) is
   written last;
3. the folder is renamed into `checkpoint-N` in one step, and only then are old checkpoints rotated
   (`save_total_limit`).

A kill at any point therefore leaves either the previous checkpoints untouched, or the new one whole.
Resuming (`train(resume_from_checkpoint=True)` or a path) checks the checkpoint first: `True` skips
incomplete ones with a warning naming them and takes the newest whole one; an explicit path to an incomplete
checkpoint, or to one without the state the trainer needs (a learnable temperature, a MoCo queue), is
refused with a `ValueError`. Leftover staging folders are removed (a staged checkpoint whose manifest
checks out is put in place first: it is whole).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_contrastive.core.saving import swap_in

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint_manifest.json"
MANIFEST_FORMAT = "hf-contrastive-checkpoint/1"
LIBRARY_STATE_NAME = "hf_contrastive_state.safetensors"
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# Staging folders of this module, old checkpoints being replaced, and the temporary folders of
# `core.utils.atomic_save` left next to a checkpoint by a killed save.
_LEFTOVER_RE = re.compile(rf"^\.{PREFIX_CHECKPOINT_DIR}-(\d+)\.(tmp|old)-(.+)$")
_STAGING_SUFFIX = "tmp-staging"
_WEIGHT_PREFIXES = ("model", "pytorch_model", "adapter_model")


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _files(folder: str) -> dict[str, int]:
    """Relative path -> size of every file under `folder` (sorted, `/` separated)."""
    out: dict[str, int] = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    return out


def write_manifest(folder: str | os.PathLike, global_step: int) -> None:
    """Flush every file of `folder` to disk, then write its manifest (each file and its size) last.

    Args:
        folder (`str | os.PathLike`): a staged checkpoint folder whose files are all written.
        global_step (`int`): the optimiser step of the checkpoint.
    """
    folder = os.fspath(folder)
    files = _files(folder)
    files.pop(MANIFEST_NAME, None)
    for rel in files:
        _fsync(os.path.join(folder, rel))
    for root, _, _ in os.walk(folder):
        _fsync(root, directory=True)
    manifest = {"format": MANIFEST_FORMAT, "global_step": int(global_step), "files": files}
    path = os.path.join(folder, MANIFEST_NAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync(folder, directory=True)


def checkpoint_problem(folder: str | os.PathLike, required_files: tuple[str, ...] = ()) -> str | None:
    """Why `folder` is not a whole checkpoint to resume from, or `None` when it is one.

    A checkpoint with a manifest must hold every file the manifest lists, at its size. One without (written by
    plain `transformers` or an older version of this library, or left by a killed save) must at least hold a
    readable `trainer_state.json` and model weights.

    Args:
        folder (`str | os.PathLike`): a `checkpoint-N` folder.
        required_files (`tuple[str, ...]`, *optional*, defaults to `()`): files the resuming trainer cannot do
            without (its own state).

    Returns:
        `str | None`: the first problem found, in words.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return "it does not exist or is not a folder"
    manifest_path = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
            listed = dict(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"its {MANIFEST_NAME} is unreadable ({err})"
        for rel, size in listed.items():
            path = os.path.join(folder, *rel.split("/"))
            if not os.path.isfile(path):
                return f"{rel} is missing"
            if os.path.getsize(path) != size:
                return f"{rel} is truncated ({os.path.getsize(path)} bytes, {size} written)"
    else:
        state = os.path.join(folder, TRAINER_STATE_NAME)
        if not os.path.isfile(state):
            return f"it has no {TRAINER_STATE_NAME} (the save was interrupted)"
        try:
            with open(state, encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError) as err:
            return f"its {TRAINER_STATE_NAME} is unreadable ({err})"
        names = os.listdir(folder)
        has_weights = any(
            n.startswith(_WEIGHT_PREFIXES) and n.endswith((".safetensors", ".bin", ".json")) for n in names
        ) or any(os.path.isdir(os.path.join(folder, n)) for n in names)
        if not has_weights:
            return "it holds no model weights"
    for name in required_files:
        if not os.path.isfile(os.path.join(folder, name)):
            return f"it has no {name} (the trainer's own state), which this trainer needs to resume exactly"
    return None


def _staging_dir(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, f".{name}.{_STAGING_SUFFIX}")


def _publish(staged: str, final: str) -> None:
    """Rename the whole folder `staged` to `final`; a folder already there is swapped out whole (the same
    [`swap_in`] as model saves: a reader sees the old checkpoint or the new one, never a mix)."""
    if os.path.lexists(final):
        swap_in(Path(staged), Path(final))
    else:
        os.rename(staged, final)
    _fsync(os.path.dirname(final), directory=True)


def _point_card_at(staged: str, final: str) -> None:
    """Make the usage snippets of a staged checkpoint's model card load the final folder, not the staging one."""
    card = os.path.join(staged, "README.md")
    if not os.path.isfile(card):
        return
    with open(card, encoding="utf-8") as f:
        text = f.read()
    staged_path = os.fspath(Path(staged).resolve())
    if staged_path in text:
        with open(card, "w", encoding="utf-8") as f:
            f.write(text.replace(staged_path, os.fspath(Path(final).resolve())))


def clean_checkpoint_leftovers(run_dir: str | os.PathLike) -> list[str]:
    """Remove what killed checkpoint saves left in `run_dir`; return the paths removed.

    A staged checkpoint whose manifest checks out is whole (the process died between its last file and the
    rename): it is put in place as `checkpoint-N` when no such folder exists, instead of being removed.

    Args:
        run_dir (`str | os.PathLike`): the Trainer's output folder (holding the `checkpoint-N` folders).

    Returns:
        `list[str]`: the leftover folders and files removed.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        return []
    removed = []
    for name in sorted(os.listdir(run_dir)):
        match = _LEFTOVER_RE.match(name)
        if match is None:
            continue
        path = os.path.join(run_dir, name)
        ckpt = f"{PREFIX_CHECKPOINT_DIR}-{match.group(1)}"
        if path == _staging_dir(run_dir, ckpt):
            staged = os.path.join(path, ckpt)
            final = os.path.join(run_dir, ckpt)
            if (
                os.path.isfile(os.path.join(staged, MANIFEST_NAME))
                and checkpoint_problem(staged) is None
                and not os.path.lexists(final)
            ):
                os.rename(staged, final)
                logger.warning(f"Recovered the whole checkpoint {final} from an interrupted save.")
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        removed.append(path)
    if removed:
        logger.warning(f"Removed leftovers of interrupted checkpoint saves: {removed}")
    return removed


def last_complete_checkpoint(
    run_dir: str | os.PathLike, required_files: tuple[str, ...] = ()
) -> tuple[str | None, list[str]]:
    """The newest whole `checkpoint-N` of `run_dir`, and the newer incomplete ones skipped on the way.

    Args:
        run_dir (`str | os.PathLike`): the Trainer's output folder.
        required_files (`tuple[str, ...]`, *optional*, defaults to `()`): see [`checkpoint_problem`].

    Returns:
        `tuple[str | None, list[str]]`: the checkpoint path (`None` when there is none) and one
        `"<path>: <problem>"` line per incomplete checkpoint skipped.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        return None, []
    steps = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(run_dir)
        if (m := _CHECKPOINT_RE.match(name)) is not None and os.path.isdir(os.path.join(run_dir, name))
    )
    skipped = []
    for _, name in reversed(steps):
        path = os.path.join(run_dir, name)
        problem = checkpoint_problem(path, required_files)
        if problem is None:
            return path, skipped
        skipped.append(f"{path}: {problem}")
    return None, skipped


class AtomicCheckpointMixin:
    """Atomic checkpoints and a checked resume for a `transformers.Trainer` subclass (put it first in the bases).

    Subclasses with state outside the model and the optimiser (a loss's learnable temperature, a MoCo queue
    and key encoder) return it from `_library_state` and take it back in `_load_library_state`; it is saved
    as `library_state_name` inside each checkpoint, in the same atomic step as everything else. When
    `_library_state_required` says so, a checkpoint without that file is never resumed from.
    """

    library_state_name: str = LIBRARY_STATE_NAME

    # -- hooks for the trainer's own state --------------------------------------------------------------
    def _library_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the trainer's own state to checkpoint (empty: nothing to save)."""
        return {}

    def _load_library_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `_library_state` returned.

        Args:
            tensors (`dict[str, torch.Tensor]`): the tensors read back from the checkpoint.
        """

    def _library_state_required(self) -> bool:
        """Whether resuming without the trainer's own state would silently change the run."""
        return False

    # -- saving -----------------------------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        staging = self.__dict__.get("_checkpoint_staging")
        if staging is not None:
            return staging
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        args = self.args  # type: ignore[attr-defined]
        state = self.state  # type: ignore[attr-defined]
        accelerator = self.accelerator  # type: ignore[attr-defined]
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        final = os.path.join(run_dir, name)
        staging_root = _staging_dir(run_dir, name)
        staged = os.path.join(staging_root, name)
        if args.should_save:
            os.makedirs(run_dir, exist_ok=True)
            clean_checkpoint_leftovers(run_dir)
            os.makedirs(staging_root)
        accelerator.wait_for_everyone()
        # `Trainer._save_checkpoint` writes into `<output dir>/checkpoint-N` and rotates `<output dir>`: pointed
        # at the staging folder, it fills the staged checkpoint and finds nothing there to rotate.
        self.__dict__["_checkpoint_staging"] = staging_root
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
            best = state.best_model_checkpoint
            if best is not None and os.path.dirname(os.path.normpath(best)) == os.path.normpath(staging_root):
                state.best_model_checkpoint = final
            if args.should_save:
                if best != state.best_model_checkpoint and os.path.isfile(
                    os.path.join(staged, TRAINER_STATE_NAME)
                ):
                    state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
                _point_card_at(staged, final)
                tensors = self._library_state()
                if tensors:
                    save_file(tensors, os.path.join(staged, self.library_state_name))
            accelerator.wait_for_everyone()
            if args.should_save:
                write_manifest(staged, state.global_step)
                _publish(staged, final)
        except BaseException:
            if args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)
            raise
        finally:
            self.__dict__["_checkpoint_staging"] = None
        if args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=args.save_total_limit,
                best_model_checkpoint=state.best_model_checkpoint,
                use_mtime=True,
            )
        accelerator.wait_for_everyone()

    # -- resuming ---------------------------------------------------------------------------------------
    def _required_checkpoint_files(self) -> tuple[str, ...]:
        return (self.library_state_name,) if self._library_state_required() else ()

    def resolve_checkpoint(self, resume_from_checkpoint: str | os.PathLike | bool | None) -> str | None:
        """The checkpoint `train(resume_from_checkpoint=...)` resumes from, checked to be whole.

        Args:
            resume_from_checkpoint (`str | os.PathLike | bool | None`): `True` for the newest whole checkpoint of
                `args.output_dir` (incomplete newer ones are skipped with a warning), a path (refused with a
                `ValueError` when incomplete), or `None` / `False` for a fresh start.

        Returns:
            `str | None`: the checkpoint folder, or `None` for a fresh start.
        """
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None
        required = self._required_checkpoint_files()
        if resume_from_checkpoint is True:
            output_dir = self.args.output_dir  # type: ignore[attr-defined]
            path, skipped = last_complete_checkpoint(output_dir, required)
            for line in skipped:
                logger.warning(f"Skipping incomplete checkpoint {line}")
            if path is None:
                raise ValueError(
                    f"No complete checkpoint in {output_dir} to resume from"
                    + (f" (incomplete: {'; '.join(skipped)})." if skipped else ".")
                )
            if skipped:
                logger.warning(f"Resuming from {path}, the newest whole checkpoint.")
            return path
        path = os.fspath(resume_from_checkpoint)
        problem = checkpoint_problem(path, required)
        if problem is not None:
            raise ValueError(
                f"Refusing to resume from {path}: {problem}. Resume from an earlier whole checkpoint "
                "(resume_from_checkpoint=True picks the newest one) or start afresh."
            )
        return path

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`Trainer.train`, resuming only from a whole checkpoint (see [`AtomicCheckpointMixin`]).

        Args:
            resume_from_checkpoint (`str | bool | None`, *optional*): as `Trainer.train`, checked by
                `resolve_checkpoint`.
            trial (`Any`, *optional*): the hyper-parameter search trial, as `Trainer.train`.
            ignore_keys_for_eval (`list[str] | None`, *optional*): as `Trainer.train`.
            kwargs (`Any`): passed on to `Trainer.train`.
        """
        if self.args.should_save:  # type: ignore[attr-defined]
            clean_checkpoint_leftovers(self.args.output_dir)  # type: ignore[attr-defined]
        checkpoint = self.resolve_checkpoint(resume_from_checkpoint)
        return super().train(  # type: ignore[misc]
            resume_from_checkpoint=checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
        path = os.path.join(resume_from_checkpoint, self.library_state_name)
        if os.path.isfile(path):
            self._load_library_state(load_file(path))
        elif self._library_state_required():
            raise ValueError(
                f"{resume_from_checkpoint} has no {self.library_state_name}: this trainer's own state (learnable "
                "loss parameters, momentum-contrast queue and key encoder) cannot be restored from it, and "
                "resuming with their initial values would silently change the run."
            )


__all__ = [
    "AtomicCheckpointMixin",
    "checkpoint_problem",
    "clean_checkpoint_leftovers",
    "last_complete_checkpoint",
    "write_manifest",
]
