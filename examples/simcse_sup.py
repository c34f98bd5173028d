"""Supervised SimCSE (Gao et al. 2021): NLI triples with the contradiction as a hard negative.

    python examples/simcse_sup.py                      # SNLI dev triples, packaged all-MiniLM-L6-v2
    python examples/simcse_sup.py --hard-negative-weight 0.2 --max-rows 1000

Mirrors the ``simcse-sup`` recipe.
"""

from __future__ import annotations

import argparse

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, STSEvaluator
from hf_contrastive.core.data.loaders import snli_triples
from hf_contrastive.core.utils import packaged_minilm_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--hard-negative-weight", type=float, default=0.0)
    p.add_argument("--output-dir", default="hf-contrastive-output/example-simcse-sup")
    a = p.parse_args()

    model = SentenceEncoder.from_pretrained(a.model or str(packaged_minilm_path()))
    train = snli_triples(split="dev", max_rows=a.max_rows)
    args = ContrastiveConfig(
        output_dir=a.output_dir,
        loss="simcse_sup",
        hard_negative_weight=a.hard_negative_weight,
        learning_rate=a.learning_rate,
        per_device_train_batch_size=a.batch_size,
        max_seq_length=32,
        num_train_epochs=1,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        dataset_name="stanfordnlp/snli",
    )
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=train, sts_evaluator=STSEvaluator.sts_benchmark("test")
    )
    before = trainer.evaluate()["eval_sts_spearman"]
    trainer.train()
    after = trainer.evaluate()["eval_sts_spearman"]
    trainer.save_encoder(f"{a.output_dir}/final")
    print(f"{len(train)} triples; STS-B test Spearman: {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
