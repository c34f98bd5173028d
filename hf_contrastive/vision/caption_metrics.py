"""Caption metrics of the COCO evaluation: CIDEr-D (Vedantam et al. 2015) and corpus BLEU (Papineni et al. 2002).

Both follow the COCO caption evaluation code (`pycocoevalcap`, the scorers behind every published COCO
captioning figure) given the same token strings, and return numbers on its scale (CIDEr-D around 1 for a good
captioner: papers print it x100). They are pure Python and need no Java.

What differs from `pycocoevalcap` is only the tokenizer in front. COCO runs the Stanford PTB tokenizer (a Java
program) and then drops punctuation tokens; here [`tokenize_caption`] lower-cases the text and keeps runs of
letters and digits, with an apostrophe suffix kept on its word ("man's", "don't"); every other character
(punctuation, hyphens, slashes) separates tokens and is dropped. PTB would split "man's" into "man 's", so
figures on captions with possessives can differ slightly from those of the COCO server. Pass `tokenizer=None`
to score strings that are already tokenised (split on whitespace), for instance the output of the PTB
tokenizer.

Degenerate cases are explicit: BLEU is 0 when a candidate set has no matching n-gram of some order (the COCO
code returns a tiny positive number there, from the epsilons it adds to avoid a division by zero).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = [
    "bleu",
    "caption_metrics",
    "cider_d",
    "cider_d_scores",
    "tokenize_caption",
]

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

Tokenizer = Callable[[str], list[str]]


def tokenize_caption(text: str) -> list[str]:
    """Lower-cased word tokens of a caption, punctuation dropped.

    A token is a run of letters and digits (any script), with apostrophe parts kept attached: `"A man's
    bike, parked."` gives `["a", "man's", "bike", "parked"]`.

    Args:
        text (`str`): the caption.
    """
    if not isinstance(text, str):
        raise TypeError(f"A caption must be a string, got {type(text).__name__}.")
    return _TOKEN.findall(text.lower())


def _split(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"A caption must be a string, got {type(text).__name__}.")
    return text.split()


def _prepare(
    candidates: Sequence[str], references: Sequence[Sequence[str]], tokenizer: Tokenizer | None
) -> tuple[list[list[str]], list[list[list[str]]]]:
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise TypeError("candidates must be a sequence of strings (one caption per image).")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(
            "references must be a sequence of lists of strings (the reference captions per image)."
        )
    if len(candidates) != len(references):
        raise ValueError(
            f"{len(candidates)} candidates but {len(references)} reference lists: one list per candidate."
        )
    if not candidates:
        raise ValueError("No candidates to score.")
    tok = tokenizer if tokenizer is not None else _split
    cands, refs = [], []
    for i, (cand, ref) in enumerate(zip(candidates, references)):
        if isinstance(ref, str) or not isinstance(ref, Sequence) or len(ref) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {ref!r:.80}.")
        cands.append(list(tok(cand)))
        refs.append([list(tok(r)) for r in ref])
    return cands, refs


def _ngrams(tokens: list[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


# -- CIDEr-D ---------------------------------------------------------------------------------------------------


def _tfidf(counts: Counter, df: dict[tuple[str, ...], float], log_docs: float, n: int):
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norms = [0.0] * n
    for gram, tf in counts.items():
        k = len(gram) - 1
        weight = float(tf) * (log_docs - math.log(max(1.0, df.get(gram, 0.0))))
        vec[k][gram] = weight
        norms[k] += weight * weight
    return vec, [math.sqrt(v) for v in norms]


def cider_d_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer | None = tokenize_caption,
) -> list[float]:
    r"""CIDEr-D of each candidate against its references (the COCO definition).

    For n-gram orders 1..`n`, each sentence becomes a tf-idf vector `g(s)`: term frequency times
    `log(|I|) - log(max(1, df))`, with `df` the number of images whose references contain the n-gram and `|I|`
    the number of images of the evaluated set (document frequencies come from the references only). The score
    of a candidate `c` with references `S` is

    `10 / n * sum_k 1/|S| * sum_{s in S} exp(-(l_c - l_s)^2 / (2 sigma^2)) * (min(g_k(c), g_k(s)) . g_k(s)) /
    (||g_k(c)|| ||g_k(s)||)`

    (the minimum clips the candidate's weights, so repeating an n-gram does not pay). The length `l` is counted
    as the COCO code counts it, in bigrams: `words - 1`, so the difference is the word-count difference unless a
    sentence has fewer than two words.

    Args:
        candidates (`Sequence[str]`): one generated caption per image.
        references (`Sequence[Sequence[str]]`): the reference captions of each image.
        n (`int`, *optional*, defaults to `4`): highest n-gram order.
        sigma (`float`, *optional*, defaults to `6.0`): width of the Gaussian length penalty.
        tokenizer (`Callable[[str], list[str]]`, *optional*, defaults to [`tokenize_caption`]): `None` splits on
            whitespace (for pre-tokenised strings).

    Returns:
        `list[float]`: one score per candidate (their mean is [`cider_d`]).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    cands, refs = _prepare(candidates, references, tokenizer)
    cand_counts = [_ngrams(c, n) for c in cands]
    ref_counts = [[_ngrams(r, n) for r in rs] for rs in refs]
    df: dict[tuple[str, ...], float] = Counter()
    for rs in ref_counts:
        for gram in set().union(*rs):
            df[gram] += 1.0
    log_docs = math.log(float(len(cands)))

    def length(counts: Counter) -> int:
        return sum(tf for gram, tf in counts.items() if len(gram) == 2) if n >= 2 else 0

    scores = []
    for cc, rcs in zip(cand_counts, ref_counts):
        vec_c, norm_c = _tfidf(cc, df, log_docs, n)
        len_c = length(cc)
        total = [0.0] * n
        for rc in rcs:
            vec_r, norm_r = _tfidf(rc, df, log_docs, n)
            penalty = math.exp(-((len_c - length(rc)) ** 2) / (2.0 * sigma**2))
            for k in range(n):
                dot = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_c[k].items())
                if norm_c[k] != 0 and norm_r[k] != 0:
                    dot /= norm_c[k] * norm_r[k]
                total[k] += dot * penalty
        scores.append(10.0 * (sum(total) / n) / len(rcs))
    return scores


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer | None = tokenize_caption,
) -> float:
    """Corpus CIDEr-D: the mean of [`cider_d_scores`] (the figure COCO reports, x100 in papers).

    Args:
        candidates (`Sequence[str]`): one generated caption per image.
        references (`Sequence[Sequence[str]]`): the reference captions of each image.
        n (`int`, *optional*, defaults to `4`): highest n-gram order.
        sigma (`float`, *optional*, defaults to `6.0`): width of the Gaussian length penalty.
        tokenizer (`Callable[[str], list[str]]`, *optional*, defaults to [`tokenize_caption`]): `None` splits on
            whitespace.
    """
    scores = cider_d_scores(candidates, references, n=n, sigma=sigma, tokenizer=tokenizer)
    return sum(scores) / len(scores)


