"""Pixel Linguist end to end at smoke scale: render text, train a pixel sentence encoder through a two-stage
curriculum with weight averaging, save it, reload it with `AutoModel`, and compare sentences.

    python examples/pixel_linguist.py                          # a few minutes on a 2-core CPU
    python examples/pixel_linguist.py --steps 200 --runs 4     # longer; the paper averages four runs

Stage `visual` pairs wiki1m sentences (shared data) with visually grounded positives (a character typo, a random
word shuffle or a shuffle within clauses) and trains `--runs` runs from the same random start, whose weights are
averaged; stage `nli` continues from the average on SNLI dev premise / entailment pairs. STS-B dev Spearman is
printed before and after. The encoder is a small ViT-MAE trained from scratch for a few dozen steps: the point is
the pipeline (renderer, head, symmetric InfoNCE, curriculum, averaging, saving), not the figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoModel, set_seed

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.utils import data_dir
from hf_contrastive.embeddings.sts import evaluate_sts
from hf_contrastive.vision.pixel_linguist import (
    CurriculumStage,
    PixelLinguistConfig,
    PixelLinguistModel,
    PixelLinguistTrainingArguments,
    run_curriculum,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="steps of each run of each stage")
    p.add_argument("--runs", type=int, default=2, help="runs of the visual stage, averaged")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rows", type=int, default=2000, help="wiki1m sentences of the visual stage")
    p.add_argument("--dev-pairs", type=int, default=300)
    p.add_argument("--output-dir", default="hf-contrastive-output/example-pixel-linguist")
    a = p.parse_args()
    torch.set_num_threads(2)
    # long wiki sentences are cut to the 64-patch strip; one warning per batch would drown the output
    logging.getLogger("hf_contrastive.vision.text_render").setLevel(logging.ERROR)
    set_seed(0)

    model = PixelLinguistModel(
        PixelLinguistConfig(
            backbone_config={
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 512,
            }
        )
    )
    rendered = model.renderer(["Pixel Linguist reads rendered text."])
    print(
        f"one sentence -> pixels {tuple(rendered.pixel_values.shape)}, "
        f"{int(rendered.attention_mask.sum())} of {model.config.max_patches} patches in the mask"
    )

    dev = load_sts_benchmark("dev")[: a.dev_pairs]
    before = evaluate_sts(model, dev, similarities=("cosine",))["spearman_cosine"]
    stages = [
        CurriculumStage(
            "visual",
            {
                "type": "text",
                "path": str(data_dir() / "corpus" / "wiki1m_first11914.txt"),
                "max_rows": a.rows,
                "positives": ["typo", "shuffle", "clause_shuffle"],
            },
            learning_rate=2e-4,
            max_steps=a.steps,
            runs=a.runs,
        ),
        CurriculumStage("nli", {"type": "snli", "split": "dev"}, learning_rate=1e-4, max_steps=a.steps),
    ]
    args = PixelLinguistTrainingArguments(
        output_dir=a.output_dir,
        per_device_train_batch_size=a.batch_size,
        warmup_steps=2,
        logging_steps=10,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    for stage in run_curriculum(model, stages, args):
        losses = ", ".join(f"{r['train_loss']:.3f}" for r in stage["runs"])
        print(
            f"stage {stage['name']}: {stage['rows']} pairs, train loss per run [{losses}] -> {stage['folder']}"
        )
    after = evaluate_sts(model, dev, similarities=("cosine",))["spearman_cosine"]
    print(f"STS-B dev ({len(dev)} pairs) Spearman: before {before:.4f}, after {after:.4f}")

    final = Path(a.output_dir) / "final"
    model.save_pretrained(final)
    reloaded = AutoModel.from_pretrained(final)
    e = reloaded.encode(["A man is playing a guitar.", "A man plays the guitar.", "The stock market fell."])
    print(f"reloaded {type(reloaded).__name__}: cos(guitar, guitar) {float(e[0] @ e[1]):.3f}, "
          f"cos(guitar, market) {float(e[0] @ e[2]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
