"""DITO: RoI-Align against hand computations and exact ramp averages, FPN levels and strides, the shifted window,
the loss against its formula, region sampling, box checks, saving, the collator, training and the recipe."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, BertConfig, ViTConfig, VitDetConfig, VitDetModel
from transformers.modeling_outputs import BaseModelOutput

from hf_contrastive.recipes import register_recipe_task, run_recipe
from hf_contrastive.vision.data import load_coco_captions
from hf_contrastive.vision.dense.dito import (
    DITOCollator,
    DITOConfig,
    DITOLoss,
    DITOModel,
    DITOTrainer,
    DITOTrainingArguments,
    SimpleFeaturePyramid,
    clip_boxes,
    dito_retrieval_metrics,
    sample_boxes,
    shifted_window_forward,
)
from hf_contrastive.vision.dense.dito_recipes import DITO_TASK
from hf_contrastive.vision.dense.roi_align import assign_fpn_levels, roi_align
from hf_contrastive.vision.losses import CLIPLoss
from tests.distributed_run import end_worker, run_two_processes
from tests.tiny_models import bert_tokenizer

# float64 throughout: every compared value is a sum of at most a few thousand terms of size <= 1e2, exact to
# far below 1e-9.
TOL = 1e-9
HEAD = {
    "projection_dim": 8,
    "fpn_dim": 8,
    "region_hidden_size": 16,
    "roi_output_size": 2,
    "sampling_ratio": 2,
}


def tiny_vitdet(windows: bool = True, image_size: int = 32, layers: int = 2) -> VitDetConfig:
    return VitDetConfig(
        image_size=image_size,
        pretrain_image_size=image_size,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        mlp_ratio=2,
        window_size=2 if windows else 0,
        window_block_indices=[0] if windows else [],
    )


def tiny_text(vocab: int = 80) -> BertConfig:
    return BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )


def tiny_model(seed: int = 0, windows: bool = True, **kw) -> DITOModel:
    torch.manual_seed(seed)
    settings = {**HEAD, "shifted_window": windows, **kw}
    return DITOModel.from_towers(tiny_vitdet(windows), tiny_text(), **settings).double()


def captions(batch: int, length: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 80, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def pixels(batch: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(
        batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


# -- RoI-Align --------------------------------------------------------------------------------------------------


def test_roi_align_by_hand_on_a_known_map():
    # f[y, x] = 10 y + x on a 3 x 4 map
    f = (10 * torch.arange(3.0)[:, None] + torch.arange(4.0)[None]).double()[None, None]
    # aligned: box (1, 1)-(3, 3) in pixels at scale 1 -> feature box (0.5, 0.5)-(2.5, 2.5); one sample per bin at
    # the bin centre: one bin -> (1.5, 1.5): bilinear of f(1,1)=11, f(1,2)=12, f(2,1)=21, f(2,2)=22 at 1/4 each
    out = roi_align(f, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]], dtype=torch.float64), 1, 1.0, 1)
    assert out.item() == pytest.approx((11 + 12 + 21 + 22) / 4, abs=TOL)
    # two bins in x, sampling 1: x centres 1.0 and 2.0, y centre 1.5 -> (11 + 21) / 2 and (12 + 22) / 2
    out = roi_align(f, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]], dtype=torch.float64), (1, 2), 1.0, 1)
    assert out.flatten().tolist() == pytest.approx([16.0, 17.0], abs=TOL)
    # not aligned: no half-pixel shift, box (0, 0)-(2, 2) -> one bin, samples at (0.5, 0.5), (0.5, 1.5),
    # (1.5, 0.5), (1.5, 1.5) with sampling 2: mean = f(1, 1) by linearity = 11
    out = roi_align(
        f, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]], dtype=torch.float64), 1, 1.0, 2, aligned=False
    )
    assert out.item() == pytest.approx(11.0, abs=TOL)
    # border band: a sample at y = -0.5 is clamped onto row 0; one beyond -1 is zero.
    # box y from -0.25 to 0.25 px (aligned -> -0.75..-0.25), one bin, one sample at y=-0.5, x at 1.0 -> f(0,1) = 1
    box = torch.tensor([[0.0, 1.0, -0.25, 2.0, 0.25]], dtype=torch.float64)
    assert roi_align(f, box, 1, 1.0, 1).item() == pytest.approx(1.0, abs=TOL)
    box = torch.tensor([[0.0, 1.0, -2.0, 2.0, -1.0]], dtype=torch.float64)  # sample at y = -2.0
    assert roi_align(f, box, 1, 1.0, 1).item() == 0.0
    # bottom band: y in (H - 1, H] clamps onto the last row: box y 3.0..3.5 px -> sample at y = 2.75 -> row 2
    box = torch.tensor([[0.0, 1.0, 3.0, 2.0, 3.5]], dtype=torch.float64)
    assert roi_align(f, box, 1, 1.0, 1).item() == pytest.approx(20 + 1.0, abs=TOL)


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, -1])
def test_roi_align_equals_exact_area_averages_of_linear_ramps(sampling_ratio):
    # bilinear interpolation is exact for a linear function, and the samples are symmetric about each bin centre,
    # so each bin must equal the exact area average of the ramp over the bin (its value at the bin centre) as long
    # as every sample stays inside [0, size - 1]
    height, width, stride = 12, 16, 4.0
    ys, xs = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
    a, bx, by = 0.3, 1.7, -2.9
    ramp = torch.stack([a + bx * xs + by * ys, 2.0 * xs - ys])[None]  # two channels
    ramp = torch.cat([ramp, 0.5 * ramp])  # two images
    boxes = torch.tensor(
        [
            [0, 6.0, 4.0, 40.0, 30.0],
            [1, 9.0, 11.5, 57.0, 45.0],
            [0, 2.0, 2.0, 62.0, 46.0],
            [1, 20.0, 8.0, 27.0, 15.0],
        ],
        dtype=torch.float64,
    )
    out_h, out_w = 3, 4
    got = roi_align(ramp, boxes, (out_h, out_w), 1 / stride, sampling_ratio)
    for k, (b, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        fx1, fy1 = x1 / stride - 0.5, y1 / stride - 0.5
        bw, bh = (x2 - x1) / stride / out_w, (y2 - y1) / stride / out_h
        for i in range(out_h):
            for j in range(out_w):
                # exact area average of c0 + cx x + cy y over [xa, xb] x [ya, yb]
                xa, xb = fx1 + j * bw, fx1 + (j + 1) * bw
                ya, yb = fy1 + i * bh, fy1 + (i + 1) * bh
                scale = 1.0 if b == 0 else 0.5
                mean_x, mean_y = (xa + xb) / 2, (ya + yb) / 2
                want = [scale * (a + bx * mean_x + by * mean_y), scale * (2.0 * mean_x - mean_y)]
                assert got[k, :, i, j].tolist() == pytest.approx(want, abs=TOL), (k, i, j)


def test_roi_align_takes_per_image_box_lists_and_passes_gradients():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    per_image = [
        torch.tensor([[1.0, 2.0, 9.0, 8.0]]),
        torch.tensor([[0.0, 0.0, 12.0, 10.0], [3.0, 1.0, 7.0, 9.0]]),
    ]
    rows = torch.tensor([[0, 1.0, 2.0, 9.0, 8.0], [1, 0.0, 0.0, 12.0, 10.0], [1, 3.0, 1.0, 7.0, 9.0]])
    a = roi_align(f, [b.double() for b in per_image], 2, 0.5, 2)
    torch.testing.assert_close(a, roi_align(f, rows.double(), 2, 0.5, 2), rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda x: roi_align(x, rows.double(), 2, 0.5, 2), (f,))
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(f, torch.tensor([[2, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64), 2)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(f, torch.zeros(3, 4, dtype=torch.float64), 2)


def test_fpn_level_assignment():
    sides = torch.tensor([28.0, 56.0, 112.0, 224.0, 300.0, 448.0, 1000.0])
    boxes = torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)
    # k = floor(4 + log2(side / 224)): 1 -> clamped 2, 2, 3, 4, 4, 5, 6 -> clamped 5
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [2, 2, 3, 4, 4, 5, 5]
    assert assign_fpn_levels(boxes, 3, 4).tolist() == [3, 3, 3, 4, 4, 4, 4]
    assert assign_fpn_levels(boxes, 2, 5, canonical_box_size=56.0).tolist() == [3, 4, 5, 5, 5, 5, 5]


# -- pyramid and shifted window ---------------------------------------------------------------------------------


def test_simple_feature_pyramid_levels_and_strides():
    torch.manual_seed(0)
    fpn = SimpleFeaturePyramid(16, 8).double()
    grid = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    out = fpn(grid)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        2: (2, 8, 24, 20),
        3: (2, 8, 12, 10),
        4: (2, 8, 6, 5),
        5: (2, 8, 3, 2),
    }
    # P4 is the grid itself (identity) before its output convolutions; P5 a 2x max-pool of it
    torch.testing.assert_close(out[4], fpn.outputs["4"](grid), rtol=0, atol=0)
    torch.testing.assert_close(out[5], fpn.outputs["5"](F.max_pool2d(grid, 2)), rtol=0, atol=0)
    assert set(SimpleFeaturePyramid(16, 8, levels=[3, 4]).double()(grid)) == {3, 4}


def test_roll_and_unroll_are_exact_for_token_wise_blocks():
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=g)
    weight = torch.randn(4, 4, dtype=torch.float64, generator=g)

    def tokenwise(x):  # the same function at every cell: rolling commutes with it
        return torch.tanh(torch.einsum("bchw,cd->bdhw", x, weight))

    for shift in (1, 2, 3, 5):
        assert torch.equal(shifted_window_forward(tokenwise, grid, shift), tokenwise(grid))

    # not shift-equivariant: the rolled pass must be rolled back, not averaged as it is
    def marks_position(x):
        return x + torch.arange(6, dtype=x.dtype)[None, None, :, None]

    got = shifted_window_forward(marks_position, grid, 2)
    rolled_back = torch.roll(marks_position(torch.roll(grid, (2, 2), (2, 3))), (-2, -2), (2, 3))
    torch.testing.assert_close(got, (marks_position(grid) + rolled_back) / 2, rtol=0, atol=0)


def test_shifted_pass_equals_plain_without_windows_and_differs_with_them():
    torch.manual_seed(0)
    x = pixels(2)
    # global attention with absolute positions added before the roll is equivariant to the roll: same output
    plain_net = VitDetModel(tiny_vitdet(windows=False)).double().eval()
    emb = plain_net.embeddings(x)

    def blocks_of(net):
        return lambda t: net.encoder(t, return_dict=True).last_hidden_state

    plain = blocks_of(plain_net)(emb)
    torch.testing.assert_close(shifted_window_forward(blocks_of(plain_net), emb, 1), plain, rtol=0, atol=TOL)
    # with window attention the rolled pass sees other windows: the average differs
    window_net = VitDetModel(tiny_vitdet(windows=True)).double().eval()
    emb = window_net.embeddings(x)
    base = blocks_of(window_net)(emb)
    shifted = shifted_window_forward(blocks_of(window_net), emb, 1)
    assert (shifted - base).abs().max() > 1e-3 * base.abs().max()
    # the model's patch grid is that average, final-normed
    model = tiny_model().eval()
    emb = model.vision_model.embeddings(x)
    want = model.vision_norm(shifted_window_forward(blocks_of(model.vision_model), emb, 1))
    torch.testing.assert_close(model.patch_grid(x), want, rtol=0, atol=0)
    assert model.config.effective_shift_size == 1  # half of the 2-cell window


# -- loss ---------------------------------------------------------------------------------------------------------


def hand_clip(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    logits = scale * image @ text.T
    n = image.shape[0]
    rows = [torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(n)]
    cols = [torch.logsumexp(logits[:, i], 0) - logits[i, i] for i in range(n)]
    return (torch.stack(rows).mean() + torch.stack(cols).mean()) / 2


def test_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(4, 6, dtype=torch.float64, generator=g), dim=-1)
    text = F.normalize(torch.randn(4, 6, dtype=torch.float64, generator=g), dim=-1)
    regions = F.normalize(torch.randn(4, 3, 6, dtype=torch.float64, generator=g), dim=-1)
    scale = 7.5
    out = DITOLoss(image_loss_weight=0.7, region_loss_weight=1.3)(image, text, scale, region_embeds=regions)
    region = torch.stack([hand_clip(regions[:, r], text, scale) for r in range(3)]).mean()
    want = 0.7 * hand_clip(image, text, scale) + 1.3 * region
    assert out.loss.item() == pytest.approx(want.item(), abs=TOL)
    assert out.components["region_clip"].item() == pytest.approx(region.item(), abs=TOL)
    clip_only = DITOLoss(region_loss_weight=0.0)(image, text, scale)
    assert clip_only.loss.item() == pytest.approx(CLIPLoss()(image, text, scale).loss.item(), abs=TOL)
    assert "region_clip" not in clip_only.components
    with pytest.raises(ValueError, match="needs region_embeds"):
        DITOLoss()(image, text, scale)
    with pytest.raises(ValueError, match=r"\[B, R, D\]"):
        DITOLoss()(image, text, scale, region_embeds=regions[:2])


# -- model --------------------------------------------------------------------------------------------------------


def test_model_loss_is_the_loss_of_its_outputs_and_regions_follow_the_sampling():
    model = tiny_model(num_random_boxes=2).eval()
    x, caps = pixels(3), captions(3)
    torch.manual_seed(5)
    out = model(x, **caps)
    levels = model.config.fpn_levels
    assert out.region_embeds.shape == (3, len(levels) * 3, 8)
    want = DITOLoss.from_config(model.config)(
        out.image_embeds, out.text_embeds, out.logit_scale, out.region_embeds
    )
    assert out.loss.item() == pytest.approx(want.loss.item(), abs=TOL)
    # slot 0 of each level is the whole image pooled from that level
    pyramid = model.fpn(model.patch_grid(x))
    for n, level in enumerate(levels):
        stride = 8 * 2.0 ** (level - 4)
        rois = torch.tensor([[i, 0.0, 0.0, 32.0, 32.0] for i in range(3)], dtype=torch.float64)
        pooled = roi_align(pyramid[level], rois, 2, 1 / stride, 2)
        whole = F.normalize(model.region_head(pooled), dim=-1)
        torch.testing.assert_close(out.region_embeds[:, n * 3], whole, rtol=0, atol=TOL)
    # the same random boxes again from the same seed
    torch.manual_seed(5)
    torch.testing.assert_close(model(x, **caps).region_embeds, out.region_embeds, rtol=0, atol=0)
    # the image embedding is the projected mean of the grid
    grid = model.patch_grid(x)
    torch.testing.assert_close(
        out.image_embeds, F.normalize(model.image_projection(grid.mean((2, 3))), dim=-1), rtol=0, atol=0
    )
    # "assigned": whole image + K boxes, each at its FPN level
    assigned = tiny_model(box_sampling="assigned", num_random_boxes=2, canonical_box_size=32.0).eval()
    assert assigned(x, **caps).region_embeds.shape == (3, 3, 8)
    boxes, box_levels = assigned.sampled_boxes(3, 32, torch.device("cpu"))
    assert box_levels[:, 0].tolist() == [4, 4, 4]  # a 32-px box at canonical size 32 -> P4
    assert torch.equal(box_levels, assign_fpn_levels(boxes, 2, 5, 32.0))


def test_given_boxes_are_clipped_and_counted_or_refused(caplog):
    model = tiny_model().eval()
    x = pixels(2)
    inside = torch.tensor([[[0.0, 0.0, 16.0, 16.0]], [[8.0, 4.0, 32.0, 30.0]]], dtype=torch.float64)
    outside = inside.clone()
    outside[0, 0, 0], outside[1, 0, 2] = -10.0, 50.0
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.dense.dito"):
        got = model(x, boxes=outside).region_embeds
    assert "2 box(es) reached outside the 32x32 image and were clipped" in caplog.text
    assert model.clipped_boxes == 2
    torch.testing.assert_close(got, model(x, boxes=inside).region_embeds, rtol=0, atol=0)
    assert model.clipped_boxes == 2
    clipped, changed = clip_boxes(outside, 32)
    assert changed == 2 and torch.equal(clipped, inside)
    with pytest.raises(ValueError, match="no area left after clipping"):
        model(x, boxes=torch.tensor([[[40.0, 0.0, 50.0, 8.0]]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="x2 > x1"):
        model(x, boxes=torch.tensor([[[4.0, 0.0, 4.0, 8.0]]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[B, R, 4\]"):
        model(x, boxes=torch.zeros(2, 4, dtype=torch.float64))


def test_random_boxes_lie_inside_and_have_the_sizes_asked():
    boxes = sample_boxes(50, 4, 64, 0.25, 0.5, generator=torch.Generator().manual_seed(0))
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    assert boxes.min() >= 0 and boxes.max() <= 64
    assert w.min() >= 16 - 1e-4 and w.max() <= 32 + 1e-4 and h.min() >= 16 - 1e-4 and h.max() <= 32 + 1e-4


def test_towers_without_a_patch_grid_or_windows_are_refused():
    with pytest.raises(ValueError, match="shifted_window=True needs a window-attention ViT"):
        DITOConfig(vision_config=tiny_vitdet(windows=False), text_config=tiny_text())
    with pytest.raises(ValueError, match="shifted_window=True needs a window-attention ViT"):
        DITOConfig(vision_config=ViTConfig(image_size=32, patch_size=8), text_config=tiny_text())
    # a plain ViT works without the shifted window: its tokens after the CLS token form the grid
    torch.manual_seed(0)
    vit = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
    )
    model = DITOModel.from_towers(vit, tiny_text(), shifted_window=False, **HEAD).double().eval()
    x = pixels(2)
    tokens = model.vision_model(pixel_values=x).last_hidden_state
    want = model.vision_norm(tokens[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4))
    torch.testing.assert_close(model.patch_grid(x), want, rtol=0, atol=0)
    assert math.isfinite(model(x, **captions(2)).loss.item())
    # a tower that returns only pooled features
    model.vision_model.forward = lambda pixel_values=None, **kw: BaseModelOutput(
        last_hidden_state=torch.zeros(2, 16)
    )
    with pytest.raises(ValueError, match="no spatial output"):
        model(x, **captions(2))
    for bad in (
        {"fpn_levels": [1, 2]},
        {"box_sampling": "grid"},
        {"text_pooling": "max"},
        {"num_random_boxes": -1},
    ):
        with pytest.raises(ValueError):
            DITOConfig(vision_config=tiny_vitdet(), text_config=tiny_text(), **bad)
    with pytest.raises(ValueError, match="nothing to train"):
        DITOConfig(
            vision_config=tiny_vitdet(), text_config=tiny_text(), image_loss_weight=0, region_loss_weight=0
        )
    with pytest.raises(ValueError, match="one caption per image"):
        tiny_model()(pixels(2), **captions(3))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(num_random_boxes=1, region_loss_weight=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(1)
    model(pixels(3), **captions(3)).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path / "dito")
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 24.0], [4.0, 4.0, 12.0, 12.0]]] * 3, dtype=torch.float64)
    model.eval()
    want = model(pixels(3), boxes=boxes, **captions(3))
    for loaded in (
        AutoModel.from_pretrained(tmp_path / "dito"),
        DITOModel.from_pretrained(tmp_path / "dito"),
    ):
        assert type(loaded) is DITOModel
        loaded = loaded.double().eval()
        mine, theirs = model.state_dict(), loaded.state_dict()
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
        got = loaded(pixels(3), boxes=boxes, **captions(3))
        for name in ("loss", "image_embeds", "text_embeds", "region_embeds"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=TOL)
    config = json.loads((tmp_path / "dito" / "config.json").read_text())
    assert config["model_type"] == "dito_dual_encoder" and config["region_loss_weight"] == 0.5
    assert config["vision_config"]["model_type"] == "vitdet" and config["shifted_window"] is True
    card = (tmp_path / "dito" / "README.md").read_text()
    assert (
        "Detection-Oriented Image-Text Pretraining" in card
        and "per_level" in card
        and "P2, P3, P4, P5" in card
    )


# -- data, training, recipe ----------------------------------------------------------------------------------------


def write_coco(root, n: int = 6):
    """A COCO-style caption folder with `n` random images per split."""
    rng = np.random.default_rng(0)
    words = "a man dog cat red car sits runs on the grass street".split()
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            name = f"{i}.jpg"
            arr = (rng.random((40, 36, 3)) * 255).astype("uint8")
            Image.fromarray(arr).save(root / f"{split}2017" / name)
            images.append({"id": i + 1, "file_name": name})
            for k in range(2):
                anns.append({"image_id": i + 1, "caption": " ".join(rng.choice(words, 4)), "id": 10 * i + k})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    return root


def test_collator_makes_pixels_and_tokens(tmp_path):
    tokenizer = bert_tokenizer(tmp_path / "tok")
    config = DITOConfig(vision_config=tiny_vitdet(), text_config=tiny_text(len(tokenizer)), **HEAD)
    image = Image.fromarray((np.arange(40 * 36 * 3) % 256).astype("uint8").reshape(40, 36, 3))
    rows = [{"image": image, "captions": ["a dog runs", "a cat"]}, {"image": image, "captions": "a red car"}]
    batch = DITOCollator.from_config(config, tokenizer)(rows)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"].shape == batch["input_ids"].shape
    train = DITOCollator.from_config(config, tokenizer, train=True, seed=3)(rows)
    assert train["pixel_values"].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="no column 'captions'"):
        DITOCollator.from_config(config, tokenizer)([{"image": image}])


def test_trainer_trains_logs_components_saves_and_evaluates(tmp_path):
    root = write_coco(tmp_path / "coco")
    data = load_coco_captions("train", root=root)
    tokenizer = bert_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    model = DITOModel.from_towers(tiny_vitdet(), tiny_text(len(tokenizer)), **HEAD)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DITOTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = DITOTrainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and {"image_clip", "region_clip", "region_accuracy", "logit_scale"} <= set(logged[0])
    for prefix in ("vision_model.", "fpn.", "region_head.", "text_model."):
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith(prefix))
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    metrics = dito_retrieval_metrics(model, load_coco_captions("val", root=root), tokenizer, ks=(1, 5))
    assert 0 <= metrics["image_to_text_recall@1"] <= 100 and "text_to_image_recall@5" in metrics
    trainer.save_model(str(tmp_path / "final"))
    assert type(AutoModel.from_pretrained(tmp_path / "final")) is DITOModel
    with pytest.raises(TypeError, match="needs a DITOModel"):
        DITOTrainer(model=torch.nn.Linear(2, 2), args=args)
    with pytest.raises(ValueError, match="tokenizer"):
        DITOTrainer(model=model, args=args, train_dataset=data)


def test_recipe_task_runs_a_tiny_recipe(tmp_path):
    register_recipe_task(DITO_TASK, replace=True)
    root = write_coco(tmp_path / "coco")
    tok_dir = tmp_path / "tok"
    tokenizer = bert_tokenizer(tok_dir)
    tokenizer.save_pretrained(tok_dir)
    vision = {**tiny_vitdet().to_diff_dict(), "model_type": "vitdet"}
    text = {**tiny_text(len(tokenizer)).to_diff_dict(), "model_type": "bert"}
    recipe = {
        "task": "dito",
        "model": {"vision_config": vision, "text_config": text, "tokenizer": str(tok_dir), **HEAD},
        "data": {"train": {"split": "train", "root": str(root)}, "eval": {"split": "val", "root": str(root)}},
        "method": {"box_sampling": "assigned", "num_random_boxes": 2, "shifted_window": True},
        "args": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 3,
                 "save_strategy": "no", "disable_tqdm": True, "use_cpu": True},
    }  # fmt: skip
    results = run_recipe(recipe)
    assert results["train_rows"] == 6 and "image_to_text_recall@1" in results["after"]
    assert set(results["before"]) == set(results["after"])
    saved = AutoModel.from_pretrained(results["output"])
    assert saved.config.box_sampling == "assigned" and saved.config.num_random_boxes == 2
    with pytest.raises(ValueError, match="box_sampling"):
        run_recipe({**recipe, "method": {"box_sampling": "sideways"}})


# -- two processes ---------------------------------------------------------------------------------------------


def _global_batch(size: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    image = F.normalize(torch.randn(size, 5, dtype=torch.float64, generator=g), dim=-1)
    text = F.normalize(torch.randn(size, 5, dtype=torch.float64, generator=g), dim=-1)
    regions = F.normalize(torch.randn(size, 3, 5, dtype=torch.float64, generator=g), dim=-1)
    return image, text, regions


def _two_process_worker(out: str) -> None:
    """Run by `torchrun` (this file as a script): each rank scores its half of one global batch with gathered
    negatives; rank 0 writes the loss and input gradients next to those of one process on the whole batch."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loss = DITOLoss(image_loss_weight=0.6, region_loss_weight=1.4, gather=True)
    full = [t.clone().requires_grad_(True) for t in _global_batch()]
    single = DITOLoss(image_loss_weight=0.6, region_loss_weight=1.4, gather=False)
    reference = single(full[0], full[1], 9.0, region_embeds=full[2]).loss
    reference.backward()
    rows = slice(3 * rank, 3 * rank + 3)
    local = [t.detach()[rows].clone().requires_grad_(True) for t in full]
    local_loss = loss(local[0], local[1], 9.0, region_embeds=local[2]).loss
    local_loss.backward()
    # mean of the per-rank losses = the whole-batch loss; gathering sums each slice's gradient over ranks, so the
    # gradient of a rank's rows is `world` times their whole-batch gradient (DDP divides by `world`)
    mean_loss = local_loss.detach().clone()
    dist.all_reduce(mean_loss)
    grads = [t.grad / world for t in local]
    gathered = [[torch.zeros_like(g) for _ in range(world)] for g in grads]
    for g, bucket in zip(grads, gathered):
        dist.all_gather(bucket, g.contiguous())
    if rank == 0:
        result = {
            "loss_diff": abs(float(mean_loss) / world - float(reference)),
            "loss": float(reference),
            "grad_diff": max(float((torch.cat(b) - t.grad).abs().max()) for b, t in zip(gathered, full)),
            "grad_max": max(float(t.grad.abs().max()) for t in full),
        }
        Path(out).write_text(json.dumps(result))
    end_worker()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
)
def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "result.json"
    run_two_processes(Path(__file__), out, timeout=240)
    r = json.loads(out.read_text())
    assert r["loss_diff"] <= TOL * max(1.0, r["loss"]), r
    assert r["grad_diff"] <= TOL * max(1.0, r["grad_max"]), r


if __name__ == "__main__":
    _two_process_worker(sys.argv[1])
