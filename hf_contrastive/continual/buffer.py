"""The rehearsal (experience-replay) buffer of class-incremental training.

The buffer holds *indices* into the training dataset the trainer was given, grouped by class, so that it is
small, JSON-serialisable and saved inside every checkpoint (resuming restores exactly the rows that were being
replayed, and the random state that picks the next ones).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["RehearsalBuffer", "herding_order"]

SELECTIONS = ("random", "herding")


def herding_order(features: torch.Tensor, count: int) -> list[int]:
    r"""iCaRL's herding: rows chosen one at a time so that the mean of the chosen L2-normalised features stays
    closest to the class mean.

    At step :math:`k` the row :math:`i` minimising :math:`\lVert \mu - \frac{1}{k}(\sum_{j<k} f_{j} + f_i)
    \rVert` among those not chosen yet is taken (Rebuffi et al. 2017, Algorithm 4).

    Args:
        features (`torch.Tensor` of shape `[N, D]`): the class's features.
        count (`int`): how many rows to choose (at most `N`).

    Returns:
        `list[int]`: row indices, in the order they were chosen (a prefix is the best smaller selection).
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}.")
    f = F.normalize(features.detach().double(), dim=-1)
    mu = f.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(f.shape[0], dtype=torch.bool)
    for k in range(1, min(count, f.shape[0]) + 1):
        dist = (mu - (running + f) / k).norm(dim=-1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += f[i]
    return chosen


def _fair_shares(capacity: int, available: Mapping[str, int]) -> dict[str, int]:
    """Water-filling: each class gets an equal share of `capacity`, a class with fewer rows keeps all it has and
    its unused share goes to the others (ties broken by arrival order)."""
    shares = {c: 0 for c in available}
    open_classes = [c for c in available if available[c] > 0]
    left = capacity
    while open_classes and left > 0:
        each, extra = divmod(left, len(open_classes))
        still_open = []
        for i, c in enumerate(open_classes):
            want = each + (1 if i < extra else 0)
            take = min(want, available[c] - shares[c])
            shares[c] += take
            left -= take
            if shares[c] < available[c]:
                still_open.append(c)
        if len(still_open) == len(open_classes) and each == 0 and extra == 0:
            break
        open_classes = still_open
    return shares


class RehearsalBuffer:
    r"""A fixed-size memory of past training rows for experience replay.

    After each task the trainer calls [`update`] with the task's rows by class. With `class_balanced=True`
    every class seen so far holds an equal share of `capacity` (a class with fewer rows keeps all of them and
    its unused share goes to the others); old classes shrink to their new share by dropping their last-chosen
    rows, so the prefix of a class's list is always its best selection. `selection` picks a new class's rows:
    `"random"` (seeded) or `"herding"` (iCaRL: the rows whose mean feature stays closest to the class mean;
    needs `features`). With `class_balanced=False` the buffer is a reservoir sample of every row seen so far
    (each row equally likely to be kept, whatever its class).

    Args:
        capacity (`int`): rows the buffer holds at most.
        selection (`str`, *optional*, defaults to `"random"`): `"random"` or `"herding"`.
        class_balanced (`bool`, *optional*, defaults to `True`): equal shares per class (else reservoir).
        seed (`int`, *optional*, defaults to 0): seeds the random choices.
    """

    def __init__(
        self, capacity: int, selection: str = "random", class_balanced: bool = True, seed: int = 0
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be an int >= 0 (rows), got {capacity!r}.")
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
        if selection == "herding" and not class_balanced:
            raise ValueError("herding selects per class: use it with class_balanced=True.")
        self.capacity = capacity
        self.selection = selection
        self.class_balanced = bool(class_balanced)
        self.seed = int(seed)
        self._rng = random.Random(self.seed)
        self.items: dict[str, list[int]] = {}
        self.reservoir: list[tuple[str, int]] = []
        self.rows_seen = 0

    # -- contents ---------------------------------------------------------------------------------------
    def indices(self) -> list[int]:
        """Every stored dataset index (class by class, in arrival order)."""
        if not self.class_balanced:
            return [i for _, i in self.reservoir]
        return [i for rows in self.items.values() for i in rows]

    def per_class(self) -> dict[str, int]:
        """How many rows each class holds."""
        if not self.class_balanced:
            counts: dict[str, int] = {}
            for c, _ in self.reservoir:
                counts[c] = counts.get(c, 0) + 1
            return counts
        return {c: len(rows) for c, rows in self.items.items()}

    def __len__(self) -> int:
        return len(self.reservoir) if not self.class_balanced else sum(len(r) for r in self.items.values())

    # -- updates ----------------------------------------------------------------------------------------
    def update(
        self, new_rows: Mapping[str, Sequence[int]], features: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Add a finished task's rows.

        Args:
            new_rows (`Mapping[str, Sequence[int]]`): class -> dataset indices of the task's training rows.
            features (`Mapping[str, torch.Tensor]`, *optional*): class -> `[len(rows), D]` features of those
                rows, in the same order (needed for `selection="herding"`).
        """
        if self.capacity == 0:
            self.rows_seen += sum(len(v) for v in new_rows.values())
            return
        if not self.class_balanced:
            self._reservoir_update(new_rows)
            return
        clash = [c for c in new_rows if c in self.items]
        if clash:
            raise ValueError(f"classes {clash} are already in the buffer: each class arrives in one task.")
        orders: dict[str, list[int]] = {}
        for c, rows in new_rows.items():
            rows = [int(i) for i in rows]
            if self.selection == "herding":
                if features is None or c not in features:
                    raise ValueError(f"herding needs the features of class {c!r}'s rows.")
                if features[c].shape[0] != len(rows):
                    raise ValueError(
                        f"class {c!r}: {features[c].shape[0]} feature rows for {len(rows)} dataset rows."
                    )
                orders[c] = [rows[j] for j in herding_order(features[c], len(rows))]
            else:
                orders[c] = self._rng.sample(rows, len(rows))
        available = {c: len(r) for c, r in self.items.items()} | {c: len(r) for c, r in orders.items()}
        shares = _fair_shares(self.capacity, available)
        for c in list(self.items):
            self.items[c] = self.items[c][: shares[c]]
        for c, order in orders.items():
            self.items[c] = order[: shares[c]]
        self.rows_seen += sum(len(r) for r in orders.values())

    def _reservoir_update(self, new_rows: Mapping[str, Sequence[int]]) -> None:
        stream = [(c, int(i)) for c, rows in new_rows.items() for i in rows]
        self._rng.shuffle(stream)
        for item in stream:
            self.rows_seen += 1
            if len(self.reservoir) < self.capacity:
                self.reservoir.append(item)
            else:
                j = self._rng.randrange(self.rows_seen)
                if j < self.capacity:
                    self.reservoir[j] = item

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: settings, contents and the random generator's state."""
        version, internal, gauss = self._rng.getstate()
        return {
            "capacity": self.capacity,
            "selection": self.selection,
            "class_balanced": self.class_balanced,
            "seed": self.seed,
            "items": {c: list(r) for c, r in self.items.items()},
            "reservoir": [[c, i] for c, i in self.reservoir],
            "rows_seen": self.rows_seen,
            "rng_state": [version, list(internal), gauss],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> RehearsalBuffer:
        """Rebuild a buffer from [`state_dict`]'s output.

        Args:
            state (`Mapping[str, Any]`): what `state_dict` returned (possibly through JSON).
        """
        buffer = cls(
            int(state["capacity"]), state["selection"], bool(state["class_balanced"]), int(state["seed"])
        )
        buffer.items = {str(c): [int(i) for i in r] for c, r in state["items"].items()}
        buffer.reservoir = [(str(c), int(i)) for c, i in state["reservoir"]]
        buffer.rows_seen = int(state["rows_seen"])
        version, internal, gauss = state["rng_state"]
        buffer._rng.setstate((int(version), tuple(int(x) for x in internal), gauss))
        return buffer
