"""Positive-pair builders for unsupervised retrieval pre-training.

Three ways to make (anchor, positive) pairs from raw documents, without labels:

- [`random_crop_pairs`] (Contriever, Izacard et al. 2022): two *independent* random spans of
  the same document, each covering a fraction of it drawn uniformly from `ratio_range` (0.1-0.5
  in the paper), each then thinned by random word deletion (probability 0.1).
- [`inverse_cloze_pairs`] (ICT, Lee et al. 2019): a sentence is the query, the passage around
  it is the document; the sentence is removed from its context with probability `remove_prob`
  (0.9 in the paper) so that the model learns more than word overlap.
- [`context_window_pairs`] (CCP, Wu et al. 2022): two sentences of the same document that lie
  within `window` sentences of each other.

Every builder is deterministic under its `seed`: the pairs of document `i` depend only on
`(seed, i)` (each row draws from its own generator), so the output does not change with the
number of processes, the order of calls or a resumed run. The unit of cropping is the word
(whitespace-separated), which keeps the builders independent of the tokenizer; cap the crop
length with `max_words` (the trainer's `max_seq_length` truncates what remains).

Each builder returns a [`datasets.Dataset`] with `anchor` and `positive` columns (plus
`doc_index`), ready for [`hf_contrastive.ContrastiveTrainer`].
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

__all__ = [
    "context_window_pairs",
    "inverse_cloze_pairs",
    "random_crop",
    "random_crop_pairs",
    "split_sentences",
    "word_deletion",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def _row_rng(seed: int, index: int, salt: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(f"{salt}:{int(seed)}:{int(index)}")


def _check_texts(texts: Any, owner: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{owner}: texts must be a sequence of strings, got {type(texts).__name__}.")
    if len(texts) == 0:
        raise ValueError(f"{owner}: got no texts.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{owner}: texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}.")
    return list(texts)


def _check_ratio_range(ratio_range: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(r) for r in ratio_range)
    except (TypeError, ValueError):
        raise ValueError(f"ratio_range must be two numbers (min, max), got {ratio_range!r}.") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"ratio_range must satisfy 0 < min <= max <= 1, got ({lo}, {hi}).")
    return lo, hi


def _check_prob(name: str, p: float) -> float:
    if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}.")
    return float(p)


def random_crop(
    words: Sequence[str],
    ratio_range: Sequence[float] = (0.1, 0.5),
    rng: random.Random | None = None,
    max_words: int | None = None,
) -> list[str]:
    """A contiguous span covering `ratio * len(words)` words, `ratio ~ U(ratio_range)`.

    At least one word is kept (for a non-empty input); `max_words` caps the span length. The
    start is uniform over the positions where the span fits (Contriever's `randomcrop`).
    """
    lo, hi = _check_ratio_range(ratio_range)
    rng = rng or random.Random()
    n = len(words)
    if n == 0:
        return []
    length = max(1, int(n * rng.uniform(lo, hi)))
    if max_words is not None:
        length = min(length, int(max_words))
    start = rng.randint(0, n - length)
    return list(words[start : start + length])


def word_deletion(words: Sequence[str], prob: float = 0.1, rng: random.Random | None = None) -> list[str]:
    """Drop each word independently with probability `prob`; one word is always kept."""
    prob = _check_prob("deletion_prob", prob)
    rng = rng or random.Random()
    if prob == 0.0 or len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() >= prob]
    return kept if kept else [words[rng.randrange(len(words))]]


def random_crop_pairs(
    texts: Sequence[str],
    ratio_range: Sequence[float] = (0.1, 0.5),
    deletion_prob: float = 0.1,
    pairs_per_text: int = 1,
    max_words: int | None = None,
    min_words: int = 2,
    seed: int = 0,
):
    """Contriever's positive pairs: two independent random crops of each document.

    Args:
        texts (`Sequence[str]`): the documents.
        ratio_range (`Sequence[float]`, *optional*, defaults to `(0.1, 0.5)`): `(min, max)` fraction of the document each crop covers (0.1, 0.5 as the paper).
        deletion_prob (`float`, *optional*, defaults to `0.1`): word-deletion probability applied to each crop (0.1 as the paper; 0 disables).
        pairs_per_text (`int`, *optional*, defaults to `1`): pairs drawn per document (e.g. one per planned epoch).
        max_words (`int | None`, *optional*): cap on each crop's length in words (after the ratio is applied).
        min_words (`int`, *optional*, defaults to `2`): documents with fewer words are skipped (a crop of one word says little).
        seed (`int`, *optional*, defaults to `0`): the pairs of document `i` depend only on `(seed, i)`.

    Returns:
        `datasets.Dataset` with columns `anchor`, `positive`, `doc_index`.
    """

    texts = _check_texts(texts, "random_crop_pairs")
    _check_ratio_range(ratio_range)
    _check_prob("deletion_prob", deletion_prob)
    if int(pairs_per_text) < 1:
        raise ValueError(f"pairs_per_text must be >= 1, got {pairs_per_text!r}.")
    if max_words is not None and int(max_words) < 1:
        raise ValueError(f"max_words must be >= 1 or None, got {max_words!r}.")
    rows: dict[str, list] = {"anchor": [], "positive": [], "doc_index": []}
    for i, text in enumerate(texts):
        words = text.split()
        if len(words) < max(int(min_words), 1):
            continue
        rng = _row_rng(seed, i, "crop")
        for _ in range(int(pairs_per_text)):
            views = [
                word_deletion(random_crop(words, ratio_range, rng, max_words), deletion_prob, rng)
                for _ in range(2)
            ]
            rows["anchor"].append(" ".join(views[0]))
            rows["positive"].append(" ".join(views[1]))
            rows["doc_index"].append(i)
    if not rows["anchor"]:
        raise ValueError(f"random_crop_pairs: no document has at least min_words={min_words} words.")
    return Dataset.from_dict(rows)


def split_sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by a capital/digit/quote (no extra dependency)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _sentence_lists(texts: Sequence[str] | Sequence[Sequence[str]], owner: str) -> list[list[str]]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"{owner}: expected a non-empty list of documents, got {type(texts).__name__}.")
    out = []
    for i, doc in enumerate(texts):
        if isinstance(doc, str):
            out.append(split_sentences(doc))
        elif isinstance(doc, Sequence) and all(isinstance(s, str) for s in doc):
            out.append([s.strip() for s in doc if s.strip()])
        else:
            raise TypeError(
                f"{owner}: document {i} must be a string or a list of sentences, got {type(doc).__name__}."
            )
    return out


def inverse_cloze_pairs(
    texts: Sequence[str] | Sequence[Sequence[str]],
    remove_prob: float = 0.9,
    pairs_per_text: int = 1,
    context_sentences: int | None = None,
    seed: int = 0,
):
    """Inverse Cloze Task pairs (Lee et al. 2019): a random sentence and the passage around it.

    Args:
        texts (`Sequence[str] | Sequence[Sequence[str]]`): documents, as strings (split by [`split_sentences`]) or lists of sentences.
        remove_prob (`float`, *optional*, defaults to `0.9`): probability that the query sentence is removed from its context (0.9, as the paper).
        pairs_per_text (`int`, *optional*, defaults to `1`): pairs drawn per document (different query sentences when possible).
        context_sentences (`int | None`, *optional*): keep at most this many sentences on each side of the query (`None`: all).
        seed (`int`, *optional*, defaults to `0`): the pairs of document `i` depend only on `(seed, i)`.

    Returns:
        `datasets.Dataset` with `anchor` (the sentence), `positive` (the context), `doc_index`.
        Documents with fewer than two sentences are skipped.
    """

    if not (isinstance(remove_prob, (int, float)) and 0.0 <= remove_prob <= 1.0):
        raise ValueError(f"remove_prob must be in [0, 1], got {remove_prob!r}.")
    if int(pairs_per_text) < 1:
        raise ValueError(f"pairs_per_text must be >= 1, got {pairs_per_text!r}.")
    docs = _sentence_lists(texts, "inverse_cloze_pairs")
    rows: dict[str, list] = {"anchor": [], "positive": [], "doc_index": []}
    for i, sents in enumerate(docs):
        if len(sents) < 2:
            continue
        rng = _row_rng(seed, i, "ict")
        order = list(range(len(sents)))
        rng.shuffle(order)
        for k in range(int(pairs_per_text)):
            q = order[k % len(order)]
            lo = 0 if context_sentences is None else max(0, q - int(context_sentences))
            hi = len(sents) if context_sentences is None else min(len(sents), q + int(context_sentences) + 1)
            remove = rng.random() < remove_prob
            context = [s for j, s in enumerate(sents[lo:hi], start=lo) if not (remove and j == q)]
            rows["anchor"].append(sents[q])
            rows["positive"].append(" ".join(context))
            rows["doc_index"].append(i)
    if not rows["anchor"]:
        raise ValueError("inverse_cloze_pairs: no document has two sentences or more.")
    return Dataset.from_dict(rows)


def context_window_pairs(
    texts: Sequence[str] | Sequence[Sequence[str]],
    window: int = 2,
    pairs_per_text: int = 1,
    seed: int = 0,
):
    """Contrastive Context Prediction pairs (Wu et al. 2022): two sentences at most `window` apart.

    For each pair a centre sentence is drawn uniformly, then a different sentence whose distance to
    it is in `[1, window]`. Documents with fewer than two sentences are skipped.

    Returns:
        `datasets.Dataset` with `anchor`, `positive`, `doc_index`.
    """

    if int(window) < 1:
        raise ValueError(f"window must be >= 1 sentence, got {window!r}.")
    if int(pairs_per_text) < 1:
        raise ValueError(f"pairs_per_text must be >= 1, got {pairs_per_text!r}.")
    docs = _sentence_lists(texts, "context_window_pairs")
    rows: dict[str, list] = {"anchor": [], "positive": [], "doc_index": []}
    for i, sents in enumerate(docs):
        n = len(sents)
        if n < 2:
            continue
        rng = _row_rng(seed, i, "ccp")
        for _ in range(int(pairs_per_text)):
            c = rng.randrange(n)
            near = [j for j in range(max(0, c - int(window)), min(n, c + int(window) + 1)) if j != c]
            rows["anchor"].append(sents[c])
            rows["positive"].append(sents[rng.choice(near)])
            rows["doc_index"].append(i)
    if not rows["anchor"]:
        raise ValueError("context_window_pairs: no document has two sentences or more.")
    return Dataset.from_dict(rows)
