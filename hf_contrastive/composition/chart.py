"""The pruned CKY chart of ReCAT (Hu et al. 2024), built from the merge order of a top-down split scorer as in
Fast-R2D2, and its batched layout for the contextual inside-outside layers.

A sentence of `n` tokens has `n - 1` split points; split point `k` lies between tokens `k` and `k + 1`. The top-down
parser splits a span at its highest-scoring split point; the same tree is built bottom-up by merging adjacent
units at the split points in ascending order of score (the merge order). The chart follows that order:

- it starts from the `n` tokens as units and holds every span of at most `window` consecutive units, each with its
  split points at the unit boundaries inside it;
- each merge joins the two units beside one split point into one unit, and adds the spans of at most `window`
  units that contain the new unit (only those of exactly `window` units are new), with their unit boundaries;
- a span met again later keeps the split points of its first appearance (a superset: unit boundaries only
  disappear as units merge);
- cells that no split of a cell reachable from the root uses are dropped (they would feed nothing).

So the chart keeps fewer than `2 n window` cells (`n window` at the start, at most `window` per merge), each with
fewer than `window` split points, and every child of a kept split is a kept cell. An input of at most `window`
tokens gets the full CKY chart: every span, every split point. This is this library's reading of the pruning the
paper describes (Fast-R2D2's merge-order pruning); the exact bookkeeping of the original C++ extension was not
checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ChartBatch", "PrunedChart", "build_pruned_chart", "full_chart", "merge_order_from_scores"]


@dataclass
class PrunedChart:
    """The pruned chart of one sentence.

    Attributes:
        length (`int`): number of tokens `n`.
        spans (`list[tuple[int, int]]`): the cells, as inclusive token spans `(i, j)`, children before parents
            (leaves first, in token order).
        splits (`list[list[tuple[int, int, int]]]`): per cell, its split points as `(k, left cell, right cell)`
            (cell indices into `spans`); empty for a leaf.
        root (`int`): the index of the cell `(0, n - 1)`.
        merged (`list[tuple[int, int]]`): the spans made by the merges, in merge order (the parser's tree).
    """

    length: int
    spans: list[tuple[int, int]]
    splits: list[list[tuple[int, int, int]]]
    root: int
    merged: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spans)

    def index(self) -> dict[tuple[int, int], int]:
        """`{span: cell index}`."""
        return {span: c for c, span in enumerate(self.spans)}


def merge_order_from_scores(scores: Sequence[float]) -> list[int]:
    """Split points in merge order: ascending score, ties by position (the top-down parse read bottom-up).

    Args:
        scores (`Sequence[float]`): the `n - 1` split-point scores of one sentence.
    """
    return sorted(range(len(scores)), key=lambda k: (scores[k], k))


def build_pruned_chart(merge_order: Sequence[int], length: int, window: int) -> PrunedChart:
    """The pruned chart of a sentence of `length` tokens for a merge order (see the module docstring).

    Args:
        merge_order (`Sequence[int]`): a permutation of the split points `0..length-2`.
        length (`int`): number of tokens (>= 1).
        window (`int`): the pruning window (>= 2): spans of at most this many units are kept.

    Raises:
        `ValueError`: when `merge_order` is not a permutation of the split points or `length < 1`.
    """
    if length < 1:
        raise ValueError(f"A sentence needs at least one token, got length {length}.")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}.")
    order = [int(k) for k in merge_order]
    if sorted(order) != list(range(length - 1)):
        raise ValueError(
            f"merge_order must be a permutation of the split points 0..{length - 2}, got {order[:20]}"
            f"{'...' if len(order) > 20 else ''}."
        )
    found: dict[tuple[int, int], list[int]] = {}
    # Units as a doubly linked list keyed by their first token.
    end = list(range(length))
    nxt = [t + 1 if t + 1 < length else -1 for t in range(length)]
    prv = [t - 1 for t in range(length)]
    start_of_end = list(range(length))

    def add(units: list[int], must: int | None) -> None:
        for a in range(len(units)):
            for b in range(a, min(a + window, len(units))):
                if must is not None and not a <= must <= b:
                    continue
                span = (units[a], end[units[b]])
                if span not in found:
                    found[span] = [end[units[c]] for c in range(a, b)]

    add(list(range(length)), None)
    merged = []
    for k in order:
        left = start_of_end[k]
        right = k + 1
        end[left] = end[right]
        start_of_end[end[left]] = left
        nxt[left] = nxt[right]
        if nxt[left] >= 0:
            prv[nxt[left]] = left
        merged.append((left, end[left]))
        before, after = [], []
        u = prv[left]
        while u >= 0 and len(before) < window - 1:
            before.append(u)
            u = prv[u]
        u = nxt[left]
        while u >= 0 and len(after) < window - 1:
            after.append(u)
            u = nxt[u]
        add([*reversed(before), left, *after], len(before))
    root = (0, length - 1)
    if root not in found:  # cannot happen: the last merges leave fewer than `window` units
        raise RuntimeError("The pruned chart lost its root cell.")
    # Keep the cells reachable from the root through split points.
    keep = {root}
    stack = [root]
    while stack:
        i, j = stack.pop()
        for k in found[(i, j)]:
            for child in ((i, k), (k + 1, j)):
                if child not in keep:
                    keep.add(child)
                    stack.append(child)
    spans = sorted(keep, key=lambda s: (s[1] - s[0], s[0]))
    index = {span: c for c, span in enumerate(spans)}
    splits = [[(k, index[(i, k)], index[(k + 1, j)]) for k in found[(i, j)]] for i, j in spans]
    return PrunedChart(length=length, spans=spans, splits=splits, root=index[root], merged=merged)


def full_chart(length: int) -> PrunedChart:
    """The full CKY chart of `length` tokens: every span with every split point."""
    spans = sorted(
        ((i, j) for i in range(length) for j in range(i, length)), key=lambda s: (s[1] - s[0], s[0])
    )
    index = {span: c for c, span in enumerate(spans)}
    splits = [[(k, index[(i, k)], index[(k + 1, j)]) for k in range(i, j)] for i, j in spans]
    return PrunedChart(length=length, spans=spans, splits=splits, root=index[(0, length - 1)])


@dataclass
class InsideWave:
    """Cells computed together in the inside pass: ids `start..stop-1`, their children per split slot."""

    start: int
    stop: int
    left: torch.Tensor  # [N, K] cell ids
    right: torch.Tensor  # [N, K]
    mask: torch.Tensor  # [N, K] bool, real split slots


@dataclass
class OutsideWave:
    """Cells computed together in the outside pass (rows `start..stop-1` of the outside-ordered table): per
    candidate (a parent that has the cell as a child), the parent's row in the outside table, the sibling's cell
    id, the side of the sibling (0: sibling on the left, 1: on the right) and the flat index of the parent's split
    slot in the `[cells, max_splits]` split-score table."""

    start: int
    stop: int
    parent_row: torch.Tensor  # [N, P]
    sibling: torch.Tensor  # [N, P]
    sibling_side: torch.Tensor  # [N, P]
    rule: torch.Tensor  # [N, P]
    mask: torch.Tensor  # [N, P]


@dataclass
class ChartBatch:
    """The pruned charts of a batch laid out for batched passes.

    Cells of all sentences get global ids sorted by inside wave (leaves, wave 0, first, in `(sentence, token)`
    order; a cell's wave is one more than its children's highest), so each inside wave is a contiguous range of
    ids and children always have smaller ids. The outside pass uses its own order (roots first; a cell's outside
    wave is one more than its parents' highest), `outside_row[id]` giving each cell's row there.
    """

    charts: list[PrunedChart]
    sentence: list[int]  # per cell id
    spans: list[tuple[int, int]]  # per cell id
    local_to_id: list[list[int]]  # per sentence: local cell index -> global id
    split_k: list[list[int]]  # per cell id: split points
    split_children: list[list[tuple[int, int]]]  # per cell id: (left id, right id) per slot
    num_leaves: int
    max_splits: int
    roots: torch.Tensor  # [B] root ids
    inside_waves: list[InsideWave]
    outside_waves: list[OutsideWave]
    outside_row: torch.Tensor  # [cells] row of each cell id in the outside-ordered table

    @property
    def num_cells(self) -> int:
        return len(self.spans)

    @classmethod
    def from_charts(cls, charts: Sequence[PrunedChart], device: torch.device | str = "cpu") -> ChartBatch:
        """Lay out `charts` (one per sentence) on `device`."""
        keys = []
        for b, chart in enumerate(charts):
            waves = [0] * len(chart)
            for c, splits in enumerate(chart.splits):  # children come before parents
                if splits:
                    waves[c] = 1 + max(max(waves[lc], waves[rc]) for _, lc, rc in splits)
            keys.extend((w, b, c) for c, w in enumerate(waves))
        keys.sort()
        n = len(keys)
        local_to_id = [[0] * len(chart) for chart in charts]
        for gid, (_, b, c) in enumerate(keys):
            local_to_id[b][c] = gid
        sentence = [b for _, b, _ in keys]
        spans = [charts[b].spans[c] for _, b, c in keys]
        split_k = [[k for k, _, _ in charts[b].splits[c]] for _, b, c in keys]
        split_children = [
            [(local_to_id[b][lc], local_to_id[b][rc]) for _, lc, rc in charts[b].splits[c]]
            for _, b, c in keys
        ]
        num_leaves = sum(1 for w, _, _ in keys if w == 0)
        max_splits = max([len(s) for s in split_k] + [1])
        # Inside waves: contiguous id ranges.
        inside_waves = []
        start = num_leaves
        while start < n:
            stop = start
            while stop < n and keys[stop][0] == keys[start][0]:
                stop += 1
            rows = split_children[start:stop]
            left, mask = _padded([[lc for lc, _ in row] for row in rows])
            right, _ = _padded([[rc for _, rc in row] for row in rows])
            inside_waves.append(InsideWave(start, stop, *(t.to(device) for t in (left, right, mask))))
            start = stop
        # Outside: parents of each cell (parent id, sibling id, sibling side, parent's split slot), outside waves.
        parents: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n)]
        for p in range(n):
            for slot, (lc, rc) in enumerate(split_children[p]):
                parents[lc].append((p, rc, 1, slot))
                parents[rc].append((p, lc, 0, slot))
        roots = [local_to_id[b][chart.root] for b, chart in enumerate(charts)]
        root_set = set(roots)
        owave = [0] * n
        for g in range(n - 1, -1, -1):  # parents have larger ids
            if parents[g]:
                owave[g] = 1 + max(owave[p] for p, _, _, _ in parents[g])
            elif g not in root_set:
                raise RuntimeError(f"Chart cell {spans[g]} has no parent and is not a root.")
        order = sorted(range(n), key=lambda g: (owave[g], g))
        row = [0] * n
        for r, g in enumerate(order):
            row[g] = r
        outside_waves = []
        start = len(roots)
        while start < n:
            stop = start
            while stop < n and owave[order[stop]] == owave[order[start]]:
                stop += 1
            cands = [parents[g] for g in order[start:stop]]
            # Padding reads row 0 (a root, always computed) and cell 0; the mask drops it.
            parent_row, mask = _padded([[row[p] for p, _, _, _ in c] for c in cands])
            sibling, _ = _padded([[sib for _, sib, _, _ in c] for c in cands])
            side, _ = _padded([[sd for _, _, sd, _ in c] for c in cands])
            rule, _ = _padded([[p * max_splits + slot for p, _, _, slot in c] for c in cands])
            tensors = (parent_row, sibling, side, rule, mask)
            outside_waves.append(OutsideWave(start, stop, *(t.to(device) for t in tensors)))
            start = stop
        return cls(
            charts=list(charts),
            sentence=sentence,
            spans=spans,
            local_to_id=local_to_id,
            split_k=split_k,
            split_children=split_children,
            num_leaves=num_leaves,
            max_splits=max_splits,
            roots=torch.tensor(roots, dtype=torch.long, device=device),
            inside_waves=inside_waves,
            outside_waves=outside_waves,
            outside_row=torch.tensor(row, dtype=torch.long, device=device),
        )


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows of ints as a zero-padded `[rows, longest]` long tensor and its `True`-where-real mask."""
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(counts.sum()))
    mask = np.arange(int(counts.max()))[None, :] < counts[:, None]
    out = np.zeros(mask.shape, dtype=np.int64)
    out[mask] = flat  # row-major, the order of the rows' items
    return torch.from_numpy(out), torch.from_numpy(mask)
