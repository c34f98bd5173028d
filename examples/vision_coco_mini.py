"""Image-text contrastive training on coco-mini: a vision tower trained from scratch against the real MiniLM.

No real vision weights install offline, so the vision tower is a small ViT initialised at random; the text tower
is the packaged all-MiniLM-L6-v2, frozen (its projection is trained). Each method (plain CLIP, SigLIP, the
improved CLIP recipe of Fini et al. 2023) trains on the 80 coco-mini train images (400 captions) and is
evaluated on the 79 val images (395 captions): recall@1/5/10 image->text and text->image, before and after
training, against chance.

Hyper-parameters (learning rate) are chosen on a dev split carved from train (16 of the 80 images, the others
train), then the chosen setting is retrained on all 80 train images and val is read once per seed.

    python examples/vision_coco_mini.py                               # all methods, 3 seeds
    python examples/vision_coco_mini.py --methods clip --seeds 0 --epochs 10

What these figures can show: that the losses, the trainer and the evaluation work end to end on real images and
captions and move retrieval above chance. What they cannot show: anything about the methods' relative merit at
scale; 80 images are four orders of magnitude below the smallest setting of the papers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image
from transformers import (
    AutoTokenizer,
    BertModel,
    CLIPImageProcessor,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
    ViTConfig,
    ViTModel,
)

from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.vision import augment
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.evaluation import ImageTextRetrievalEvaluator
from hf_contrastive.vision.modeling import load_image
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer

SIZE = 64
MEAN, STD = augment.IMAGENET_MEAN, augment.IMAGENET_STD


def build(seed: int) -> tuple[VisionTextDualEncoderModel, VisionTextDualEncoderProcessor]:
    torch.manual_seed(seed)
    vision = ViTModel(
        ViTConfig(
            image_size=SIZE,
            patch_size=8,
            hidden_size=192,
            num_hidden_layers=4,
            num_attention_heads=3,
            intermediate_size=384,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    minilm = str(packaged_minilm_path())
    text = BertModel.from_pretrained(minilm)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision.config, text.config, projection_dim=128
    )
    model = VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    processor = VisionTextDualEncoderProcessor(
        image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(minilm)
    )
    return model, processor


def downscaled(data: Dataset, side: int = 80) -> Dataset:
    """The same rows with each image decoded once and its shorter side resized to `side` pixels (the towers see
    64x64 crops; decoding 640x480 JPEGs at every step would dominate the run)."""
    images = []
    for path in data["image"]:
        image = load_image(path)
        scale = side / min(image.size)
        images.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC))
    features = Features(
        {"image": ImageFeature(), "captions": Sequence(Value("string")), "image_id": Value("int64")}
    )
    return Dataset.from_dict(
        {"image": images, "captions": data["captions"], "image_id": data["image_id"]}, features=features
    )


def run(
    method: str,
    seed: int,
    lr: float,
    epochs: int,
    train: Dataset,
    evaluation: Dataset,
    out: Path,
    save_to: Path | None = None,
) -> dict:
    model, processor = build(seed)
    evaluator = ImageTextRetrievalEvaluator(evaluation, processor, max_length=32, name="val")
    before = evaluator(model)
    args = ImageTextContrastiveConfig(
        output_dir=str(out / "tmp"),
        loss=method,
        learning_rate=lr,
        weight_decay=0.1,
        adam_beta2=0.98,
        warmup_steps=5,
        lr_scheduler_type="cosine",
        num_train_epochs=epochs,
        per_device_train_batch_size=40,
        max_seq_length=32,
        freeze_text_model=True,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        logging_steps=20,
        disable_tqdm=True,
        use_cpu=True,
        improved={"projector_hidden_size": 512, "projection_dim": 128} if method == "improved" else None,
    )
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        image_transform=augment.global_view_transform(SIZE, MEAN, STD, flip=True),
    )
    start = time.time()
    trainer.train()
    after = evaluator(model)
    if save_to is not None:  # the seed-0 model of each method, for examples/close_captioning.py
        trainer.save_dual_encoder(str(save_to))
    return {"before": before, "after": after, "seconds": round(time.time() - start, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="clip,siglip,improved")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr-grid", default="1e-3,3e-4")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--output-dir", default="hf-contrastive-output/vision-coco-mini")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    train_all = downscaled(load_coco_captions("train"))
    val = downscaled(load_coco_captions("val"))
    split = train_all.train_test_split(test_size=16, seed=0)
    seeds = [int(s) for s in a.seeds.split(",")]
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        dev = {}
        for lr in [float(x) for x in a.lr_grid.split(",")]:
            key = f"{method}/dev/lr={lr:g}"
            if key not in results:
                results[key] = run(method, seeds[0], lr, a.epochs, split["train"], split["test"], out)
                path.write_text(json.dumps(results, indent=1))
                print(key, json.dumps(results[key]["after"]), flush=True)
            r = results[key]["after"]
            dev[lr] = r["val_image_to_text_recall@5"] + r["val_text_to_image_recall@5"]
        best = max(dev, key=dev.get)
        results.setdefault("chosen_lr", {})[method] = best
        for seed in seeds:
            key = f"{method}/val/lr={best:g}/seed={seed}"
            if key not in results:
                save_to = out / f"{method}-model" if seed == seeds[0] else None
                results[key] = run(method, seed, best, a.epochs, train_all, val, out, save_to)
                path.write_text(json.dumps(results, indent=1))
                print(key, json.dumps(results[key]["after"]), flush=True)
    write_table(results, out, seeds)


def write_table(results: dict, out: Path, seeds: list[int]) -> None:
    lines = [
        "| method | lr (dev) | seeds | i->t R@1 | i->t R@5 | i->t R@10 | t->i R@1 | t->i R@5 | t->i R@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cols = [f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
    first = None
    for method, lr in results.get("chosen_lr", {}).items():
        recs = [results[k] for s in seeds if (k := f"{method}/val/lr={lr:g}/seed={s}") in results]
        if not recs:
            continue
        first = first or recs[0]
        before = [statistics.fmean(r["before"][f"val_{c}"] for r in recs) for c in cols]
        cells = []
        for c in cols:
            v = [r["after"][f"val_{c}"] for r in recs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.fmean(v):.1f} ± {sd:.1f}")
        lines.append(
            f"| {method} (before training) | - | {len(recs)} | "
            + " | ".join(f"{b:.1f}" for b in before)
            + " |"
        )
        lines.append(f"| {method} | {lr:g} | {len(recs)} | " + " | ".join(cells) + " |")
    if first is not None:
        chance = [
            first["after"][f"val_chance_{d}@{k}"]
            for d in ("image_to_text", "text_to_image")
            for k in (1, 5, 10)
        ]
        lines.append("| chance | - | - | " + " | ".join(f"{c:.1f}" for c in chance) + " |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
