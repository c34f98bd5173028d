"""Batch samplers for in-batch-negative training."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence

import torch

logger = logging.getLogger(__name__)


class NoDuplicatesBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches in which no text appears twice.

    With in-batch negatives, a text that occurs in two rows of one batch is both a positive and
    a negative of the same anchor (a false negative). Rows are visited in a seeded random order;
    a row that would repeat a text already in the current batch waits for a later batch (it is
    tried first there), so no row is dropped except by `drop_last` or `min_batch_size`. The order
    depends only on `seed` and the epoch (`set_epoch`), which makes resumed runs replay the same batches.

    Waiting rows gather at the end of an epoch, so the last batches can be small: a batch of one row
    leaves an in-batch-negative loss without negatives. With `min_batch_size`, a final batch smaller
    than that is merged into the batch before it (row by row, where no text repeats) and what cannot be
    merged is dropped for this epoch; both are logged at WARNING once per epoch and counted in
    `merged_rows` / `dropped_rows` (of the epoch last iterated).

    Args:
        row_texts (`Sequence[Sequence[str]]`): for each dataset row, the texts it contributes (all its text columns).
        batch_size (`int`): rows per batch.
        drop_last (`bool`, *optional*, defaults to `False`): drop the final batch when it is smaller than `batch_size`.
        seed (`int`, *optional*, defaults to `0`): base seed; epoch `e` shuffles with `seed + e`.
        min_batch_size (`int`, *optional*, defaults to `1`): smallest batch yielded (2 for in-batch negatives
            without hard negatives); smaller tail batches are merged into the previous batch or dropped.
    """

    def __init__(
        self,
        row_texts: Sequence[Sequence[str]],
        batch_size: int,
        drop_last: bool = False,
        seed: int = 0,
        min_batch_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if isinstance(min_batch_size, bool) or not 1 <= int(min_batch_size) <= batch_size:
            raise ValueError(
                f"min_batch_size must be in [1, batch_size={batch_size}], got {min_batch_size!r}."
            )
        self.row_texts = [frozenset(t) for t in row_texts]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.min_batch_size = int(min_batch_size)
        self.epoch = 0
        self.merged_rows = 0
        self.dropped_rows = 0
        self._len_cache: dict[int, int] = {}
        self._logged_epochs: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> Iterator[list[int]]:
        """The epoch's batches with tail batches under `min_batch_size` merged back or dropped."""
        self._merged, self._dropped = 0, 0
        held: list[int] | None = None
        for batch in self._raw_batches():
            if len(batch) >= self.min_batch_size:
                if held is not None:
                    yield held
                held = batch
                continue
            if held is None:  # nothing to merge into (the whole epoch is this one small batch)
                self._dropped += len(batch)
                continue
            held_texts = set().union(*(self.row_texts[i] for i in held))
            for idx in batch:
                if held_texts.isdisjoint(self.row_texts[idx]):
                    held.append(idx)
                    held_texts.update(self.row_texts[idx])
                    self._merged += 1
                else:
                    self._dropped += 1
        if held is not None:
            yield held

    def _raw_batches(self) -> Iterator[list[int]]:
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
        batches = list(self._batches())
        self.merged_rows, self.dropped_rows = self._merged, self._dropped
        if (self.merged_rows or self.dropped_rows) and self.epoch not in self._logged_epochs:
            self._logged_epochs.add(self.epoch)
            logger.warning(
                "Epoch %d: the last batch had fewer than %d rows (the dataset size leaves a small tail, and rows "
                "repeating a text wait for a later batch; a 1-row batch has no in-batch negatives): %d row(s) "
                "merged into the previous batch, %d row(s) skipped this epoch (their texts were already in it).",
                self.epoch,
                self.min_batch_size,
                self.merged_rows,
                self.dropped_rows,
            )
        return iter(batches)

    def __len__(self) -> int:
        if self.epoch not in self._len_cache:
            self._len_cache[self.epoch] = sum(1 for _ in self._batches())
        return self._len_cache[self.epoch]


__all__ = ["NoDuplicatesBatchSampler"]
