"""Class-incremental metrics: the accuracy matrix, average accuracy and forgetting."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["continual_metrics"]


def continual_metrics(matrix: Sequence[Sequence[float]]) -> dict[str, object]:
    r"""Summary metrics of an accuracy matrix `R`, where `R[t][j]` is the accuracy on task `j`'s test classes
    after learning task `t` (`j <= t`; the row of task `t` has `t + 1` entries).

    - `average_accuracy[t]` :math:`= \frac{1}{t+1} \sum_{j \le t} R_{t,j}` (Chaudhry et al. 2018), and
      `final_average_accuracy`, its last value;
    - `forgetting` :math:`= \frac{1}{T-1} \sum_{j < T-1} \max_{l \in [j, T-2]} R_{l,j} - R_{T-1,j}`: how much
      each earlier task lost from its best accuracy by the end (0 for a single task);
    - `backward_transfer` :math:`= \frac{1}{T-1} \sum_{j < T-1} R_{T-1,j} - R_{j,j}` (Lopez-Paz & Ranzato 2017).

    Args:
        matrix (`Sequence[Sequence[float]]`): the lower-triangular accuracy matrix, row by row.

    Returns:
        `dict[str, object]`: `average_accuracy` (list), `final_average_accuracy`, `forgetting`,
        `backward_transfer`.
    """
    rows = [list(map(float, r)) for r in matrix]
    for t, row in enumerate(rows):
        if len(row) != t + 1:
            raise ValueError(f"row {t} of the accuracy matrix must have {t + 1} entries, got {len(row)}.")
    if not rows:
        raise ValueError("the accuracy matrix is empty.")
    average = [sum(r) / len(r) for r in rows]
    last = len(rows) - 1
    if last == 0:
        forgetting = backward = 0.0
    else:
        forgetting = sum(max(rows[k][j] for k in range(j, last)) - rows[last][j] for j in range(last)) / last
        backward = sum(rows[last][j] - rows[j][j] for j in range(last)) / last
    return {
        "average_accuracy": average,
        "final_average_accuracy": average[-1],
        "forgetting": forgetting,
        "backward_transfer": backward,
    }
