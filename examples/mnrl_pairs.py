"""Multiple negatives ranking on your own (anchor, positive[, negative...]) pairs, with LoRA.

    python examples/mnrl_pairs.py pairs.jsonl                   # JSON lines with anchor/positive columns
    python examples/mnrl_pairs.py                               # default: SNLI dev (premise, entailment)

Mirrors the ``mnrl-pairs`` recipe: InfoNCE with scale 20, in-batch negatives gathered across
devices when launched with torchrun/accelerate, no duplicate texts per batch, LoRA adapters merged
into the saved model.
"""

from __future__ import annotations

import argparse

from peft import LoraConfig

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, STSEvaluator
from hf_contrastive.core.data.loaders import load_source, snli_triples
from hf_contrastive.core.utils import packaged_minilm_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "data", nargs="?", default=None, help="JSON-lines file with anchor/positive[/negative] columns"
    )
    p.add_argument("--model", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--output-dir", default="hf-contrastive-output/example-mnrl")
    a = p.parse_args()

    model = SentenceEncoder.from_pretrained(a.model or str(packaged_minilm_path()))
    if a.data:
        train = load_source({"type": "files", "format": "json", "path": a.data})
    else:
        train = snli_triples(split="dev").remove_columns("negative")
    args = ContrastiveConfig(
        output_dir=a.output_dir,
        loss="mnrl",
        symmetric=a.symmetric,
        learning_rate=2e-4,
        per_device_train_batch_size=a.batch_size,
        num_train_epochs=a.epochs,
        max_seq_length=64,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["query", "key", "value"])
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        peft_config=lora,
        sts_evaluator=STSEvaluator.sts_benchmark("test"),
    )
    before = trainer.evaluate()["eval_sts_spearman"]
    trainer.train()
    after = trainer.evaluate()["eval_sts_spearman"]
    trainer.save_encoder(f"{a.output_dir}/final")
    print(f"{len(train)} pairs; STS-B test Spearman: {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
