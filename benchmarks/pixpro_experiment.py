"""PixPro on coco-mini: dense correspondence of a small backbone trained from scratch, before and after.

A small ConvNeXt (trained from scratch, random initialisation) is trained with PixPro on the 80 coco-mini train
images (two crops per image, RandomResizedCrop 0.08-1, BYOL colour operations), and, as the comparison row, with
the instance-level objective only (PixPro's instance branch, BYOL-style: `pixpro_weight=0, instance_weight=1`),
same steps, seeds and views. The dense metric is
[`hf_contrastive.vision.dense.features.dense_correspondence_score`] on the 79 coco-mini val images: for two random views
of each image with known geometry (crop area 0.2-1, flip), each cell of view A with a geometric positive in view B
queries every cell of the B views of all 79 images; top-1 accuracy is the share of queries whose nearest cell
(cosine, backbone feature map) is a positive. Its chance rate and the within-image variant (candidates: the
query's own image only) are reported beside it. The views come from a fixed seed, so every row answers the same
queries; "before" is the random initialisation of the same seed.

Nothing is tuned on the val split (the settings below were fixed before the runs; coco-mini has no third split).
The scale is a toy: a few hundred steps on 80 images at 64 px, a 4x4 feature grid, optimiser AdamW instead of
the paper's LARS. Read the figures as a check that the objective trains dense features and how it compares with
the instance-level objective here, not as PixPro's results.

Usage::

    python benchmarks/pixpro_experiment.py --out /work/results16/pixpro        # CPU toy defaults
    python benchmarks/pixpro_experiment.py --gpu --out results/pixpro           # the larger GPU settings
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import ConvNextConfig

from hf_contrastive.vision.data import coco_mini_dir, load_coco_captions
from hf_contrastive.vision.dense.features import dense_correspondence_score
from hf_contrastive.vision.dense.pixpro import PixProModel, PixProTrainer, PixProTrainingArguments
from hf_contrastive.vision.modeling import load_image

CPU_DEFAULTS: dict[str, Any] = {
    "steps": 200,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-5,
    "image_size": 64,
    "hidden_sizes": [32, 64, 128],
    "depths": [1, 1, 2],
    "projector_hidden_size": 256,
    "projection_dim": 64,
    "instance_hidden_size": 256,
    "instance_dim": 64,
    "eval_view_pairs": 2,
    "max_side": 160,
    "seeds": [0, 1],
    "workers": 0,
}
"""The toy settings this machine runs (3 to 6 minutes per trained row on one shared CPU thread)."""

GPU_PRESET: dict[str, Any] = {
    "steps": 500,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 1e-5,
    "image_size": 224,
    "hidden_sizes": [96, 192, 384, 768],
    "depths": [3, 3, 9, 3],
    "projector_hidden_size": 4096,
    "projection_dim": 256,
    "instance_hidden_size": 4096,
    "instance_dim": 256,
    "eval_view_pairs": 4,
    "max_side": 640,
    "seeds": [0, 1, 2],
    "workers": 8,
}
"""What a GPU run would use (one H100/H200, bf16; sized for the GPU suite's 30 minutes per experiment, estimated
at about 20 minutes for the six trained rows, not measured here): ConvNeXt-T from scratch at 224 px (a 7x7 grid,
as the paper's C5), the paper's projector sizes, 500 steps of batch 64, the views made by 8 loader workers. On the
80 coco-mini images that is still a toy; a meaningful run trains on COCO train2017 or ImageNet (the paper:
ImageNet-1k, 100-400 epochs, batch 1024, LARS)."""

ROWS = {
    "pixpro": {"pixpro_weight": 1.0, "instance_weight": 0.0},
    "instance_only": {"pixpro_weight": 0.0, "instance_weight": 1.0},
}


class _Images(torch.utils.data.Dataset):
    """Decoded images held in memory (resized so the longer side is at most `max_side`)."""

    def __init__(self, paths: list[str], max_side: int) -> None:
        self.images = []
        for path in paths:
            image = load_image(path)
            scale = max_side / max(image.size)
            if scale < 1:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BICUBIC)
            self.images.append(image)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index]}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for pixpro_experiment.json")
    p.add_argument("--gpu", action="store_true", help="the larger GPU settings (GPU_PRESET) on cuda")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per trained row")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (model init and views)")
    p.add_argument(
        "--eval-seed", type=int, default=0, help="seed of the evaluation views (same for every row)"
    )
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="objectives to train")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p.parse_args(argv)


def _settings(ns: argparse.Namespace) -> dict[str, Any]:
    settings = dict(GPU_PRESET if ns.gpu else CPU_DEFAULTS)
    for key in ("steps", "batch_size", "image_size", "seeds"):
        value = getattr(ns, key)
        if value is not None:
            settings[key] = value
    return settings


def build_model(settings: dict[str, Any], seed: int, weights: dict[str, float]) -> PixProModel:
    """A ConvNeXt from scratch (initialised from `seed`) with the PixPro head."""
    torch.manual_seed(seed)
    backbone = ConvNextConfig(
        hidden_sizes=settings["hidden_sizes"],
        depths=settings["depths"],
        num_stages=len(settings["hidden_sizes"]),
        image_size=settings["image_size"],
    )
    return PixProModel.from_backbone(
        backbone,
        projector_hidden_size=settings["projector_hidden_size"],
        projection_dim=settings["projection_dim"],
        instance_hidden_size=settings["instance_hidden_size"],
        instance_dim=settings["instance_dim"],
        image_size=settings["image_size"],
        **weights,
    )


def evaluate(
    model: PixProModel, images: list[Any], settings: dict[str, Any], eval_seed: int
) -> dict[str, float]:
    """The dense correspondence score of the model's backbone feature map."""
    return dense_correspondence_score(
        model.backbone,
        images,
        image_size=settings["image_size"],
        num_view_pairs=settings["eval_view_pairs"],
        seed=eval_seed,
        mean=model.config.image_mean,
        std=model.config.image_std,
    )


def train(model: PixProModel, dataset: _Images, settings: dict[str, Any], seed: int, device: str) -> dict:
    """Train for `settings["steps"]` optimiser steps; returns the last logged figures."""
    with tempfile.TemporaryDirectory() as tmp:
        args = PixProTrainingArguments(
            output_dir=tmp,
            max_steps=settings["steps"],
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["lr"],
            weight_decay=settings["weight_decay"],
            lr_scheduler_type="cosine",
            warmup_steps=max(1, settings["steps"] // 20),
            logging_steps=max(1, settings["steps"] // 6),
            save_strategy="no",
            eval_strategy="no",
            seed=seed,
            data_seed=seed,
            dataloader_drop_last=True,
            use_cpu=device == "cpu",
            bf16=device == "cuda",
            disable_tqdm=True,
            dataloader_num_workers=settings["workers"],
        )
        trainer = PixProTrainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "first_log": logs[0] if logs else {},
        "last_log": logs[-1] if logs else {},
        "skipped_images_total": trainer.skipped_images_total,
        "final_momentum": trainer.last_momentum,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)


def main(argv: list[str] | None = None) -> dict:
    ns = _parse(argv)
    torch.set_num_threads(ns.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    device = "cuda" if ns.gpu else "cpu"
    if ns.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device.")
    settings = _settings(ns)
    root = coco_mini_dir()
    train_rows, val_rows = load_coco_captions("train", root), load_coco_captions("val", root)
    dataset = _Images(list(train_rows["image"]), settings["max_side"])
    val_images = _Images(list(val_rows["image"]), settings["max_side"]).images
    results: dict[str, Any] = {
        "scale": "toy (CPU)" if device == "cpu" else "GPU preset",
        "settings": settings,
        "eval_seed": ns.eval_seed,
        "train_images": len(dataset),
        "val_images": len(val_images),
        "runs": [],
    }
    print(
        f"PixPro experiment ({results['scale']}): ConvNeXt {settings['hidden_sizes']} x {settings['depths']} from "
        f"scratch, {settings['image_size']} px, {settings['steps']} steps of batch {settings['batch_size']}, "
        f"seeds {settings['seeds']}; {len(dataset)} train / {len(val_images)} val images",
        flush=True,
    )
    for seed in settings["seeds"]:
        model = build_model(settings, seed, ROWS["pixpro"]).to(device)
        start = time.perf_counter()
        before = evaluate(model, val_images, settings, ns.eval_seed)
        results["runs"].append({"row": "random init", "seed": seed, **before})
        print(
            f"seed {seed} random init: {json.dumps(before)} ({time.perf_counter() - start:.0f} s)", flush=True
        )
        for row in ns.rows:
            model = build_model(settings, seed, ROWS[row]).to(device)
            start = time.perf_counter()
            info = train(model, dataset, settings, seed, device)
            seconds = time.perf_counter() - start
            after = evaluate(model, val_images, settings, ns.eval_seed)
            results["runs"].append({"row": row, "seed": seed, "train_seconds": seconds, **info, **after})
            print(f"seed {seed} {row}: {json.dumps(after)} (trained in {seconds:.0f} s)", flush=True)

    table = []
    for row in ["random init", *ns.rows]:
        runs = [r for r in results["runs"] if r["row"] == row]
        top1 = _mean_std([100 * r["top1"] for r in runs])
        within = _mean_std([100 * r["top1_within_image"] for r in runs])
        table.append(
            {
                "row": row,
                "top1": top1,
                "top1_within_image": within,
                "chance": 100 * runs[0]["chance"],
                "chance_within_image": 100 * runs[0]["chance_within_image"],
                "queries": runs[0]["num_queries"],
                "seeds": len(runs),
            }
        )
    results["table"] = table
    first = results["runs"][0]
    print()
    print(
        f"Dense correspondence on coco-mini val ({first['num_images']} images, {first['grid_h']}x{first['grid_w']} "
        f"grid, {settings['eval_view_pairs']} view pairs per image, candidates per query "
        f"{first['candidates_per_query']:.0f}); mean +- std over seeds, in %"
    )
    print("| row | top-1 (all images) | chance | top-1 (own image) | chance (own image) | queries | seeds |")
    print("|---|---|---|---|---|---|---|")
    for entry in table:
        print(
            f"| {entry['row']} | {entry['top1'][0]:.2f} +- {entry['top1'][1]:.2f} | {entry['chance']:.2f} | "
            f"{entry['top1_within_image'][0]:.2f} +- {entry['top1_within_image'][1]:.2f} | "
            f"{entry['chance_within_image']:.2f} | {entry['queries']} | {entry['seeds']} |"
        )
    if ns.out is not None:
        ns.out.mkdir(parents=True, exist_ok=True)
        (ns.out / "pixpro_experiment.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {ns.out / 'pixpro_experiment.json'}")
    return results


if __name__ == "__main__":
    main()
