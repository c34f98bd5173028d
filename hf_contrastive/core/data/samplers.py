"""Batch samplers for in-batch-negative training."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import torch


class NoDuplicatesBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches in which no text appears twice.

    With in-batch negatives, a text that occurs in two rows of one batch is both a positive and
    a negative of the same anchor (a false negative). Rows are visited in a seeded random order;
    a row that would repeat a text already in the current batch waits for a later batch (it is
    tried first there), so no row is dropped except by `drop_last`. The order depends only on
    `seed` and the epoch (`set_epoch`), which makes resumed runs replay the same batches.

    Args:
        row_texts (`Sequence[Sequence[str]]`): for each dataset row, the texts it contributes (all its text columns).
        batch_size (`int`): rows per batch.
        drop_last (`bool`, *optional*, defaults to `False`): drop the final batch when it is smaller than `batch_size`.
        seed (`int`, *optional*, defaults to `0`): base seed; epoch `e` shuffles with `seed + e`.
    """

    def __init__(
        self, row_texts: Sequence[Sequence[str]], batch_size: int, drop_last: bool = False, seed: int = 0
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.row_texts = [frozenset(t) for t in row_texts]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self._len_cache: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = iter(torch.randperm(len(self.row_texts), generator=g).tolist())
        pending: deque[int] = deque()
        exhausted = False
        while True:
            batch: list[int] = []
            seen: set[str] = set()

            for _ in range(len(pending)):
                if len(batch) == self.batch_size:
                    break
                idx = pending.popleft()
                if not self._try_add(idx, batch, seen):
                    pending.append(idx)
            while len(batch) < self.batch_size and not exhausted:
                idx = next(order, None)
                if idx is None:
                    exhausted = True
                elif not self._try_add(idx, batch, seen):
                    pending.append(idx)
            if not batch:
                return
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
            elif exhausted and not pending:
                return

    def _try_add(self, idx: int, batch: list[int], seen: set[str]) -> bool:
        texts = self.row_texts[idx]
        if seen.isdisjoint(texts):
            batch.append(idx)
            seen.update(texts)
            return True
        return False

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches()

    def __len__(self) -> int:
        if self.epoch not in self._len_cache:
            self._len_cache[self.epoch] = sum(1 for _ in self._batches())
        return self._len_cache[self.epoch]


__all__ = ["NoDuplicatesBatchSampler"]
