"""CLOSE on coco-mini: a captioner trained on captions only, then asked to caption images it never saw.

CLOSE (Gu et al. 2023) trains a language model to write a caption from the frozen text tower's embedding of that
same caption, with Gaussian noise on the embedding; at test time the image embedding of the same dual encoder is
put in its place. Here the language model is SmolLM2-135M-Instruct (LoRA on q/v, the 4-token prefix map trained
in full; the prompt "Caption:" follows the prefix, so that the chat-tuned LM starts writing a caption within a few
dozen steps; the paper's T5 has no prompt for captioning, `--prompt ''` removes it) and the dual encoder has the
real all-MiniLM-L6-v2 as text tower (frozen):

- `--dual-encoder PATH`: a saved `VisionTextDualEncoderModel` (or CLIP / SigLIP) folder, e.g. the output of
  `hf-contrastive train trainers/clip-coco-mini.yaml` (`hf-contrastive-output/clip-coco-mini/final`); note that
  that recipe trains on all 80 train images, the 16 dev images below included;
- `--dual-encoder none` (default): no vision weights install offline, so a small ViT is first trained from
  scratch against the frozen MiniLM (CLIP loss, `hf_contrastive.vision`'s trainer, projection 128) on the
  training images only, and saved under the output folder (reused by later runs).

Protocol. The 80 coco-mini train images are split: 16 (drawn with `--seed`) are a dev split, the 64 others and
their 320 captions train. The captioner trains on those captions only (each caption's embedding -> that caption).
The noise std is chosen on the dev split (dev images' embeddings in, CIDEr-D against their captions) from
`--noise-grid`; then the 79 val images are captioned once per row:

- (a) CLOSE: val image embeddings in, the chosen noise;
- (b) the mean-shift variant: the same, trained with `mean(train images) - mean(train captions)` added to its text
  inputs;
- (c) the text-only upper bound: each val image's first caption embedded by the text tower goes in (the model
  of (a));
- (d) the no-noise ablation: (a) trained with std 0.

Every row is scored (CIDEr-D, BLEU-4, `hf_contrastive.vision.caption_metrics`) against captions 2-5 of each val
image, so that (c), whose input is caption 1, compares with the others. The script also writes the modality gap
(`hf_contrastive.vision.evaluation.modality_gap`) and a PNG of a 2-D PCA of the val image and caption embeddings
before and after the mean shift, `results.json` and `table.md`.

    python examples/close_captioning.py
    python examples/close_captioning.py --threads 1     # on a CPU shared with other jobs (see below)
    python examples/close_captioning.py --dual-encoder hf-contrastive-output/clip-coco-mini/final --noise-grid 0,0.05,0.1,0.2

On a 2-core CPU that other jobs also use, two torch threads contend with them: one SmolLM2 training step (8
captions) took 30-50 s with 2 threads and 5 s with `--threads 1` on the shared machine these figures come from.

What these toy figures can show: that the pieces work end to end on real captions and a real LM (the captioner
learns COCO's caption style from 320 captions, noise and shift change what it writes from image embeddings, the
gap is measured and closed by the shift). What they cannot show: the paper's numbers or CLOSE's transfer at
scale. The image tower here saw 64 images (its val embeddings carry little content), the LM trains for a few
dozen steps, the dev split has 16 images, and each figure is one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from peft import LoraConfig

from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.vision import augment
from hf_contrastive.vision.close import (
    CLOSECaptioner,
    CLOSETrainer,
    CLOSETrainingArguments,
    apply_mean_shift,
    fit_mean_shift,
)
from hf_contrastive.vision.close_recipes import (
    caption_training_rows,
    evaluate_captioner,
    load_towers,
    resolve_lm_path,
    split_dev_images,
)
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.evaluation import modality_gap
from hf_contrastive.vision.recipes import build_dual_encoder
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer

SIDE = 64


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_dual_encoder(train, folder: Path, seed: int, epochs: int) -> None:
    """A small ViT trained from scratch against the frozen MiniLM text tower (its projection trains)."""
    model, processor = build_dual_encoder(
        {
            "text_name_or_path": str(packaged_minilm_path()),
            "projection_dim": 128,
            "seed": seed,
            "vision": {
                "image_size": SIDE,
                "patch_size": 8,
                "hidden_size": 192,
                "num_hidden_layers": 4,
                "num_attention_heads": 3,
                "intermediate_size": 384,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
        }
    )
    args = ImageTextContrastiveConfig(
        output_dir=str(folder.parent / "dual-encoder-run"),
        loss="clip",
        learning_rate=1e-3,
        weight_decay=0.1,
        adam_beta2=0.98,
        warmup_steps=5,
        lr_scheduler_type="cosine",
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        max_seq_length=32,
        freeze_text_model=True,
        save_strategy="no",
        report_to="none",
        seed=seed,
        logging_steps=20,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=processor,
        image_transform=augment.global_view_transform(
            SIDE, augment.IMAGENET_MEAN, augment.IMAGENET_STD, flip=True
        ),
    )
    trainer.train()
    trainer.save_dual_encoder(str(folder))


def train_captioner(lm_path: str, rows, dim: int, std: float, shift, a, out: Path) -> CLOSECaptioner:
    """One CLOSE run: a fresh SmolLM2 + prefix map, LoRA, trained on the caption rows; the merged captioner."""
    captioner = CLOSECaptioner.from_lm(
        lm_path,
        embedding_dim=dim,
        noise_std=std,
        max_target_length=a.max_target_length,
        beam_size=a.num_beams,
        prompt=a.prompt or None,
    )
    captioner.card_info.base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    if shift is not None:
        captioner.set_mean_shift(shift)
    args = CLOSETrainingArguments(
        output_dir=str(out / "run"),
        learning_rate=a.lr,
        lr_scheduler_type="linear",
        per_device_train_batch_size=a.batch_size,
        num_train_epochs=a.epochs,
        warmup_steps=0,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=a.seed,
        data_seed=a.seed,
        disable_tqdm=True,
        use_cpu=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
    trainer = CLOSETrainer(model=captioner, args=args, train_dataset=rows, peft_config=lora)
    trainer.train()
    return trainer.captioner(merge_lora=True).eval()


def pca_png(images: torch.Tensor, texts: torch.Tensor, shifted: torch.Tensor, path: Path) -> str:
    """Two panels, one 2-D PCA basis (fitted on the images and the unshifted captions): before and after the shift."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written"
    both = torch.cat([images, texts]).double()
    mean = both.mean(0)
    _, _, v = torch.linalg.svd(both - mean, full_matrices=False)
    basis = v[:2].T

    def project(x: torch.Tensor) -> torch.Tensor:
        return (x.double() - mean) @ basis

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, txt, title in (
        (axes[0], texts, "before the mean shift"),
        (axes[1], shifted, "after the mean shift"),
    ):
        pi, pt = project(images), project(txt)
        ax.scatter(pi[:, 0], pi[:, 1], s=14, c="tab:orange", label="val images")
        ax.scatter(pt[:, 0], pt[:, 1], s=6, c="tab:blue", alpha=0.5, label="val captions")
        ax.scatter(*pi.mean(0), marker="X", s=120, c="darkred", label="image centroid")
        ax.scatter(*pt.mean(0), marker="X", s=120, c="navy", label="caption centroid")
        ax.set_title(title)
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    axes[1].legend(loc="best", fontsize=8)
    fig.suptitle("coco-mini val embeddings (PCA of images and unshifted captions)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dual-encoder", default="none", help="a saved dual-encoder folder, or 'none' (train one)"
    )
    p.add_argument("--noise-grid", default="0,0.1", help="noise stds tried on the dev split (0 = ablation)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--prompt", default="Caption:", help="text between the prefix and the caption ('' for none)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-target-length", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--dev-images", type=int, default=16)
    p.add_argument("--dual-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-val-images", type=int, default=None, help="for a quick check only (figures use all 79)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 on a machine shared with other jobs)"
    )
    p.add_argument("--output-dir", default="hf-contrastive-output/close-captioning-example")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    grid = sorted({float(s) for s in a.noise_grid.split(",") if s.strip()})
    if 0.0 not in grid:
        grid.insert(0, 0.0)  # the no-noise ablation (d) is a grid point
    results: dict = {"settings": vars(a), "noise_grid": grid, "seconds": {}}

    train_all, val = load_coco_captions("train"), load_coco_captions("val")
    if a.max_val_images is not None:
        val = val.select(range(min(a.max_val_images, len(val))))
    train, dev = split_dev_images(train_all, a.dev_images, a.seed)
    results["val_images"] = len(val)
    dual = a.dual_encoder
    if dual == "none":
        dual = out / "dual-encoder"
        if not (dual / "config.json").is_file():
            log(f"training the image tower on {len(train)} train images ({a.dual_epochs} epochs)")
            train_dual_encoder(train, dual, a.seed, a.dual_epochs)
        results["seconds"]["dual_encoder"] = round(time.time() - start, 1)
    towers = load_towers(str(dual))
    results["dual_encoder"] = str(dual)

    log("embedding captions and images")
    rows = caption_training_rows(train, towers)
    dim = len(rows[0]["embedding"])
    train_text = torch.tensor(rows["embedding"])
    train_images = towers.embed_images(train["image"])
    dev_images, val_images = towers.embed_images(dev["image"]), towers.embed_images(val["image"])
    val_texts = towers.embed_texts([c for caps in val["captions"] for c in caps])
    val_owner = [i for i, caps in enumerate(val["captions"]) for _ in caps]
    val_first = towers.embed_texts([caps[0] for caps in val["captions"]])
    dev_refs = [list(caps) for caps in dev["captions"]]
    val_refs = [list(caps[1:]) for caps in val["captions"]]
    shift = fit_mean_shift(train_images, train_text)
    results["mean_shift_norm"] = float(shift.norm())
    results["gap"] = {
        "train": modality_gap(
            train_images[[list(train["image_id"]).index(i) for i in rows["image_id"]]], train_text
        ),
        "val_before": modality_gap(val_images[val_owner], val_texts, paired=True),
        "val_after_shift": modality_gap(
            val_images[val_owner], apply_mean_shift(val_texts, shift), paired=True
        ),
    }
    results["png"] = pca_png(
        val_images, val_texts, apply_mean_shift(val_texts, shift), out / "modality_gap_pca.png"
    )
    results["seconds"]["embeddings"] = round(time.time() - start, 1)

    lm_path = resolve_lm_path("smollm2")
    gen = {"num_beams": a.num_beams, "max_new_tokens": a.max_new_tokens}
    models: dict[str, CLOSECaptioner] = {}
    results["dev"] = {}
    for std in grid:
        log(f"training CLOSE with noise std {std} on {len(rows)} captions")
        models[f"std={std:g}"] = train_captioner(lm_path, rows, dim, std, None, a, out)
        r = evaluate_captioner(models[f"std={std:g}"], dev_images, dev_refs, "image", **gen)
        results["dev"][f"std={std:g}"] = r
        log(
            f"dev std={std:g}: CIDEr-D {100 * r['cider_d']:.1f} BLEU-4 {100 * r['bleu_4']:.1f} e.g. {r['captions'][:2]}"
        )
    best = max(grid, key=lambda s: results["dev"][f"std={s:g}"]["cider_d"])
    results["chosen_noise_std"] = best
    log(f"chosen noise std (dev CIDEr-D): {best:g}; training the mean-shift variant")
    shifted = train_captioner(lm_path, rows, dim, best, shift, a, out)
    results["dev"]["mean_shift"] = evaluate_captioner(shifted, dev_images, dev_refs, "image", **gen)
    results["seconds"]["training"] = round(time.time() - start, 1)

    chosen = models[f"std={best:g}"]
    log("val: one pass per row")
    results["val"] = {
        "a_close": evaluate_captioner(chosen, val_images, val_refs, "image", **gen),
        "b_mean_shift": evaluate_captioner(shifted, val_images, val_refs, "image", **gen),
        "c_text_only": evaluate_captioner(chosen, val_first, val_refs, "text", **gen),
    }
    if best == 0.0:
        results["val"]["d_no_noise"] = {
            **results["val"]["a_close"],
            "note": "the dev split chose std 0: (d) = (a)",
        }
    else:
        results["val"]["d_no_noise"] = evaluate_captioner(
            models["std=0"], val_images, val_refs, "image", **gen
        )
    chosen.save_pretrained(out / "captioner")
    shifted.save_pretrained(out / "captioner-mean-shift")
    results["seconds"]["total"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_table(results, out)


def write_table(results: dict, out: Path) -> None:
    names = {
        "a_close": "(a) CLOSE: image embedding in",
        "b_mean_shift": "(b) CLOSE + mean shift: image embedding in",
        "c_text_only": "(c) text-only upper bound: caption 1's embedding in",
        "d_no_noise": "(d) no-noise ablation (std 0): image embedding in",
    }
    std = results["chosen_noise_std"]
    lines = [
        f"Noise std chosen on the dev split: {std:g} (grid {results['noise_grid']}); "
        f"references: captions 2-5 of each of the {results['val_images']} val images; CIDEr-D and BLEU-4 x100.",
        "",
        "| row | CIDEr-D | BLEU-4 | example caption |",
        "|---|---|---|---|",
    ]
    for key, name in names.items():
        r = results["val"][key]
        example = " ".join(r["captions"][0].split()).replace("|", "/")
        lines.append(f"| {name} | {100 * r['cider_d']:.1f} | {100 * r['bleu_4']:.1f} | {example} |")
    lines += [
        "",
        "| dev split (16 held-out train images, 5 references) | CIDEr-D | BLEU-4 |",
        "|---|---|---|",
    ]
    for key, r in results["dev"].items():
        lines.append(f"| {key} | {100 * r['cider_d']:.1f} | {100 * r['bleu_4']:.1f} |")
    gap_b, gap_a = results["gap"]["val_before"], results["gap"]["val_after_shift"]
    lines += [
        "",
        f"Modality gap on val (centroid distance): {gap_b['centroid_distance']:.3f} before, "
        f"{gap_a['centroid_distance']:.3f} after the mean shift fitted on train (norm {results['mean_shift_norm']:.3f}); "
        f"mean image-caption cosine of pairs {gap_b['mean_pair_cosine']:.3f} -> {gap_a['mean_pair_cosine']:.3f}.",
        f"PNG: {results['png']}. Seconds: {results['seconds']}.",
    ]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
