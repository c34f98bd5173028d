"""Labelled sentence pairs from two domains of the benchmark data, for mixture-of-experts experiments.

The split ([`domain_pair_splits`]) has two domains, each with its own train / dev / test pairs:

- `paraphrase`: the Microsoft Research Paraphrase Corpus (`paraphrase/mrpc/msr-para-{train,val,test}.tsv`,
  news sentences); a pair is a match when annotators judged it a paraphrase (`Quality` 1). Its train, val and
  test files are the train / dev / test splits as released (3576 / 500 / 1725 pairs).
- `sts`: the STS Benchmark (`sts/stsbenchmark/sts-{train,dev,test}.csv`: captions, news, forums); a pair is
  a match when its similarity score is >= 4.0 (of 5) and a non-match when it is <= 2.0. Pairs in between are
  left out (counted and logged), as neither label fits them.

The two sources overlap: STS-B's news pairs include MRPC pairs, and STS-B repeats a few pairs across its own
splits. A text pair (in either order, of either domain) found in a later split is left out of the earlier
ones (train < dev < test; 311 train and 54 dev pairs with the default bounds, logged), so no pair is both
trained on and evaluated on, and no dev pair is a test pair. A pair may appear in both domains of one split.

Training uses the matching pairs of the train split only ([`positive_pairs`]), as in-batch-negative training
needs no negatives; dev pairs choose decision thresholds and the test pairs are scored once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_contrastive.core.data.benchmarks import load_mrpc, load_sts_benchmark
from hf_contrastive.core.utils import data_dir

__all__ = [
    "DOMAIN_SPLITS",
    "DomainPair",
    "domain_pair_splits",
    "mrpc_pairs",
    "positive_pairs",
    "sts_pairs",
]

logger = logging.getLogger(__name__)

DOMAIN_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class DomainPair:
    """A labelled sentence pair of one domain.

    Args:
        sentence1 (`str`): first text.
        sentence2 (`str`): second text.
        label (`int`): 1 when the two texts match (paraphrase, high similarity), 0 otherwise.
        domain (`str`): the domain the pair comes from (routes a mixture-of-experts encoder).
    """

    sentence1: str
    sentence2: str
    label: int
    domain: str


def _check_split(split: str) -> None:
    if split not in DOMAIN_SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {DOMAIN_SPLITS}.")


def mrpc_pairs(split: str, folder: str | Path | None = None, domain: str = "paraphrase") -> list[DomainPair]:
    """MRPC pairs of one split, labelled 1 for paraphrases.

    Args:
        split (`str`):
            `train`, `dev` (the released `val` file) or `test`.
        folder (`str | Path`, *optional*):
            The MRPC folder (default: `paraphrase/mrpc` of the benchmark data folder).
        domain (`str`, *optional*, defaults to `"paraphrase"`):
            Domain name given to the pairs.
    """
    _check_split(split)
    return [DomainPair(p.sentence1, p.sentence2, p.label, domain) for p in load_mrpc(split, folder)]


def sts_pairs(
    split: str,
    path: str | Path | None = None,
    positive_min: float = 4.0,
    negative_max: float = 2.0,
    domain: str = "sts",
) -> list[DomainPair]:
    """STS Benchmark pairs of one split, labelled by score: >= `positive_min` a match, <= `negative_max` not.

    Pairs scored between the two bounds are left out; their number is logged.

    Args:
        split (`str`):
            `train`, `dev` or `test`.
        path (`str | Path`, *optional*):
            The STS Benchmark folder or file (default: the benchmark data folder's).
        positive_min (`float`, *optional*, defaults to 4.0):
            Lowest score (0-5) of a match.
        negative_max (`float`, *optional*, defaults to 2.0):
            Highest score of a non-match; below `positive_min`.
        domain (`str`, *optional*, defaults to `"sts"`):
            Domain name given to the pairs.
    """
    _check_split(split)
    if not negative_max < positive_min:
        raise ValueError(f"negative_max ({negative_max}) must be below positive_min ({positive_min}).")
    pairs, left_out = [], 0
    for row in load_sts_benchmark(split, path):
        if row.score >= positive_min:
            pairs.append(DomainPair(row.sentence1, row.sentence2, 1, domain))
        elif row.score <= negative_max:
            pairs.append(DomainPair(row.sentence1, row.sentence2, 0, domain))
        else:
            left_out += 1
    logger.info(
        "STS-B %s: %d pairs kept, %d scored between %.1f and %.1f left out.",
        split,
        len(pairs),
        left_out,
        negative_max,
        positive_min,
    )
    return pairs


def domain_pair_splits(
    data: str | Path | None = None, sts_positive_min: float = 4.0, sts_negative_max: float = 2.0
) -> dict[str, list[DomainPair]]:
    """The two-domain split (`paraphrase` from MRPC, `sts` from STS-B) described in the module docstring.

    A text pair (in either order, of either domain) found in two splits is kept in the later one only
    (train < dev < test).

    Args:
        data (`str | Path`, *optional*):
            The benchmark data folder (default: `$HF_CONTRASTIVE_DATA`, then `../shared/data`).
        sts_positive_min (`float`, *optional*, defaults to 4.0):
            Lowest STS-B score of a match.
        sts_negative_max (`float`, *optional*, defaults to 2.0):
            Highest STS-B score of a non-match.

    Returns:
        `dict[str, list[DomainPair]]`: `train`, `dev` and `test` pairs of both domains.
    """
    root = Path(data) if data is not None else data_dir()
    splits = {
        split: mrpc_pairs(split, root / "paraphrase" / "mrpc")
        + sts_pairs(split, root / "sts" / "stsbenchmark", sts_positive_min, sts_negative_max)
        for split in DOMAIN_SPLITS
    }
    # A pair found in a later split (of either domain) is left out of the earlier ones.
    later: set[tuple[str, str]] = set()
    for split in reversed(DOMAIN_SPLITS):
        kept = [p for p in splits[split] if _pair_key(p) not in later]
        if len(kept) < len(splits[split]):
            logger.info(
                "%s: %d pair(s) also in a later split left out.", split, len(splits[split]) - len(kept)
            )
        splits[split] = kept
        later |= {_pair_key(p) for p in kept}
    return splits


def _pair_key(pair: DomainPair) -> tuple[str, str]:
    first, second = sorted((pair.sentence1, pair.sentence2))
    return (first, second)


def positive_pairs(pairs: list[DomainPair] | Any) -> Any:
    """The matching pairs as a training `datasets.Dataset` with columns `anchor`, `positive`, `domain`.

    Args:
        pairs (`list[DomainPair]`):
            Labelled pairs; those labelled 0 are left out.
    """
    kept = [p for p in pairs if p.label == 1]
    if not kept:
        raise ValueError("No matching pairs (label 1) to train on.")
    return Dataset.from_dict(
        {
            "anchor": [p.sentence1 for p in kept],
            "positive": [p.sentence2 for p in kept],
            "domain": [p.domain for p in kept],
        }
    )
