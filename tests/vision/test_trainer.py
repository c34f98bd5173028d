"""ImageTextContrastiveTrainer on tiny random dual encoders: training, GradCache = plain, LoRA, the logit-scale
clip, the saved folder and its card, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import VisionTextDualEncoderModel

from hf_contrastive.core.checkpoint import LIBRARY_STATE_NAME
from hf_contrastive.vision.improved import ImprovedCLIPLoss
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss
from hf_contrastive.vision.modeling import encode_images, encode_texts
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer
from tests.tiny_models import summation_tolerance
from tests.vision.tiny_vision import tiny_clip, tiny_dual, tiny_processor, tiny_siglip


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        max_seq_length=16,
    )
    base.update(kw)
    return ImageTextContrastiveConfig(**base)


@pytest.mark.parametrize(
    "build,kind", [(tiny_clip, CLIPLoss), (tiny_siglip, SigLIPLoss), (tiny_dual, CLIPLoss)]
)
def test_trains_each_family(tmp_path, vision_processor, image_rows, build, kind):
    model = build(len(vision_processor.tokenizer))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    assert isinstance(trainer.loss_fn, kind)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any("vision" in n for n in changed) and any("text" in n for n in changed)
    assert any("logit_scale" in n for n in changed)


def test_logit_scale_is_clipped_after_each_step(tmp_path, vision_processor, image_rows):
    model = tiny_clip(len(vision_processor.tokenizer))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    trainer.train()
    assert float(model.logit_scale.detach()) <= math.log(100.0) + 1e-7


def _one_sgd_step(tmp_path, processor, rows, name, **kw):
    model = tiny_dual(len(processor.tokenizer), seed=5).double()
    args = _args(
        tmp_path / name,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        caption_sampling="first",
        lr_scheduler_type="constant",
        **kw,
    )
    trainer = ImageTextContrastiveTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
def test_gradcache_step_equals_plain_step(tmp_path, vision_processor, image_rows):
    plain = _one_sgd_step(tmp_path, vision_processor, image_rows, "plain")
    cached = _one_sgd_step(tmp_path, vision_processor, image_rows, "cached", gradcache_mini_batch_size=3)
    start = tiny_dual(len(vision_processor.tokenizer), seed=5).double()
    moved = max(float((plain[n] - p.detach()).abs().max()) for n, p in start.named_parameters())
    assert moved > 1e-4  # the step did something
    gap = max(float((plain[n] - cached[n]).abs().max()) for n in plain)
    assert gap < 1e-12 * max(1.0, moved * 10), gap


@pytest.mark.slow
def test_gradcache_siglip_equals_plain(tmp_path, vision_processor, image_rows):
    def step(name, **kw):
        model = tiny_siglip(len(vision_processor.tokenizer), seed=6).double()
        args = _args(
            tmp_path / name,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            caption_sampling="first",
            lr_scheduler_type="constant",
            **kw,
        )
        ImageTextContrastiveTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(image_rows),
            processing_class=vision_processor,
        ).train()
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    plain, cached = step("plain"), step("cached", gradcache_mini_batch_size=3)
    assert not torch.equal(
        plain["logit_bias"], tiny_siglip(len(vision_processor.tokenizer), seed=6).logit_bias.double()
    )
    gap = max(float((plain[n] - cached[n]).abs().max()) for n in plain)
    assert gap < 1e-11, gap


def test_lora_on_the_vision_tower_keeps_scale_trainable(tmp_path, vision_processor, image_rows):
    model = tiny_dual(len(vision_processor.tokenizer))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=_args(tmp_path, freeze_text_model=True),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
        peft_config=lora,
    )
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable)
    assert any(n.endswith("logit_scale") for n in trainable)
    trainer.train()


@pytest.mark.slow
def test_saved_folder_reloads_with_transformers_and_has_a_card(tmp_path, vision_processor, image_rows):
    model = tiny_dual(len(vision_processor.tokenizer))
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    trainer.train()
    folder = tmp_path / "saved"
    trainer.save_model(str(folder))
    card = (folder / "README.md").read_text()
    assert "CLIPLoss" in card and "Radford" in card and "VisionTextDualEncoderModel" in card
    reloaded = VisionTextDualEncoderModel.from_pretrained(folder)
    processor = type(vision_processor).from_pretrained(folder)
    paths = [r["image"] for r in image_rows[:3]]
    # same weights, same code: only the kernels' summation order may differ (unit-norm rows, width 32, 2 layers)
    tol = summation_tolerance(torch.float32, scale=1.0, depth=32 * 4)
    for a, b in (
        (encode_images(model, vision_processor, paths), encode_images(reloaded, processor, paths)),
        (encode_texts(model, vision_processor, ["a dog"]), encode_texts(reloaded, processor, ["a dog"])),
    ):
        assert float((a - b).abs().max()) <= tol
    # the card's usage snippet runs against the folder
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bad_inputs(tmp_path, vision_processor, image_rows):
    vocab = len(vision_processor.tokenizer)
    data = Dataset.from_list(image_rows)
    with pytest.raises(ValueError, match="no column 'captions'"):
        ImageTextContrastiveTrainer(
            model=tiny_clip(vocab),
            args=_args(tmp_path),
            train_dataset=data.rename_column("captions", "text"),
            processing_class=vision_processor,
        )
    other = tiny_processor(tmp_path / "p2")
    other.image_processor.crop_size = {"height": 48, "width": 48}
    with pytest.raises(ValueError, match="48x48 images, the vision tower expects 32x32"):
        ImageTextContrastiveTrainer(
            model=tiny_clip(vocab), args=_args(tmp_path), train_dataset=data, processing_class=other
        )
    with pytest.raises(TypeError, match="dual encoder"):
        ImageTextContrastiveTrainer(
            model=torch.nn.Linear(2, 2),
            args=_args(tmp_path),
            train_dataset=data,
            processing_class=vision_processor,
        )
    with pytest.raises(ValueError, match="loss must be one of"):
        _args(tmp_path, loss="triplet")


def test_siglip_on_a_model_without_bias_trains_the_loss_bias(tmp_path, vision_processor, image_rows):
    trainer = ImageTextContrastiveTrainer(
        model=tiny_dual(len(vision_processor.tokenizer)),
        args=_args(tmp_path, loss="siglip", max_steps=1),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    assert float(trainer.loss_fn.logit_bias.detach()) == -10.0
    trainer.train()
    assert float(trainer.loss_fn.logit_bias.detach()) != -10.0


def test_undecodable_image_is_skipped_and_counted(tmp_path, vision_processor, image_rows):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows = [*image_rows[:3], {"image": str(broken), "captions": ["a cat"]}]
    trainer = ImageTextContrastiveTrainer(
        model=tiny_clip(len(vision_processor.tokenizer)),
        args=_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(rows),
        processing_class=vision_processor,
    )
    batch = trainer.data_collator(rows)
    assert batch["pixel_values"].shape[0] == 3
    assert sum(trainer.data_collator.skipped.values()) == 1
    strict = ImageTextContrastiveTrainer(
        model=tiny_clip(len(vision_processor.tokenizer)),
        args=_args(tmp_path, on_bad_image="raise"),
        train_dataset=Dataset.from_list(rows),
        processing_class=vision_processor,
    )
    with pytest.raises(ValueError, match="Cannot decode image"):
        strict.data_collator(rows)


def test_improved_recipe_trains_views_heads_and_addons(tmp_path, vision_processor, image_rows):
    model = tiny_dual(len(vision_processor.tokenizer))
    improved = {
        "projection_dim": 8,
        "projector_hidden_size": 16,
        "use_siamlip": True,
        "siamlip_hidden_size": 16,
        "siamlip_dim": 8,
    }
    trainer = ImageTextContrastiveTrainer(
        model=model,
        args=_args(
            tmp_path,
            loss="improved",
            improved=improved,
            max_steps=2,
            save_strategy="steps",
            save_steps=1,
            logging_steps=1,
        ),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    assert isinstance(trainer.loss_fn, ImprovedCLIPLoss)
    batch = trainer.data_collator(image_rows[:3])
    assert batch["aug_pixel_values"].shape[0] == 2 * 3 and batch["aug_input_ids"].shape[0] == 2 * 3
    heads = {n: p.detach().clone() for n, p in trainer.loss_fn.named_parameters() if p.requires_grad}
    trainer.train()
    moved = [n for n, p in trainer.loss_fn.named_parameters() if n in heads and not torch.equal(p, heads[n])]
    assert moved, "the view projectors and add-on heads must train"
    logs = [h for h in trainer.state.log_history if "loss_local" in h or "cl2l" in h]
    assert logs, trainer.state.log_history
    # the loss module's heads are checkpointed with the run (exact resume)
    assert (tmp_path / "out" / "checkpoint-2" / LIBRARY_STATE_NAME).is_file()


def test_improved_refuses_gradcache(tmp_path):
    with pytest.raises(ValueError, match="GradCache is not available with loss='improved'"):
        _args(tmp_path, loss="improved", gradcache_mini_batch_size=2)
    with pytest.raises((ValueError, TypeError)):
        _args(tmp_path, loss="improved", improved={"no_such_setting": 1})


def test_push_uploads_the_dual_encoder_processor_and_card(tmp_path, vision_processor, image_rows, hub):
    trainer = ImageTextContrastiveTrainer(
        model=tiny_clip(len(vision_processor.tokenizer)),
        args=_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(image_rows),
        processing_class=vision_processor,
    )
    trainer.train()
    trainer.push_to_hub(repo_id="me/tiny-clip")
    files = set(hub.commits[0]["files"])
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= files
    assert "training_args.bin" not in files
    card = hub.commits[0]["files"]["README.md"].decode()
    assert 'AutoModel.from_pretrained("me/tiny-clip")' in card and "CLIPModel" in card
    assert "zero-shot-image-classification" in card