# -- BLEU ------------------------------------------------------------------------------------------------------


def bleu(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    tokenizer: Tokenizer | None = tokenize_caption,
) -> list[float]:
    r"""Corpus BLEU-1..`max_n` with the brevity penalty, as the COCO evaluation computes it.

    Clipped n-gram matches (each candidate n-gram counts at most as often as in the reference where it is most
    frequent) and candidate n-gram counts are summed over the corpus; BLEU-k is the geometric mean of the
    precisions of orders 1..k times `exp(1 - r/c)` when the candidate length `c` is below the reference length
    `r`. `r` sums, over candidates, the reference length closest to the candidate's (the shorter one on a tie).

    Args:
        candidates (`Sequence[str]`): one generated caption per image.
        references (`Sequence[Sequence[str]]`): the reference captions of each image.
        max_n (`int`, *optional*, defaults to `4`): highest order.
        tokenizer (`Callable[[str], list[str]]`, *optional*, defaults to [`tokenize_caption`]): `None` splits on
            whitespace.

    Returns:
        `list[float]`: `[BLEU-1, ..., BLEU-max_n]`, each in `[0, 1]`.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}.")
    cands, refs = _prepare(candidates, references, tokenizer)
    correct = [0] * max_n
    guess = [0] * max_n
    cand_len = ref_len = 0
    for cand, rs in zip(cands, refs):
        counts = _ngrams(cand, max_n)
        best: dict[tuple[str, ...], int] = {}
        for r in rs:
            for gram, c in _ngrams(r, max_n).items():
                best[gram] = max(best.get(gram, 0), c)
        for gram, c in counts.items():
            correct[len(gram) - 1] += min(c, best.get(gram, 0))
        for k in range(max_n):
            guess[k] += max(0, len(cand) - k)
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in rs)[1]
    penalty = 1.0
    if cand_len < ref_len:
        penalty = math.exp(1.0 - ref_len / cand_len) if cand_len > 0 else 0.0
    out = []
    log_sum = 0.0
    for k in range(max_n):
        if correct[k] == 0 or guess[k] == 0:
            out.extend([0.0] * (max_n - k))
            break
        log_sum += math.log(correct[k] / guess[k])
        out.append(math.exp(log_sum / (k + 1)) * penalty)
    return out


def caption_metrics(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: Tokenizer | None = tokenize_caption,
) -> dict[str, float]:
    """CIDEr-D and BLEU-1..4 of a set of captions: `{"cider_d", "bleu_1", ..., "bleu_4"}` (COCO scale).

    Args:
        candidates (`Sequence[str]`): one generated caption per image.
        references (`Sequence[Sequence[str]]`): the reference captions of each image.
        tokenizer (`Callable[[str], list[str]]`, *optional*, defaults to [`tokenize_caption`]): `None` splits on
            whitespace.
    """
    out = {"cider_d": cider_d(candidates, references, tokenizer=tokenizer)}
    for k, value in enumerate(bleu(candidates, references, 4, tokenizer=tokenizer), start=1):
        out[f"bleu_{k}"] = value
    return out
