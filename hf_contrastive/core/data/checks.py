"""Checks every trainer runs on its datasets before `Trainer` sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def require_rows(dataset: Any, *, name: str, owner: str) -> None:
    """Refuse an empty dataset up front (a `Trainer` would run 0 steps on it and report success).

    Args:
        dataset (`Any`): the dataset; anything without a length (an iterable dataset) is not checked, and
            a mapping of named datasets (as `Trainer` takes for `eval_dataset`) is checked entry by entry.
        name (`str`): the argument it came from (`"train_dataset"`, `"eval_dataset"`).
        owner (`str`): the trainer's class name, for the message.

    Raises:
        `ValueError`: when `len(dataset) == 0`.
    """
    if dataset is None:
        return
    if isinstance(dataset, Mapping):
        for key, value in dataset.items():
            require_rows(value, name=f"{name}[{key!r}]", owner=owner)
        return
    try:
        n = len(dataset)
    except TypeError:
        return
    if n == 0:
        columns = getattr(dataset, "column_names", None)
        described = f" (columns {columns})" if columns else ""
        raise ValueError(
            f"{owner} got an empty {name}{described}: there is nothing to train or evaluate on, and training "
            "would run 0 steps and report success. Check the data loading and any filtering before it."
        )


__all__ = ["require_rows"]
