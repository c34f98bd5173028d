"""Retrieval recall, chance rates, the modality gap, zero-shot classification, the COCO loader and the
dual-encoder helpers, against brute-force or hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_contrastive.vision.data import ImageTextCollator, load_coco_captions
from hf_contrastive.vision.evaluation import image_text_retrieval_metrics, modality_gap, zero_shot_accuracy
from hf_contrastive.vision.modeling import (
    dual_encoder_forward,
    encode_images,
    encode_texts,
    zero_shot_classify,
)
from tests.vision.tiny_vision import tiny_clip, tiny_dual


def test_recall_against_brute_force():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 5, generator=g, dtype=torch.float64)
    owner = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5]
    txt = torch.randn(len(owner), 5, generator=g, dtype=torch.float64)
    out = image_text_retrieval_metrics(img, txt, owner, ks=(1, 2, 5))
    sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    for k in (1, 2, 5):
        hits = sum(any(owner[j] == i for j in sim[i].argsort(descending=True)[:k].tolist()) for i in range(6))
        assert out[f"image_to_text_recall@{k}"] == pytest.approx(100 * hits / 6)
        hits = sum(
            int(sim[:, j].argsort(descending=True)[:k].tolist().count(owner[j])) for j in range(len(owner))
        )
        assert out[f"text_to_image_recall@{k}"] == pytest.approx(100 * hits / len(owner))


def test_ties_count_against_and_chance_is_exact():
    img, txt = torch.ones(4, 3), torch.ones(8, 3)  # every score ties
    owner = [0, 0, 1, 1, 2, 2, 3, 3]
    out = image_text_retrieval_metrics(img, txt, owner, ks=(1, 2))
    assert out["image_to_text_recall@1"] == 0.0 and out["text_to_image_recall@1"] == 0.0
    # P(a 2-caption image has a caption among 2 of 8 drawn) = 1 - C(6,2)/C(8,2)
    assert out["chance_image_to_text@2"] == pytest.approx(100 * (1 - math.comb(6, 2) / math.comb(8, 2)))
    assert out["chance_text_to_image@2"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="8 texts"):
        image_text_retrieval_metrics(img, txt, owner[:5])


def test_modality_gap_by_hand():
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64) + 2.0, dim=-1)
    y = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64) - 1.0, dim=-1)
    out = modality_gap(x, y)
    delta = x.mean(0) - y.mean(0)
    assert out["centroid_distance"] == pytest.approx(float(delta.norm()), rel=1e-12)
    along = (x - y) @ (delta / delta.norm())
    assert float(along.mean()) == pytest.approx(
        float(delta.norm()), rel=1e-12
    )  # the identity the docstring states
    assert out["gap_direction_share"] == pytest.approx(
        float((along**2).mean() / ((x - y) ** 2).sum(-1).mean())
    )
    shifted = modality_gap(x - delta, y)  # CLOSE's mean shift closes the gap
    assert shifted["centroid_distance"] < 0.3 * out["centroid_distance"]
    with pytest.raises(ValueError, match="sizes differ"):
        modality_gap(x, y[:, :3])


def test_dual_encoder_forward_pooled_features_are_the_projection_inputs(vision_processor, image_rows):
    model = tiny_clip(len(vision_processor.tokenizer)).eval()
    batch = ImageTextCollator(vision_processor, max_length=12, caption_sampling="first")(image_rows[:3])
    out = dual_encoder_forward(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(
        F.normalize(model.visual_projection(out.image_pooled), dim=-1), out.image_embeds, atol=1e-6
    )
    assert torch.allclose(
        F.normalize(model.text_projection(out.text_pooled), dim=-1), out.text_embeds, atol=1e-6
    )
    assert out.image_pooled.shape[-1] == model.config.vision_config.hidden_size


def test_encoders_and_zero_shot_match_the_models_forward(vision_processor, image_rows):
    model = tiny_dual(len(vision_processor.tokenizer)).eval()
    paths = [r["image"] for r in image_rows[:4]]
    img = encode_images(model, vision_processor, paths, batch_size=3)
    txt = encode_texts(model, vision_processor, ["a dog", "a cat sleeps"], batch_size=1)
    inputs = vision_processor(
        text=["a dog", "a cat sleeps"], images=[_load(p) for p in paths], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref = model(**inputs)
    tol = 1e-5  # float32, unit-norm rows, a few hundred terms per dot product
    assert (
        float((img - ref.image_embeds).abs().max()) < tol and float((txt - ref.text_embeds).abs().max()) < tol
    )
    pred, scores = zero_shot_classify(model, vision_processor, paths, ["dog", "cat"], templates=("a {}",))
    class_emb = F.normalize(encode_texts(model, vision_processor, ["a dog", "a cat"]), dim=-1)
    assert torch.equal(pred, (img @ class_emb.T).argmax(-1))
    acc = zero_shot_accuracy(
        model, vision_processor, paths, pred.tolist(), ["dog", "cat"], templates=("a {}",)
    )
    assert acc["zero_shot_accuracy"] == 100.0
    with pytest.raises(ValueError, match=r"'\{\}'"):
        zero_shot_classify(model, vision_processor, paths, ["dog"], templates=("a photo",))


def _load(path):
    return Image.open(path).convert("RGB")


def test_collator_caption_draws_are_seeded(vision_processor, image_rows):
    a = ImageTextCollator(vision_processor, seed=3)
    b = ImageTextCollator(vision_processor, seed=3)
    draws_a = [a._caption(r["captions"]) for r in image_rows * 3]
    draws_b = [b._caption(r["captions"]) for r in image_rows * 3]
    assert draws_a == draws_b and len(set(draws_a)) > len(image_rows)
    with pytest.raises(ValueError, match="augmented_image_transform"):
        ImageTextCollator(vision_processor, augmented_views=2)
    with pytest.raises(ValueError, match="non-empty string or list"):
        a._caption([])


@pytest.mark.integration
def test_coco_mini_loader(shared_data):
    train, val = load_coco_captions("train"), load_coco_captions("val")
    assert (len(train), sum(len(c) for c in train["captions"])) == (80, 400)
    assert (len(val), sum(len(c) for c in val["captions"])) == (79, 395)
    assert len(set(train["image_id"]) & set(val["image_id"])) == 0
    assert all(p.endswith(".jpg") for p in itertools.islice(train["image"], 5))
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_coco_captions("test")
