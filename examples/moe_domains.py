"""Mixture-of-experts embeddings (Hallee et al. 2024) against one dense model, on two domains.

    python examples/moe_domains.py                       # 3 seeds, 1 epoch each (paper: lr 1e-4, batch 16)
    python examples/moe_domains.py --seeds 0 --max-steps 100

Data (`hf_contrastive.embeddings.moe.data.domain_pair_splits`, from the benchmark data folder):

- `paraphrase`: MRPC; a pair is a match when annotated a paraphrase; MRPC's train / val / test files are the
  train / dev / test splits.
- `sts`: STS Benchmark; a match when scored >= 4 (of 5), a non-match when scored <= 2, pairs in between
  left out; STS-B's train / dev / test splits.
- A text pair found in a later split (of either domain: STS-B's news pairs include MRPC pairs) is dropped
  from the earlier splits, so nothing trained on or used for thresholds is tested on.

Models, all with mean pooling, trained on the matching train pairs of both domains with MNRL (in-batch
negatives, scale 20), the same batches (seeded no-duplicates sampler) and the same number of steps:

- `all-MiniLM-L6-v2 zero-shot`: the packaged model as it is;
- `single model`: all-MiniLM-L6-v2 fine-tuned as one dense model on both domains;
- `MoE`: all-MiniLM-L6-v2 with every MLP copied into one expert per domain, each text routed to its
  domain's expert (`MoESentenceEncoder.from_dense`, `ContrastiveConfig(domain_column="domain")`).

Evaluation: F1 of the match class at the best cosine threshold, the threshold chosen on dev (per domain,
and once for all domains pooled) and applied to test. The table gives the test F1, mean and sample standard
deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder
from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.embeddings.moe import (
    MoESentenceEncoder,
    domain_pair_splits,
    evaluate_domain_pairs,
    positive_pairs,
)

COLUMNS = ("paraphrase", "sts", "all")


def train(model, pairs, seed: int, a: argparse.Namespace, routed: bool, output_dir: Path):
    args = ContrastiveConfig(
        output_dir=str(output_dir),
        loss="mnrl",
        temperature=0.05,
        learning_rate=a.lr,
        per_device_train_batch_size=a.batch_size,
        num_train_epochs=a.epochs,
        max_steps=a.max_steps if a.max_steps is not None else -1,
        max_seq_length=a.max_seq_length,
        warmup_steps=0,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        domain_column="domain" if routed else None,
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=pairs)
    trainer.train()
    return trainer.state.global_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="benchmark data folder (default: $HF_CONTRASTIVE_DATA)")
    p.add_argument("--model", default=None, help="dense starting point (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: epochs)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--output-dir", default="hf-contrastive-output/moe-domains")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    start = time.time()
    base = a.model or str(packaged_minilm_path())
    splits = domain_pair_splits(a.data)
    pairs = positive_pairs(splits["train"])
    dev, test = splits["dev"], splits["test"]
    for name, split in splits.items():
        sizes = {d: sum(x.domain == d for x in split) for d in COLUMNS[:2]}
        matches = {d: sum(x.label for x in split if x.domain == d) for d in COLUMNS[:2]}
        print(f"{name}: {sizes} pairs, {matches} matches")
    print(f"training pairs (matches of train): {len(pairs)}")
    out = Path(a.output_dir)
    results: dict[str, list[dict]] = {"all-MiniLM-L6-v2 zero-shot": [], "single model": [], "MoE": []}

    zero_shot = SentenceEncoder.from_pretrained(base)
    results["all-MiniLM-L6-v2 zero-shot"].append(
        {k: v.to_dict() for k, v in evaluate_domain_pairs(zero_shot, dev, test, a.eval_batch_size).items()}
    )
    for seed in a.seeds:
        torch.manual_seed(seed)
        single = SentenceEncoder.from_pretrained(base)
        steps = train(single, pairs, seed, a, routed=False, output_dir=out / f"single-{seed}")
        figures = evaluate_domain_pairs(single, dev, test, a.eval_batch_size)
        results["single model"].append({k: v.to_dict() for k, v in figures.items()} | {"steps": steps})
        torch.manual_seed(seed)
        moe = MoESentenceEncoder.from_dense(base, ["paraphrase", "sts"])
        steps = train(moe, pairs, seed, a, routed=True, output_dir=out / f"moe-{seed}")
        figures = evaluate_domain_pairs(moe, dev, test, a.eval_batch_size)
        results["MoE"].append({k: v.to_dict() for k, v in figures.items()} | {"steps": steps})
        print(f"seed {seed} done ({time.time() - start:.0f} s)", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=2))

    print(
        f"\nTest F1 at the dev-chosen cosine threshold (mean +- sd over seeds {a.seeds}; {steps} steps of "
        f"{a.batch_size} pairs, lr {a.lr})"
    )
    print(f"| model | {' | '.join(COLUMNS)} |")
    print(f"|---|{'---|' * len(COLUMNS)}")
    for model, runs in results.items():
        cells = []
        for column in COLUMNS:
            values = [r[column]["f1"] for r in runs]
            spread = f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        print(f"| {model} | {' | '.join(cells)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    print(f"\n{time.time() - start:.0f} s; figures in {out / 'results.json'}")


if __name__ == "__main__":
    main()
