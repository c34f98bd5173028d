"""MultiCSR's LLM data pipeline (Wang et al. 2023) with SmolLM2-135M-Instruct on wiki1m sentences.

    python examples/multicsr_data.py                 # 80 wiki1m premises, packaged SmolLM2-135M-Instruct
    python examples/multicsr_data.py --premises 16   # a small first batch (answers cached: rerun for more)
    python examples/multicsr_data.py --threads 1     # on a busy shared CPU, one thread is often faster

SmolLM2 writes an entailment and a contradiction for each premise and rates both pairs from 0 to 5; the pairs
are kept when the entailment is rated >= 3, the contradiction <= 3 and the ratings differ. Every answer is
cached, so an interrupted run resumes where it stopped and a rerun generates nothing. The triplets are written
with `save_to_disk` (default `~/.cache/hf-contrastive/multicsr-smollm2/triplets`, with the ratings and the
report next to them) for `ContrastiveTrainer(loss="multicsr", reference_model=...)` or the `multicsr-llm`
recipe (`--data.triplets <folder>`), and the survival table is printed.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from hf_contrastive.core.data.loaders import text_lines
from hf_contrastive.core.utils import data_dir
from hf_contrastive.embeddings.synthesis import MultiCSRDataBuilder, default_multicsr_dir, load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--premises", type=int, default=80, help="first N lines of wiki1m")
    p.add_argument("--corpus", default=None, help="one premise a line (default: the shared wiki1m excerpt)")
    p.add_argument("--generator", default="smollm2", help="causal LM folder / Hub id, or smollm2")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--output", default=None, help="folder of the triplets")
    p.add_argument("--examples", type=int, default=5, help="triplets to print")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)

    corpus = Path(a.corpus) if a.corpus else data_dir() / "corpus" / "wiki1m_first11914.txt"
    premises = text_lines(corpus, max_rows=a.premises)["text"]
    base = default_multicsr_dir(a.generator)
    cache_dir = Path(a.cache_dir) if a.cache_dir else base / "cache"
    output = Path(a.output) if a.output else base / "triplets"

    start = time.perf_counter()
    builder = MultiCSRDataBuilder(load_generator(a.generator), cache_dir=cache_dir, batch_size=a.batch_size)
    data = builder.build(premises)
    data.save_to_disk(output)
    elapsed = time.perf_counter() - start

    print(data.report)
    print(f"total time (model loading included): {elapsed:.1f} s")
    print(f"triplets: {output}  (answers cached in {cache_dir / 'answers.jsonl'})")
    for row, score in list(zip(data.dataset, data.scores))[: a.examples]:
        print(f"\n  premise      {row['anchor']}")
        print(f"  entailment   {row['positive']}   [{score['positive_score']}]")
        print(f"  contradiction {row['negative']}   [{score['negative_score']}]")


if __name__ == "__main__":
    main()
