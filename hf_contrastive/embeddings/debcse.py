r"""DebCSE (Miao et al. 2023): inverse-propensity-weighted sampling of positive and hard-negative pairs.

DebCSE argues that unsupervised contrastive sentence embedding inherits biases from the simple rules that
build its training pairs: a SimCSE positive is the sentence itself (always the same length, the same words)
while the in-batch negatives are random sentences, so sentence length and word overlap become cues for
"similar"; negatives drawn without looking at meaning include paraphrases (false negatives). The paper picks
positive and negative pairs from the corpus "according to both the surface and semantic similarity between
sentences" with inverse propensity weighted sampling, and trains the usual InfoNCE on them. No code was
released and the sampler is described in words only; this module implements the following reading of it. The
aims (length and overlap no longer telling positives from negatives, no false negatives) and the means
(inverse-propensity-weighted sampling on surface and semantic similarity) are the paper's; the candidate pool,
the strata, the propensity estimate and the weight cap below are this library's choices.

**Candidates.** A frozen reference encoder embeds every sentence; for each anchor the `num_candidates`
nearest sentences by cosine (exact search, the anchor and verbatim copies of it excluded) are its candidate
pool. The cosine `s` is the semantic similarity.

**Surface strata.** Each (anchor, candidate) pair gets two surface features: the word overlap (Jaccard index
of the lower-cased word sets, words being runs of letters, digits and underscores) and the relative length
difference `|n_a - n_c| / max(n_a, n_c)` (word counts). Both lie in [0, 1] and are cut into `overlap_bins` x
`length_bins` equal-width bins; a pair's bin pair is its surface stratum `b`.

**Naive selection.** The selection the sampler corrects is similarity-ranked choice from the pool: for a
positive, a softmax over the eligible candidates (cosine at least `positive_threshold`) of `s / t`, with
`t = selection_temperature` (the top-1 choice is its `t -> 0` limit); for a hard negative, the same softmax
over the candidates below the false-negative threshold `false_negative_cutoff`. Call `pi(a, c)` the
probability that the rule picks candidate `c` for anchor `a`.

**Propensity.** Compared with pairing sentences at random (which is what in-batch negatives do), naive
selection over-represents some strata; this over-representation is the selection bias. With
`P_naive(b)` the share of naive picks in stratum `b` (the mean over anchors of the `pi` mass in `b`) and
`P_all(b)` the share of all ordered sentence pairs of the corpus in `b` (counted exactly for small corpora,
else estimated from `population_pairs` random pairs), the propensity of stratum `b` is

    propensity(b) = P_naive(b) / P_all(b)

(proportional to the probability that naive selection picks a pair of stratum `b`). Both shares are smoothed
with `smoothing` pseudo-counts per stratum, those of `P_naive` spread as `P_all` (toward "no bias"):

    P_all(b)   = (count(b) + smoothing) / (N + smoothing * B)
    P_naive(b) = (sum of pi in b + smoothing * B * P_all(b)) / (A + smoothing * B)

with `N` the counted pairs, `A` the anchors with an eligible candidate and `B` the number of strata.

**Inverse-propensity-weighted sampling.** Each anchor draws its positive with probability proportional to
`pi(a, c) * w(b)`, `w(b) = min(1 / propensity(b), max_weight)`, so that within a stratum the semantically
closer candidates stay preferred while across strata the picks are pushed back to the surface distribution of
random pairs, so that length and overlap tell positives from in-batch negatives less well. The hard
negative is drawn the same way (its own propensity table) from the candidates below the false-negative
threshold that are less similar to the anchor than the drawn positive. Anchors with no eligible positive or
negative are dropped and counted (logged; see [`DebiasedSample.dropped`]).

Every draw is seeded per anchor (the draws of anchor `i` depend only on `(seed, i)`), so a sample is replayed
exactly, does not depend on batching, and the `datasets.Dataset.map` path
([`DebiasedPairSampler.map_function`]) gives the same rows as [`DebiasedPairSampler.sample`]. The output has
`anchor`, `positive` and `negative` columns, the triple layout [`ContrastiveTrainer`] trains with InfoNCE and
a hard negative per anchor; diagnostics (indices, similarities, surface features) are returned separately,
never as extra columns.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_contrastive.core.search import check_embeddings, encode_texts, topk_chunked

logger = logging.getLogger(__name__)

__all__ = [
    "DEBCSE_CITATION",
    "CandidatePool",
    "DebiasedPairSampler",
    "DebiasedSample",
    "PropensityTable",
    "jaccard_overlap",
    "relative_length_difference",
    "surface_features",
    "words",
]

DEBCSE_CITATION = """@article{miao2023debcse,
  title   = {DebCSE: Rethinking Unsupervised Contrastive Sentence Embedding Learning in the
             Debiasing Perspective},
  author  = {Miao, Pu and Du, Zeyao and Zhang, Junlin},
  journal = {arXiv preprint arXiv:2309.07396},
  year    = {2023}
}"""

_WORD = re.compile(r"\w+")
TEXT_COLUMNS = ("text", "sentence", "sentences")
ROLES = ("positive", "negative")


# -- surface features ------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The lower-cased words of `text`: runs of letters, digits and underscores."""
    return _WORD.findall(text.lower())


