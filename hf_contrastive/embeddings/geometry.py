"""Alignment and uniformity of an embedding space (Wang & Isola, 2020), as SimCSE analyses them.

For L2-normalised embeddings `f(x)`:

- alignment: `l_align = E_{(x, x+) ~ p_pos} ||f(x) - f(x+)||^alpha` (alpha 2): how close positive pairs are.
- uniformity: `l_uniform = log E_{x, y ~ p_data} exp(-t ||f(x) - f(y)||^2)` (t 2), the expectation taken over
  distinct pairs: how evenly the embeddings spread over the hypersphere.

Lower is better for both. Alignment lies in `[0, 2^alpha]`; uniformity in `[-4t, 0]` (0 when every
embedding is the same point).

SimCSE (Gao et al., 2021, sections 2 and 7) computes both on STS Benchmark: the pairs with a gold score
above 4 are `p_pos`, all STS-B sentences are `p_data` (the authors took the whole STS-B data for their
plots; `AlignmentUniformityEvaluator.sts_benchmark(split="all")`). The evaluator defaults to the dev split,
the one to follow during training and to choose settings on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.search import check_embeddings
from hf_contrastive.embeddings.sts import _encoder_fn, _pairs_from

logger = logging.getLogger(__name__)

__all__ = ["AlignmentUniformityEvaluator", "WANG_ISOLA_CITATION", "alignment", "uniformity"]

WANG_ISOLA_CITATION = """@inproceedings{wang2020understanding,
  title     = {Understanding Contrastive Representation Learning through Alignment and Uniformity on the
               Hypersphere},
  author    = {Wang, Tongzhou and Isola, Phillip},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning (ICML)},
  pages     = {9929--9939},
  year      = {2020}
}"""

STS_BENCHMARK_SPLITS = ("train", "dev", "test")


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _as_matrix(x: Any, what: str, normalize: bool) -> torch.Tensor:
    emb = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x).double()
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(
            f"{what} must be a non-empty [N, D] matrix of embeddings, got shape {tuple(emb.shape)}."
        )
    # NaN rows make every figure NaN; a zero row has no direction to normalise.
    check_embeddings(emb, what=what, refuse_zero=normalize)
    return F.normalize(emb, p=2, dim=-1) if normalize else emb


def alignment(x: Any, y: Any, alpha: float = 2.0, *, normalize: bool = True) -> float:
    """Mean `||f(x_i) - f(y_i)||^alpha` over the positive pairs `(x_i, y_i)` (Wang & Isola's `l_align`).

    Args:
        x (`Any`): `[N, D]` embeddings (tensor, array or nested lists) of the first element of each pair.
        y (`Any`): `[N, D]` embeddings of the second element, row `i` paired with row `i` of `x`.
        alpha (`float`, *optional*, defaults to `2.0`): the power of the distance (> 0).
        normalize (`bool`, *optional*, defaults to `True`): L2-normalise the rows first, as the metric assumes;
            `False` takes the embeddings as they are (already normalised ones give the same figure).

    Returns:
        `float`: the mean, computed in float64; lower is better.

    Raises:
        `ValueError`: for shapes that differ or are not `[N, D]`, `alpha <= 0`, NaN or infinite rows, or
            all-zero rows when normalising.
    """
    if not _positive_number(alpha):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}.")
    a = _as_matrix(x, "x (first elements of the pairs)", normalize)
    b = _as_matrix(y, "y (second elements of the pairs)", normalize)
    if a.shape != b.shape:
        raise ValueError(
            f"x and y must have the same shape (row i of x pairs with row i of y): {tuple(a.shape)} vs "
            f"{tuple(b.shape)}."
        )
    return float(torch.linalg.vector_norm(a - b, ord=2, dim=-1).pow(float(alpha)).mean())


def uniformity(x: Any, t: float = 2.0, *, normalize: bool = True, chunk_size: int = 1024) -> float:
    """`log` of the mean of `exp(-t ||f(x_i) - f(x_j)||^2)` over the distinct pairs `i < j` (`l_uniform`).

    Computed in float64 with a log-sum-exp over row blocks, so memory stays at `chunk_size x N` values and
    nothing underflows for large `t`.

    Args:
        x (`Any`): `[N, D]` embeddings (tensor, array or nested lists), `N >= 2`.
        t (`float`, *optional*, defaults to `2.0`): the temperature of the Gaussian potential (> 0).
        normalize (`bool`, *optional*, defaults to `True`): L2-normalise the rows first, as the metric assumes.
        chunk_size (`int`, *optional*, defaults to `1024`): rows scored against the others at once.

    Returns:
        `float`: in `[-4t, 0]` for normalised embeddings; lower is better (more uniform).

    Raises:
        `ValueError`: for fewer than 2 rows, `t <= 0`, `chunk_size < 1`, NaN or infinite rows, or all-zero
            rows when normalising.
    """
    if not _positive_number(t):
        raise ValueError(f"t must be a finite number > 0, got {t!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}.")
    emb = _as_matrix(x, "x", normalize)
    n = emb.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings (it averages over pairs), got {n}.")
    sq_norms = emb.pow(2).sum(-1)
    parts = []
    for start in range(0, n - 1, chunk_size):
        rows = emb[start : start + chunk_size]
        # Squared distances to the rows after each one (j > i): the upper triangle, each pair once.
        sq = (
            sq_norms[start : start + rows.shape[0], None] + sq_norms[None, start:] - 2 * rows @ emb[start:].T
        ).clamp_min(0)
        i = torch.arange(rows.shape[0])[:, None]
        j = torch.arange(n - start)[None, :]
        parts.append(torch.logsumexp((-t * sq)[j > i], dim=0))
    pairs = n * (n - 1) / 2
    return float(torch.logsumexp(torch.stack(parts), dim=0) - math.log(pairs))


class AlignmentUniformityEvaluator:
    """Alignment and uniformity of a model's embeddings on STS pairs, as SimCSE reports them.

    The pairs whose gold score is above `positive_threshold` (4 on STS-B's 0-5 scale) are the positive
    pairs of `alignment`; the distinct sentences of all pairs are the data of `uniformity`. Each sentence
    is embedded once. Callable as `evaluator(model)`, so it goes into
    `ContrastiveTrainer(evaluators=[...])` (figures logged as `eval_<name>_alignment`,
    `eval_<name>_uniformity`; lower is better, so set `greater_is_better=False` to select a checkpoint
    on them).

    Args:
        data (`Any`): STS pairs in any layout `evaluate_sts` accepts: `(s1, s2, score)` triples, `(s1, s2)`
            pairs with `scores=`, `STSExample` rows, a mapping of columns or a `datasets.Dataset`.
        scores (`Sequence[float] | None`, *optional*): gold scores when `data` holds pairs only.
        name (`str`, *optional*, defaults to `"stsb"`): prefix of the returned figures.
        positive_threshold (`float`, *optional*, defaults to `4.0`): pairs scoring strictly above it are positive.
        alpha (`float`, *optional*, defaults to `2.0`): power of the distance in `alignment`.
        t (`float`, *optional*, defaults to `2.0`): temperature of `uniformity`.
        deduplicate (`bool`, *optional*, defaults to `True`): uniformity over distinct sentences; `False` keeps
            a sentence once per occurrence (repeated sentences then add pairs at distance 0).
        batch_size (`int`, *optional*, defaults to `32`): texts per forward pass.
        columns (`str`, *optional*): `sentence1_column`, `sentence2_column`, `score_column` for datasets.

    Raises:
        `ValueError`: when no pair scores above the threshold (alignment would be undefined), or the data
            have fewer than 2 distinct sentences.
    """

    def __init__(
        self,
        data: Any,
        scores: Sequence[float] | None = None,
        *,
        name: str = "stsb",
        positive_threshold: float = 4.0,
        alpha: float = 2.0,
        t: float = 2.0,
        deduplicate: bool = True,
        batch_size: int = 32,
        **columns: str,
    ) -> None:
        unknown = sorted(set(columns) - {"sentence1_column", "sentence2_column", "score_column"})
        if unknown:
            raise TypeError(f"Unknown argument(s) {unknown}.")
        cols = (
            columns.get("sentence1_column", "sentence1"),
            columns.get("sentence2_column", "sentence2"),
            columns.get("score_column", "score"),
        )
        s1, s2, gold = _pairs_from(data, scores, cols)
        if not (_positive_number(alpha) and _positive_number(t)):
            raise ValueError(f"alpha and t must be finite numbers > 0, got alpha={alpha!r}, t={t!r}.")
        positive = [i for i, g in enumerate(gold) if g > positive_threshold]
        if not positive:
            raise ValueError(
                f"No pair has a gold score above positive_threshold={positive_threshold} (the highest is "
                f"{gold.max():g}): alignment needs positive pairs."
            )
        occurrences = [*s1, *s2]
        self.sentences = list(dict.fromkeys(occurrences)) if deduplicate else occurrences
        if len(self.sentences) < 2:
            raise ValueError("Uniformity needs at least 2 distinct sentences; the pairs hold one.")
        row = {s: i for i, s in enumerate(dict.fromkeys(occurrences))}
        if deduplicate:
            self.positive_rows = ([row[s1[i]] for i in positive], [row[s2[i]] for i in positive])
        else:
            n = len(s1)
            self.positive_rows = (positive, [n + i for i in positive])
        self.name = name
        self.positive_threshold = positive_threshold
        self.alpha = alpha
        self.t = t
        self.batch_size = batch_size
        self.num_pairs = len(s1)
        self.num_positive_pairs = len(positive)
        logger.info(
            "Alignment/uniformity on %d pairs: %d positive (score > %g), %d sentences for uniformity%s.",
            self.num_pairs,
            self.num_positive_pairs,
            positive_threshold,
            len(self.sentences),
            "" if deduplicate else " (repeats kept)",
        )

    @classmethod
    def sts_benchmark(
        cls, split: str = "dev", path: str | os.PathLike | None = None, **kwargs: Any
    ) -> AlignmentUniformityEvaluator:
        """STS Benchmark `split` (`train`, `dev`, `test`, or `all` for the three together, SimCSE's plots).

        Args:
            split (`str`, *optional*, defaults to `"dev"`): which split of the benchmark data folder.
            path (`str | os.PathLike | None`, *optional*): the `stsbenchmark` folder or the data root (see
                `load_sts_benchmark`).
            kwargs (`Any`, *optional*): the evaluator's other arguments (`name`, `positive_threshold`, ...).
        """
        if split not in (*STS_BENCHMARK_SPLITS, "all"):
            raise ValueError(f"split must be 'train', 'dev', 'test' or 'all', got {split!r}.")
        splits = STS_BENCHMARK_SPLITS if split == "all" else (split,)
        rows = [row for s in splits for row in load_sts_benchmark(s, path)]
        return cls(rows, **kwargs)

    def __len__(self) -> int:
        return self.num_pairs

    def __call__(self, model: Any) -> dict[str, float]:
        """`{f"{name}_alignment": ..., f"{name}_uniformity": ...}` for `model` (anything with
        `encode(list[str], batch_size=...)`, or a callable `texts -> [N, D]`)."""
        emb = _encoder_fn(model, self.batch_size)(self.sentences).double()
        if emb.ndim != 2 or emb.shape[0] != len(self.sentences):
            raise ValueError(
                f"The model returned shape {tuple(emb.shape)} for {len(self.sentences)} sentences; expected [N, D]."
            )
        left, right = self.positive_rows
        return {
            f"{self.name}_alignment": alignment(emb[left], emb[right], self.alpha),
            f"{self.name}_uniformity": uniformity(emb, self.t),
        }
