"""DITO at toy scale: image-level CLIP vs DITO (region + image CLIP), with and without the shifted window.

    python benchmarks/dito_experiment.py --out /tmp/dito          # CPU toy defaults (a few minutes)
    python benchmarks/dito_experiment.py --gpu --out /tmp/dito    # the larger settings a GPU run would use

A tiny VitDet vision tower (window attention, trained from scratch) and the real all-MiniLM-L6-v2 text tower
(frozen: only its projection is trained, so the three rows differ only on the vision side) are trained on the
80 coco-mini training images (400 captions) with the same steps, batch, seeds and caption draws in every row:

- `clip`: image-level CLIP only (`region_loss_weight=0`, no shifted window);
- `dito_no_shift`: DITO's region + image CLIP terms (`box_sampling="per_level"`: on each of P2-P5 the
  whole-image box and one random box), no shifted window;
- `dito`: the same with shifted-window learning (the window blocks run a second time on the grid rolled by half
  a window, rolled back, averaged).

On the 79 coco-mini val images (395 captions): image-text recall@1/5 both ways (COCO protocol) and
`dense_correspondence_score` (hf_contrastive.vision.dense.features) of the final patch grid: two random crops of each val
image with known geometry, each cell of view A queries all cells of the B views of every val image, a hit when the
nearest one is a geometric positive; its chance rate is printed beside it. The untrained towers (`init`, seed 0)
are scored too. Nothing is tuned (the settings are fixed in advance and val is reported once: coco-mini has no
third split). With 80 training images and a from-scratch vision tower this is a smoke-scale comparison: the
figures show that the pipeline runs end to end on real data, not the method's merit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, VitDetConfig, set_seed

from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.dense.dito import (
    DITOModel,
    DITOTrainer,
    DITOTrainingArguments,
    dito_retrieval_metrics,
)
from hf_contrastive.vision.dense.features import dense_correspondence_score
from hf_contrastive.vision.modeling import load_image

METHODS = {
    "clip": {"region_loss_weight": 0.0, "shifted_window": False},
    "dito_no_shift": {"region_loss_weight": 1.0, "shifted_window": False},
    "dito": {"region_loss_weight": 1.0, "shifted_window": True},
}

CPU = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 96,
    "layers": 4,
    "heads": 4,
    "window_size": 4,
    "window_blocks": [0, 1, 2],
    "fpn_dim": 64,
    "roi_output_size": 4,
    "region_hidden_size": 256,
    "projection_dim": 128,
    "steps": 120,
    "batch_size": 16,
    "learning_rate": 5e-4,
    "seeds": [0, 1],
}
GPU = {
    "image_size": 224,
    "patch_size": 16,
    "hidden_size": 384,
    "layers": 12,
    "heads": 6,
    "window_size": 7,
    "window_blocks": [0, 1, 3, 4, 6, 7, 9, 10],
    "fpn_dim": 256,
    "roi_output_size": 7,
    "region_hidden_size": 1024,
    "projection_dim": 256,
    "steps": 600,
    "batch_size": 64,
    "learning_rate": 5e-4,
    "seeds": [0, 1],
}


def preload(dataset, side: int) -> list[dict]:
    """Decode every image once, shrunk so that its shorter side is `side` (crops are taken from these)."""
    rows = []
    for path, caps in zip(dataset["image"], dataset["captions"]):
        image = load_image(path)
        scale = side / min(image.size)
        image = image.resize((max(side, round(image.width * scale)), max(side, round(image.height * scale))))
        rows.append({"image": image, "captions": list(caps)})
    return rows


def build(method: str, s: dict, seed: int, text_path: str) -> DITOModel:
    set_seed(seed)
    vision = VitDetConfig(
        image_size=s["image_size"],
        pretrain_image_size=s["image_size"],
        patch_size=s["patch_size"],
        hidden_size=s["hidden_size"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        mlp_ratio=4,
        window_size=s["window_size"],
        window_block_indices=s["window_blocks"],
    )
    text = AutoModel.from_pretrained(text_path)
    model = DITOModel.from_towers(
        vision,
        text,
        projection_dim=s["projection_dim"],
        fpn_dim=s["fpn_dim"],
        roi_output_size=s["roi_output_size"],
        region_hidden_size=s["region_hidden_size"],
        canonical_box_size=float(s["image_size"]),
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        **METHODS[method],
    )
    model.text_model.requires_grad_(False)  # frozen text tower: only its projection learns
    return model


def evaluate(model: DITOModel, val_rows: list[dict], tokenizer, s: dict) -> dict:
    val = {"image": [r["image"] for r in val_rows], "captions": [r["captions"] for r in val_rows]}
    recall = dito_retrieval_metrics(model, val, tokenizer, batch_size=64, ks=(1, 5))
    model.eval()
    dense = dense_correspondence_score(
        lambda pixel_values: model.patch_grid(pixel_values.to(model.device, model.dtype)),
        val["image"],
        image_size=s["image_size"],
        seed=0,
        mean=model.config.image_mean,
        std=model.config.image_std,
    )
    return {
        **{k: v for k, v in recall.items() if "recall" in k},
        "chance_text_to_image@1": recall["chance_text_to_image@1"],
        "chance_image_to_text@1": recall["chance_image_to_text@1"],
        "dense_top1": 100 * dense["top1"],
        "dense_chance": 100 * dense["chance"],
        "dense_top1_within_image": 100 * dense["top1_within_image"],
    }


def train(model: DITOModel, rows: list[dict], tokenizer, s: dict, seed: int, out: Path) -> float:
    args = DITOTrainingArguments(
        output_dir=str(out),
        max_steps=s["steps"],
        per_device_train_batch_size=s["batch_size"],
        learning_rate=s["learning_rate"],
        weight_decay=0.05,
        warmup_steps=max(1, s["steps"] // 10),
        lr_scheduler_type="cosine",
        logging_steps=max(1, s["steps"] // 5),
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        # image decoding and augmentation stay on the CPU: worker processes keep a GPU fed
        dataloader_num_workers=4 if torch.cuda.is_available() else 0,
    )
    trainer = DITOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


COLUMNS = [
    ("image_to_text_recall@1", "I->T R@1"),
    ("image_to_text_recall@5", "I->T R@5"),
    ("text_to_image_recall@1", "T->I R@1"),
    ("text_to_image_recall@5", "T->I R@5"),
    ("dense_top1", "dense top-1"),
]


def table(summary: dict) -> str:
    lines = [
        "| run | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for run, values in summary.items():
        cells = []
        for key, _ in COLUMNS:
            mean, spread = values[key]
            cells.append(f"{mean:.1f}" + (f" +- {spread:.1f}" if spread is not None else ""))
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    parser.add_argument("--gpu", action="store_true", help="the larger settings a GPU run would use")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    s = dict(GPU if a.gpu else CPU)
    for key, value in (("steps", a.steps), ("batch_size", a.batch_size), ("seeds", a.seeds)):
        if value is not None:
            s[key] = value
    text_path = str(packaged_minilm_path())
    tokenizer = AutoTokenizer.from_pretrained(text_path)
    side = round(s["image_size"] * 1.15)
    train_rows = preload(load_coco_captions("train"), side)
    val_rows = preload(load_coco_captions("val"), side)
    scratch = Path(a.out or "/tmp/dito-experiment") / "runs"
    print(
        f"settings: {json.dumps(s)}; train {len(train_rows)} images, val {len(val_rows)} images", flush=True
    )

    results: dict = {"settings": s, "scale": "toy (CPU)" if not a.gpu else "gpu preset", "runs": {}}
    init_model = build("dito", s, s["seeds"][0], text_path)
    init_model.tokenizer = tokenizer
    results["runs"]["init"] = {str(s["seeds"][0]): evaluate(init_model, val_rows, tokenizer, s)}
    del init_model
    for method in a.methods:
        results["runs"][method] = {}
        for seed in s["seeds"]:
            model = build(method, s, seed, text_path)
            model.tokenizer = tokenizer
            seconds = train(model, train_rows, tokenizer, s, seed, scratch / f"{method}-{seed}")
            figures = evaluate(model, val_rows, tokenizer, s)
            figures["train_seconds"] = seconds
            results["runs"][method][str(seed)] = figures
            print(method, seed, json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
    summary = {}
    for run, per_seed in results["runs"].items():
        values = list(per_seed.values())
        summary[run] = {
            key: (
                statistics.mean(v[key] for v in values),
                statistics.stdev(v[key] for v in values) if len(values) > 1 else None,
            )
            for key, _ in COLUMNS
        }
    results["summary"] = {run: {k: list(v) for k, v in cols.items()} for run, cols in summary.items()}
    first = results["runs"]["init"][str(s["seeds"][0])]
    text = table(summary)
    text += (
        f"\n\nchance: T->I R@1 {first['chance_text_to_image@1']:.1f}, I->T R@1 {first['chance_image_to_text@1']:.1f}, "
        f"dense top-1 {first['dense_chance']:.2f} (all in %). Mean +- sd over seeds {s['seeds']}; "
        f"{s['steps']} steps of batch {s['batch_size']} each; `init` = untrained towers, seed {s['seeds'][0]}."
    )
    results["table"] = text
    print(text)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