def jaccard_overlap(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    """Jaccard index `|a & b| / |a | b|` of two word sets; two empty sets count as identical (1.0)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def relative_length_difference(n_a: int, n_b: int) -> float:
    """`|n_a - n_b| / max(n_a, n_b)` for two word counts (0.0 when both are 0)."""
    top = max(n_a, n_b)
    return 0.0 if top == 0 else abs(n_a - n_b) / top


def surface_features(a: str, b: str) -> tuple[float, float]:
    """The surface features of a sentence pair: (word overlap, relative length difference), both in [0, 1].

    Args:
        a (`str`): the first sentence.
        b (`str`): the second sentence.

    Returns:
        `tuple[float, float]`: the Jaccard index of the lower-cased word sets, and
        `|n_a - n_b| / max(n_a, n_b)` with `n` the word counts (see [`words`]).
    """
    wa, wb = words(a), words(b)
    return jaccard_overlap(set(wa), set(wb)), relative_length_difference(len(wa), len(wb))


def _bin(values: np.ndarray, bins: int) -> np.ndarray:
    # Equal-width bins on [0, 1]; 1.0 falls in the last bin.
    return np.minimum((np.asarray(values, dtype=np.float64) * bins).astype(np.int64), bins - 1)


# -- data classes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidatePool:
    """Every anchor's candidates, flattened: the candidates of anchor `i` are the rows
    `offsets[i]:offsets[i + 1]`, sorted by decreasing similarity (ties by corpus index).

    Args:
        offsets (`np.ndarray`): `[n + 1]` row offsets per anchor.
        candidate (`np.ndarray`): corpus index of each candidate.
        similarity (`np.ndarray`): reference-encoder cosine of anchor and candidate (float64).
        overlap (`np.ndarray`): word overlap of anchor and candidate (Jaccard index).
        length_difference (`np.ndarray`): relative length difference of anchor and candidate.
        stratum (`np.ndarray`): surface stratum, `overlap_bin * length_bins + length_bin`.
    """

    offsets: np.ndarray
    candidate: np.ndarray
    similarity: np.ndarray
    overlap: np.ndarray
    length_difference: np.ndarray
    stratum: np.ndarray

    def rows(self, anchor: int) -> slice:
        """The rows of `anchor`'s candidates."""
        return slice(int(self.offsets[anchor]), int(self.offsets[anchor + 1]))


@dataclass(frozen=True)
class PropensityTable:
    """The propensity model of one role (`positive` or `negative`), over `overlap_bins x length_bins` strata.

    Args:
        role (`str`): `"positive"` or `"negative"`.
        population (`np.ndarray`): `[overlap_bins, length_bins]`, smoothed share `P_all(b)` of all sentence
            pairs in each stratum.
        naive (`np.ndarray`): smoothed share `P_naive(b)` of naive similarity-ranked picks in each stratum.
        propensity (`np.ndarray`): `naive / population`.
        weights (`np.ndarray`): `min(1 / propensity, max_weight)`, the inverse-propensity weights.
        anchors (`int`): anchors with at least one eligible candidate (`A` in the module docstring).
    """

    role: str
    population: np.ndarray
    naive: np.ndarray
    propensity: np.ndarray
    weights: np.ndarray
    anchors: int


@dataclass
class DebiasedSample:
    """One seeded draw of the sampler: the training rows and what they were drawn from.

    Args:
        dataset (`datasets.Dataset`): `anchor`, `positive`, `negative` columns, one row per kept anchor.
        anchor_index (`np.ndarray`): corpus index of each row's anchor.
        positive_index (`np.ndarray`): corpus index of each row's positive.
        negative_index (`np.ndarray`): corpus index of each row's negative.
        positive_similarity (`np.ndarray`): reference cosine of anchor and positive.
        negative_similarity (`np.ndarray`): reference cosine of anchor and negative.
        positive_overlap / negative_overlap (`np.ndarray`): word overlap with the anchor.
        positive_length_difference / negative_length_difference (`np.ndarray`): relative length difference.
        dropped (`dict[str, int]`): anchors left out and why (`no_positive`: no candidate at or above
            `positive_threshold`; `no_negative`: no candidate below the false-negative threshold and below the
            drawn positive's similarity).
        seed (`int`): the seed of the draw.
        debiased (`bool`): whether the inverse-propensity weights were applied (`False`: naive selection).
    """

    dataset: Any
    anchor_index: np.ndarray
    positive_index: np.ndarray
    negative_index: np.ndarray
    positive_similarity: np.ndarray
    negative_similarity: np.ndarray
    positive_overlap: np.ndarray
    negative_overlap: np.ndarray
    positive_length_difference: np.ndarray
    negative_length_difference: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    debiased: bool = True


# -- the sampler -----------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}.")
    return float(value)


def _read_sentences(sentences: Any, text_column: str | None) -> tuple[list[str], str]:
    if isinstance(sentences, Dataset):
        columns = list(sentences.column_names)
        if text_column is not None:
            if text_column not in columns:
                raise ValueError(
                    f"text_column={text_column!r} is not a column of the dataset; found {columns}."
                )
            column = text_column
        else:
            found = [c for c in TEXT_COLUMNS if c in columns]
            if found:
                column = found[0]
            elif len(columns) == 1:
                column = columns[0]
            else:
                raise ValueError(
                    "Could not tell which column holds the sentences: expected one of "
                    f"{TEXT_COLUMNS} or a single column, found {columns}. Pass text_column=."
                )
        texts = sentences[column]
    elif isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
        raise TypeError(
            "sentences must be a list of strings or a datasets.Dataset with a text column, got "
            f"{type(sentences).__name__}."
        )
    else:
        if text_column is not None:
            raise ValueError("text_column only applies to a datasets.Dataset; got a list of sentences.")
        column, texts = "text", sentences
    texts = list(texts)
    if not texts:
        raise ValueError("The corpus is empty: DebCSE samples pairs among at least 3 sentences.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"Sentences must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__} "
            f"({len(bad)} non-string item(s) in all)."
        )
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        shown = ", ".join(str(i) for i in blank[:10]) + (
            f" and {len(blank) - 10} more" if len(blank) > 10 else ""
        )
        raise ValueError(
            f"{len(blank)} sentence(s) are empty or whitespace only (rows {shown}); remove them before "
            "sampling."
        )
    return texts, column


