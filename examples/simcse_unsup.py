"""Unsupervised SimCSE (Gao et al. 2021) on Wikipedia sentences, evaluated on STS Benchmark.

Same objective as the ``simcse-unsup`` recipe, through the Python API:

    python examples/simcse_unsup.py --max-rows 4000            # packaged all-MiniLM-L6-v2
    python examples/simcse_unsup.py --model bert-base-uncased --pooling cls --mlp

Each sentence is encoded twice in one forward pass (dropout gives the two views); the other
sentences of the batch are the negatives.
"""

from __future__ import annotations

import argparse

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, STSEvaluator
from hf_contrastive.core.data.loaders import text_lines
from hf_contrastive.core.utils import data_dir, packaged_minilm_path
from hf_contrastive.embeddings.modeling import ProjectionHead


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="encoder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--pooling", default="cls")
    p.add_argument("--mlp", action="store_true", help="SimCSE's training-only MLP on top of [CLS]")
    p.add_argument("--max-rows", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--output-dir", default="hf-contrastive-output/example-simcse-unsup")
    a = p.parse_args()

    path = a.model or str(packaged_minilm_path())
    model = SentenceEncoder.from_pretrained(path, pooling="cls" if a.mlp else a.pooling, normalize=False)
    if a.mlp:  # SimCSE's Linear + tanh on [CLS], used in training only
        hidden = model.config.hidden_size
        model.config.projection_dim, model.config.mlp_only_train = hidden, True
        model.projection = ProjectionHead(hidden, hidden, "tanh")
        model._init_weights(model.projection)
    train = text_lines(data_dir() / "corpus" / "wiki1m_first11914.txt", max_rows=a.max_rows)
    args = ContrastiveConfig(
        output_dir=a.output_dir,
        loss="simcse_unsup",
        temperature=0.05,
        learning_rate=a.learning_rate,
        per_device_train_batch_size=a.batch_size,
        max_seq_length=32,
        num_train_epochs=1,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
    )
    test = STSEvaluator.sts_benchmark("test")
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=train, sts_evaluator=test)
    before = trainer.evaluate()["eval_sts_spearman"]
    trainer.train()
    after = trainer.evaluate()["eval_sts_spearman"]
    trainer.save_encoder(f"{a.output_dir}/final")
    print(f"STS-B test Spearman: {before:.4f} -> {after:.4f}; model and card in {a.output_dir}/final")


if __name__ == "__main__":
    main()