def _softmax_rows(
    similarity: np.ndarray, mask: np.ndarray, offsets: np.ndarray, temperature: float
) -> np.ndarray:
    """Per-anchor softmax of `similarity / temperature` over the masked rows (0 elsewhere)."""
    out = np.zeros_like(similarity)
    for i in range(len(offsets) - 1):
        lo, hi = offsets[i], offsets[i + 1]
        m = mask[lo:hi]
        if not m.any():
            continue
        z = similarity[lo:hi][m] / temperature
        e = np.exp(z - z.max())
        out[lo:hi][m] = e / e.sum()
    return out


def _pick(weights: np.ndarray, u: float) -> int:
    """Index drawn with probability proportional to `weights` (all > 0), from one uniform `u` in [0, 1)."""
    cumulative = np.cumsum(weights)
    k = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return min(k, len(weights) - 1)


class DebiasedPairSampler:
    r"""DebCSE's sampler: for each sentence, a positive and a hard negative drawn from its nearest neighbours
    under a frozen reference encoder, with inverse-propensity weights over surface strata (see the module
    docstring for the formulas).

    The reference embeddings, candidate pools and propensity tables are computed once here; [`sample`] then
    draws as many seeded datasets as wanted.

    Args:
        sentences (`list[str]` or `datasets.Dataset`):
            The corpus (each sentence is an anchor and a candidate for the others). Empty or whitespace-only
            sentences are refused.
        reference (`SentenceEncoder` or `Callable`):
            The frozen reference encoder: anything with `encode(texts)` (a [`SentenceEncoder`]), or a callable
            `texts -> [len(texts), dim]` embeddings. It is only used for inference, here.
        text_column (`str`, *optional*):
            The sentence column of a `datasets.Dataset` (default: `text` / `sentence` / `sentences`, or the
            only column).
        num_candidates (`int`, *optional*, defaults to 32):
            Nearest neighbours per anchor in the candidate pool; the corpus needs more sentences than this.
        positive_threshold (`float`, *optional*, defaults to 0.5):
            Smallest reference cosine of a positive; anchors without such a candidate are dropped (counted).
        false_negative_cutoff (`float`, *optional*, defaults to 0.9):
            The false-negative threshold: candidates with a reference cosine at or above it are never drawn as
            negatives (they likely mean the same as the anchor).
        selection_temperature (`float`, *optional*, defaults to 0.05):
            Temperature `t` of the naive similarity-ranked selection `softmax(s / t)` that the propensity
            describes and the draws start from.
        overlap_bins (`int`, *optional*, defaults to 5):
            Equal-width bins of the word overlap in [0, 1].
        length_bins (`int`, *optional*, defaults to 5):
            Equal-width bins of the relative length difference in [0, 1].
        smoothing (`float`, *optional*, defaults to 1.0):
            Pseudo-count per stratum added to the population and naive-selection counts (> 0).
        max_weight (`float`, *optional*, defaults to 10.0):
            Cap on the inverse-propensity weights (>= 1), which bounds the variance that rare strata add.
        population_pairs (`int`, *optional*, defaults to 20000):
            Random sentence pairs that estimate the surface distribution of all pairs; a corpus with fewer
            ordered pairs than this is counted exactly. The pairs are drawn with a fixed seed (0), so the
            propensity tables depend on the corpus and settings only.
        batch_size (`int`, *optional*, defaults to 64):
            Sentences per forward pass of the reference encoder.
        chunk_size (`int`, *optional*, defaults to 50000):
            Sentences scored at once in the exact neighbour search.
        show_progress_bar (`bool`, *optional*, defaults to `False`):
            Show the reference encoder's progress bar.

    Raises:
        `ValueError`: an empty corpus, blank sentences, fewer sentences than `num_candidates + 1`, settings
            out of range, NaN / infinite / all-zero reference embeddings.
        `TypeError`: sentences that are not strings, a reference that cannot embed texts.

    Attributes:
        sentences (`list[str]`): the corpus, in input order (indices in the diagnostics refer to it).
        embeddings (`torch.Tensor`): the L2-normalised reference embeddings (float64).
        pool ([`CandidatePool`]): every anchor's candidates with similarities, surface features and strata.
        duplicates_removed (`int`): verbatim copies left out of the pools, summed over anchors.
        propensity (`dict[str, PropensityTable]`): the propensity models of the `positive` and `negative`
            roles.
    """

    def __init__(
        self,
        sentences: Any,
        reference: Any,
        *,
        text_column: str | None = None,
        num_candidates: int = 32,
        positive_threshold: float = 0.5,
        false_negative_cutoff: float = 0.9,
        selection_temperature: float = 0.05,
        overlap_bins: int = 5,
        length_bins: int = 5,
        smoothing: float = 1.0,
        max_weight: float = 10.0,
        population_pairs: int = 20_000,
        batch_size: int = 64,
        chunk_size: int = 50_000,
        show_progress_bar: bool = False,
    ) -> None:
        self.num_candidates = _check_int("num_candidates", num_candidates, 2)
        self.positive_threshold = _check_float("positive_threshold", positive_threshold, -1.0, 1.0)
        self.false_negative_cutoff = _check_float(
            "false_negative_cutoff", false_negative_cutoff, -1.0, 1.0, open_low=True
        )
        self.selection_temperature = _check_float(
            "selection_temperature", selection_temperature, 0.0, math.inf, open_low=True
        )
        self.overlap_bins = _check_int("overlap_bins", overlap_bins, 1)
        self.length_bins = _check_int("length_bins", length_bins, 1)
        self.smoothing = _check_float("smoothing", smoothing, 0.0, math.inf, open_low=True)
        self.max_weight = _check_float("max_weight", max_weight, 1.0, math.inf)
        self.population_pairs = _check_int("population_pairs", population_pairs, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        chunk_size = _check_int("chunk_size", chunk_size, 1)
        if reference is None or not (callable(reference) or callable(getattr(reference, "encode", None))):
            raise TypeError(
                "reference must be a sentence encoder with encode(texts) (a SentenceEncoder) or a callable "
                f"texts -> embeddings, got {type(reference).__name__}."
            )

        self.sentences, self.text_column = _read_sentences(sentences, text_column)
        n = len(self.sentences)
        if n < self.num_candidates + 1:
            raise ValueError(
                f"num_candidates={self.num_candidates} needs at least {self.num_candidates + 1} sentences "
                f"(each anchor's pool is drawn from the others), got {n}. Lower num_candidates or give more "
                "sentences."
            )
        keys = [" ".join(t.lower().split()) for t in self.sentences]
        if len(set(keys)) < 3:
            raise ValueError(
                f"The corpus has {len(set(keys))} distinct sentence(s); an anchor, a positive and a negative "
                "need at least 3."
            )
        self._words = [words(t) for t in self.sentences]
        self._word_sets = [frozenset(w) for w in self._words]
        self._lengths = np.array([len(w) for w in self._words], dtype=np.int64)

        emb = encode_texts(
            reference,
            self.sentences,
            role="documents",
            batch_size=batch_size,
            prompt=None,
            show_progress_bar=show_progress_bar,
        )
        check_embeddings(emb, what="sentences")
        self.embeddings = F.normalize(emb.to(torch.float64), dim=-1)
        self.pool, self.duplicates_removed = self._build_pool(keys, chunk_size)
        self.population = self._population()
        self.eligible = {
            "positive": self.pool.similarity >= self.positive_threshold,
            "negative": self.pool.similarity < self.false_negative_cutoff,
        }
        self.naive = {
            role: _softmax_rows(
                self.pool.similarity, self.eligible[role], self.pool.offsets, self.selection_temperature
            )
            for role in ROLES
        }
        self.propensity = {role: self._propensity(role) for role in ROLES}

    # -- construction ----------------------------------------------------------------------------------

    @property
    def num_strata(self) -> int:
        """`overlap_bins * length_bins`."""
        return self.overlap_bins * self.length_bins

    def _strata(self, overlap: np.ndarray, length_difference: np.ndarray) -> np.ndarray:
        return _bin(overlap, self.overlap_bins) * self.length_bins + _bin(length_difference, self.length_bins)

    def _pair_features(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sets = self._word_sets
        overlap = np.array([jaccard_overlap(sets[i], sets[j]) for i, j in zip(a.tolist(), b.tolist())])
        la, lb = self._lengths[a], self._lengths[b]
        top = np.maximum(la, lb)
        lendiff = np.where(top > 0, np.abs(la - lb) / np.maximum(top, 1), 0.0)
        return overlap.astype(np.float64), lendiff.astype(np.float64)

    def _build_pool(self, keys: list[str], chunk_size: int) -> tuple[CandidatePool, int]:
        n = len(self.sentences)
        emb32 = self.embeddings.to(torch.float32)
        k = min(n, self.num_candidates + 1)
        _, idx = topk_chunked(emb32, emb32, k, chunk_size)
        idx_l = idx.tolist()
        # Verbatim copies (same words, case and spacing aside) would be the SimCSE positive again, or a false
        # negative: they are removed; their count is reported.
        copies: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            copies.setdefault(key, []).append(i)
        removed = 0
        offsets = [0]
        anchors: list[int] = []
        cands: list[int] = []
        for i in range(n):
            same = copies[keys[i]]
            row = [j for j in idx_l[i] if j != i]
            if len(same) > 1:
                same_set = set(same)
                kept = [j for j in row if j not in same_set]
                if len(kept) < self.num_candidates:  # refill past the copies
                    extra = self.num_candidates + len(same)
                    _, more = topk_chunked(emb32[i : i + 1], emb32, min(n, extra), chunk_size)
                    kept = [j for j in more[0].tolist() if j != i and j not in same_set]
                removed += len(same) - 1
                row = kept
            row = row[: self.num_candidates]
            anchors.extend([i] * len(row))
            cands.extend(row)
            offsets.append(len(cands))
        a = np.array(anchors, dtype=np.int64)
        c = np.array(cands, dtype=np.int64)
        sim = (self.embeddings[a] * self.embeddings[c]).sum(dim=-1).numpy()
        # Sorted by decreasing similarity, ties by index, whatever order topk returned.
        order = np.lexsort((c, -sim, a))
        a, c, sim = a[order], c[order], sim[order]
        overlap, lendiff = self._pair_features(a, c)
        pool = CandidatePool(
            offsets=np.array(offsets, dtype=np.int64),
            candidate=c,
            similarity=sim,
            overlap=overlap,
            length_difference=lendiff,
            stratum=self._strata(overlap, lendiff),
        )
        return pool, removed

    def _population(self) -> np.ndarray:
        """Smoothed share `P_all(b)` of all ordered sentence pairs in each surface stratum."""
        n = len(self.sentences)
        total = n * (n - 1)
        if total <= self.population_pairs:
            a, b = np.nonzero(~np.eye(n, dtype=bool))
        else:
            rng = np.random.default_rng(0)
            a = rng.integers(0, n, self.population_pairs)
            b = (a + rng.integers(1, n, self.population_pairs)) % n  # any sentence but a itself
        overlap, lendiff = self._pair_features(a, b)
        counts = np.bincount(self._strata(overlap, lendiff), minlength=self.num_strata).astype(np.float64)
        return (counts + self.smoothing) / (counts.sum() + self.smoothing * self.num_strata)

    def _propensity(self, role: str) -> PropensityTable:
        mask = self.eligible[role]
        pi = self.naive[role]
        anchor_of_row = np.repeat(np.arange(len(self.pool.offsets) - 1), np.diff(self.pool.offsets))
        anchors = int(len(np.unique(anchor_of_row[mask])))
        mass = np.bincount(self.pool.stratum, weights=pi, minlength=self.num_strata)
        pseudo = self.smoothing * self.num_strata
        naive = (mass + pseudo * self.population) / (anchors + pseudo)
        propensity = naive / self.population
        weights = np.minimum(1.0 / propensity, self.max_weight)
        shape = (self.overlap_bins, self.length_bins)
        return PropensityTable(
            role=role,
            population=self.population.reshape(shape),
            naive=naive.reshape(shape),
            propensity=propensity.reshape(shape),
            weights=weights.reshape(shape),
            anchors=anchors,
        )

    # -- drawing ---------------------------------------------------------------------------------------

    def _choices(
        self, anchor: int, role: str, debias: bool, positive_row: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows `anchor` may draw for `role`, and their unnormalised draw weights `pi * w` (or `pi`)."""
        rows = self.pool.rows(anchor)
        mask = self.eligible[role][rows].copy()
        if role == "negative":
            assert positive_row is not None
            mask &= self.pool.similarity[rows] < self.pool.similarity[positive_row]
            mask[positive_row - rows.start] = False
        ok = np.flatnonzero(mask)
        q = self.naive[role][rows][ok]
        if debias:
            q = q * self.propensity[role].weights.reshape(-1)[self.pool.stratum[rows][ok]]
        return rows.start + ok, q

    def _draw_anchor(self, i: int, seed: int, debias: bool) -> tuple[int, int] | str:
        """(positive row, negative row) in the pool for anchor `i`, or the reason it is dropped."""
        u_pos, u_neg = np.random.default_rng([int(seed), int(i)]).random(2)
        rows, q = self._choices(i, "positive", debias)
        if len(rows) == 0:
            return "no_positive"
        p = int(rows[_pick(q, u_pos)])
        rows, q = self._choices(i, "negative", debias, positive_row=p)
        if len(rows) == 0:
            return "no_negative"
        return p, int(rows[_pick(q, u_neg)])

    def _check_anchor(self, anchor: Any) -> int:
        n = len(self.sentences)
        if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) or not 0 <= anchor < n:
            raise IndexError(f"anchor must be a sentence index in [0, {n}), got {anchor!r}.")
        return int(anchor)

    def selection_probabilities(
        self, anchor: int, role: str = "positive", *, positive: int | None = None, debias: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The candidates `anchor` may draw for `role` and the probability of each, as [`draw`] uses them.

        Args:
            anchor (`int`):
                Corpus index of the anchor.
            role (`str`, *optional*, defaults to `"positive"`):
                `"positive"` or `"negative"`.
            positive (`int`, *optional*):
                For `role="negative"`: corpus index of the drawn positive (one of the anchor's candidates at
                or above `positive_threshold`); the negatives are the candidates below the false-negative
                threshold and below its similarity.
            debias (`bool`, *optional*, defaults to `True`):
                With the inverse-propensity weights (`pi * w`, normalised), or without (`pi`).

        Returns:
            `tuple[np.ndarray, np.ndarray]`: corpus indices of the eligible candidates (by decreasing
            similarity) and their probabilities (summing to 1; both empty when none is eligible).
        """
        anchor = self._check_anchor(anchor)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        positive_row = None
        if role == "negative":
            rows = self.pool.rows(anchor)
            hits = np.flatnonzero(self.pool.candidate[rows] == positive) if positive is not None else []
            if len(hits) == 0 or not self.eligible["positive"][rows.start + int(hits[0])]:
                raise ValueError(
                    f"positive={positive!r} is not an eligible positive of anchor {anchor} (a candidate at "
                    f"cosine >= {self.positive_threshold}); role='negative' needs the drawn positive."
                )
            positive_row = rows.start + int(hits[0])
        rows, q = self._choices(anchor, role, debias, positive_row=positive_row)
        return self.pool.candidate[rows], (q / q.sum() if len(q) else q)

    def draw_pair(self, anchor: int, seed: int = 0, debias: bool = True) -> tuple[int, int] | None:
        """The (positive, negative) corpus indices drawn for one anchor, as in [`draw`] with the same `seed`.

        Args:
            anchor (`int`):
                Corpus index of the anchor.
            seed (`int`, *optional*, defaults to 0):
                Seed of the draw.
            debias (`bool`, *optional*, defaults to `True`):
                Apply the inverse-propensity weights.

        Returns:
            `tuple[int, int]` or `None`: `None` when the anchor is dropped (no eligible positive or negative).
        """
        anchor = self._check_anchor(anchor)
        out = self._draw_anchor(anchor, _check_int("seed", seed, 0), debias)
        if isinstance(out, str):
            return None
        return int(self.pool.candidate[out[0]]), int(self.pool.candidate[out[1]])

    def _draw_rows(
        self, order: list[int], seed: int, debias: bool
    ) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
        kept: list[tuple[int, int, int]] = []
        dropped = {"no_positive": 0, "no_negative": 0}
        for i in order:
            out = self._draw_anchor(i, seed, debias)
            if isinstance(out, str):
                dropped[out] += 1
            else:
                kept.append((i, *out))
        total = sum(dropped.values())
        if total:
            log = logger.warning if 2 * total > len(order) else logger.info
            log(
                "DebCSE sampler dropped %d of %d anchors: %d without a candidate at cosine >= %.3f "
                "(positive_threshold), %d without a negative below both %.3f (false_negative_cutoff) and "
                "their positive's similarity.",
                total,
                len(order),
                dropped["no_positive"],
                self.positive_threshold,
                dropped["no_negative"],
                self.false_negative_cutoff,
            )
        return kept, dropped

    def draw(
        self, seed: int = 0, debias: bool = True, anchors: Sequence[int] | None = None
    ) -> DebiasedSample:
        """Draw a positive and a hard negative for every anchor (or the given ones), with their diagnostics.

        Args:
            seed (`int`, *optional*, defaults to 0):
                Seed of the draws (a non-negative integer); the same seed gives the same sample.
            debias (`bool`, *optional*, defaults to `True`):
                Apply the inverse-propensity weights; `False` draws from the naive similarity-ranked selection
                (the biased baseline the propensity describes).
            anchors (`Sequence[int]`, *optional*):
                Corpus indices of the anchors to draw for (default: all, in corpus order).

        Returns:
            [`DebiasedSample`]: the dataset and, per row, the indices, similarities and surface features.
        """
        seed = _check_int("seed", seed, 0)
        n = len(self.sentences)
        order = list(range(n)) if anchors is None else [int(a) for a in anchors]
        bad = [a for a in order if not 0 <= a < n]
        if bad:
            raise IndexError(f"anchor index {bad[0]} is outside the corpus of {n} sentences.")
        kept, dropped = self._draw_rows(order, seed, debias)
        if not kept and order and anchors is None:
            raise ValueError(
                f"No anchor of {len(order)} got both a positive and a negative (dropped: {dropped}). Lower "
                "positive_threshold, raise false_negative_cutoff or num_candidates, or give more sentences."
            )
        rows = np.array(kept, dtype=np.int64).reshape(-1, 3)
        pos_rows, neg_rows = rows[:, 1], rows[:, 2]
        pool, texts = self.pool, self.sentences
        anchor_index = rows[:, 0]
        positive_index = pool.candidate[pos_rows]
        negative_index = pool.candidate[neg_rows]
        dataset = Dataset.from_dict(
            {
                "anchor": [texts[i] for i in anchor_index.tolist()],
                "positive": [texts[i] for i in positive_index.tolist()],
                "negative": [texts[i] for i in negative_index.tolist()],
            }
        )
        return DebiasedSample(
            dataset=dataset,
            anchor_index=anchor_index,
            positive_index=positive_index,
            negative_index=negative_index,
            positive_similarity=pool.similarity[pos_rows],
            negative_similarity=pool.similarity[neg_rows],
            positive_overlap=pool.overlap[pos_rows],
            negative_overlap=pool.overlap[neg_rows],
            positive_length_difference=pool.length_difference[pos_rows],
            negative_length_difference=pool.length_difference[neg_rows],
            dropped=dropped,
            seed=seed,
            debiased=debias,
        )

    def sample(self, seed: int = 0, debias: bool = True) -> Any:
        """The training set of one seeded draw: a `datasets.Dataset` with `anchor`, `positive`, `negative`.

        Args:
            seed (`int`, *optional*, defaults to 0):
                Seed of the draws; the same seed gives the same dataset.
            debias (`bool`, *optional*, defaults to `True`):
                Apply the inverse-propensity weights (`False`: naive similarity-ranked selection).
        """
        return self.draw(seed=seed, debias=debias).dataset

    def map_function(
        self, seed: int = 0, debias: bool = True
    ) -> Callable[[dict[str, list], list[int]], dict]:
        """A function for `Dataset.map(fn, batched=True, with_indices=True, remove_columns=...)` over the
        dataset the sampler was built from (for a list of sentences,
        `Dataset.from_dict({"text": sentences})`); it gives the rows of [`sample`] with the same `seed`,
        whatever the batch size.

        Args:
            seed (`int`, *optional*, defaults to 0):
                Seed of the draws.
            debias (`bool`, *optional*, defaults to `True`):
                Apply the inverse-propensity weights.

        Returns:
            `Callable`: `fn(batch, indices) -> {"anchor": [...], "positive": [...], "negative": [...]}`; it
            refuses rows whose text differs from the sampler's sentence at that index.
        """
        seed = _check_int("seed", seed, 0)
        column = self.text_column

        def fn(batch: dict[str, list], indices: list[int]) -> dict[str, list[str]]:
            if column not in batch:
                raise ValueError(
                    f"The mapped dataset has no {column!r} column (found {sorted(batch)}); map over the "
                    "dataset the sampler was built from."
                )
            for text, i in zip(batch[column], indices):
                if not 0 <= i < len(self.sentences) or text != self.sentences[i]:
                    raise ValueError(
                        f"Row {i} of the mapped dataset is not the sampler's sentence {i}; map over the "
                        "dataset the sampler was built from, unshuffled and unfiltered."
                    )
            kept, _ = self._draw_rows([int(i) for i in indices], seed, debias)
            texts, candidate = self.sentences, self.pool.candidate
            return {
                "anchor": [texts[a] for a, _, _ in kept],
                "positive": [texts[candidate[p]] for _, p, _ in kept],
                "negative": [texts[candidate[q]] for _, _, q in kept],
            }

        return fn

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sentences={len(self.sentences)}, num_candidates={self.num_candidates}, "
            f"positive_threshold={self.positive_threshold}, "
            f"false_negative_cutoff={self.false_negative_cutoff}, "
            f"selection_temperature={self.selection_temperature}, "
            f"strata={self.overlap_bins}x{self.length_bins}, "
            f"max_weight={self.max_weight})"
        )
