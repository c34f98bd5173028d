"""PixPro: pixel propagation and loss against their formulas in float64, the momentum update and its schedule,
batches without positive pairs, backbone families, saving, the collator, the trainer and the recipe."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, ConvNextConfig, ResNetConfig, ViTConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hf_contrastive.core.engines import EngineError, EngineInfo
from hf_contrastive.recipes import register_recipe_task, run_recipe
from hf_contrastive.vision.dense.features import (
    ViewGeometry,
    geometry_tensor,
    positive_pairs,
    spatial_features,
)
from hf_contrastive.vision.dense.pixpro import (
    PixelPropagation,
    PixProCollator,
    PixProConfig,
    PixProLoss,
    PixProModel,
    PixProTrainer,
    PixProTrainingArguments,
    cosine_momentum,
    dense_feature_size,
    pixel_propagation,
)
from hf_contrastive.vision.dense.pixpro_recipes import PIXPRO_TASK
from tests.tiny_models import summation_tolerance

logging.getLogger("transformers").setLevel(logging.ERROR)

# float64: sums of at most a few hundred terms of size <= 1e2
TOL = summation_tolerance(torch.float64, 1e2, 256)
HEAD = {"projector_hidden_size": 12, "projection_dim": 8, "instance_hidden_size": 10, "instance_dim": 6}


def tiny_backbone(family: str):
    if family == "convnext":
        return ConvNextConfig(hidden_sizes=[8, 12], depths=[1, 1], num_stages=2, image_size=32)
    if family == "resnet":
        return ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
    return ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
    )


def tiny_model(family: str = "convnext", seed: int = 0, **kw) -> PixProModel:
    torch.manual_seed(seed)
    return PixProModel.from_backbone(tiny_backbone(family), image_size=32, **{**HEAD, **kw})


def two_views(batch: int = 3, seed: int = 0, overlap: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    geo_a = [ViewGeometry(0, 0, 32, 32), ViewGeometry(8, 4, 40, 36, True), ViewGeometry(0, 0, 16, 16)][:batch]
    if overlap:
        geo_b = [ViewGeometry(8, 0, 40, 32), ViewGeometry(0, 0, 32, 32), ViewGeometry(4, 4, 24, 24, True)][
            :batch
        ]
    else:
        geo_b = [ViewGeometry(100, 100, 132, 132)] * batch
    return {
        "pixel_values": torch.randn(batch, 3, 32, 32, generator=g, dtype=torch.float64),
        "pixel_values_b": torch.randn(batch, 3, 32, 32, generator=g, dtype=torch.float64),
        "geometry_a": geometry_tensor(geo_a),
        "geometry_b": geometry_tensor(geo_b),
    }


# -- pixel propagation ---------------------------------------------------------------------------------------


def _loop_propagation(x: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """`y_i = sum_j max(cos(x_i, x_j), 0)^gamma * v_j / |v_j|`, cell by cell."""
    batch, dim, h, w = x.shape
    xs, vs = x.flatten(2), v.flatten(2)
    out = torch.zeros_like(vs)
    for b in range(batch):
        for i in range(h * w):
            for j in range(h * w):
                cos = float(xs[b, :, i] @ xs[b, :, j]) / float(xs[b, :, i].norm() * xs[b, :, j].norm())
                s = max(cos, 0.0) + (1e-6 if gamma < 1 else 0.0)
                out[b, :, i] += s**gamma * vs[b, :, j] / vs[b, :, j].norm()
    return out.reshape(batch, v.shape[1], h, w)


@pytest.mark.parametrize("layers", [0, 1, 2])
@pytest.mark.parametrize("gamma", [2.0, 1.0, 0.5])
def test_propagation_matches_the_formula(layers, gamma):
    torch.manual_seed(layers)
    ppm = PixelPropagation(5, gamma=gamma, transform_layers=layers).double().eval()
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        values = ppm.transform(x)
        got = ppm(x)
    expected = _loop_propagation(x, values, gamma)
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)
    if layers == 0:
        assert torch.equal(values, x)
    else:
        assert not torch.equal(values, x)


def test_propagation_weights_by_hand():
    # three cells in 2-d: cos(x0, x1) = 0 and cos(x0, x2) = -1 drop out of y0; gamma only sharpens the rest
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype=torch.float64).T.reshape(1, 2, 1, 3)
    y = pixel_propagation(x, gamma=2.0).reshape(2, 3).T
    torch.testing.assert_close(y[0], torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(y[1], torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(y[2], torch.tensor([-1.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
    diag = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64).T.reshape(1, 2, 1, 2)
    c = 1 / math.sqrt(2)  # cos between (1, 0) and (1, 1)
    y = pixel_propagation(diag, gamma=3.0).reshape(2, 2).T
    # y0 = 1 * (1, 0) + c^3 * (c, c); y1 = c^3 * (1, 0) + 1 * (c, c)
    torch.testing.assert_close(y[0], torch.tensor([1 + c**4, c**4], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(y[1], torch.tensor([c**3 + c, c], dtype=torch.float64), rtol=0, atol=1e-15)


# -- loss ---------------------------------------------------------------------------------------------------


def _cells(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None].requires_grad_(True)


def test_loss_sign_and_scale_by_hand():
    eye = torch.eye(2, dtype=torch.bool)[None]
    same = _cells([1.0, 0.0], [0.0, 1.0])
    loss = PixProLoss()(same, same, same.detach(), same.detach(), eye)
    assert loss.loss.item() == -2.0  # every positive pair aligned in both directions: the minimum
    opposite = _cells([-1.0, 0.0], [0.0, -1.0]).detach()
    assert PixProLoss()(same, same, opposite, opposite, eye).loss.item() == 2.0
    swapped = _cells([0.0, 1.0], [1.0, 0.0]).detach()  # orthogonal to the positives
    out = PixProLoss()(same, same, same.detach(), swapped, eye)
    assert out.loss.item() == pytest.approx(-1.0, abs=1e-15)  # A->B term 0, B->A term 1
    # cosine: the scale of the inputs does not matter
    assert PixProLoss()(same * 5, same * 0.1, same.detach() * 3, swapped, eye).loss.item() == pytest.approx(
        -1.0
    )
    # two positives for one cell: their cosines are averaged
    two = torch.tensor([[[True, True], [False, False]]])
    targets = _cells([1.0, 0.0], [1.0, 1.0]).detach()
    out = PixProLoss()(same, same, targets, targets, two)
    c = 1 / math.sqrt(2)
    # A->B: cell 0 with B cells 0 and 1: (1 + c) / 2; B->A: B cells 0 and 1 with A cell 0: (cos(e0,t0)+cos(e1,t0)) / 2
    assert out.loss.item() == pytest.approx(-((1 + c) / 2 + (1 + 0) / 2), abs=1e-15)
    assert float(out.components["positive_pairs_per_image"]) == 2.0


def test_loss_matches_a_loop_and_detaches_targets():
    g = torch.Generator().manual_seed(0)
    ya, yb = (torch.randn(3, 4, 5, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    ta, tb = (torch.randn(3, 4, 5, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(2))
    pos = torch.rand(3, 4, 4, generator=g) < 0.4
    pos[2] = False  # skipped
    pos[0, 0, 0] = pos[1, 1, 1] = True
    out = PixProLoss()(ya, yb, ta, tb, pos)
    terms = []
    for b in range(2):
        pairs = pos[b].nonzero().tolist()
        t1 = sum(F.cosine_similarity(ya[b, i], tb[b, j], dim=0) for i, j in pairs) / len(pairs)
        t2 = sum(F.cosine_similarity(yb[b, j], ta[b, i], dim=0) for i, j in pairs) / len(pairs)
        terms.append(-(t1 + t2))
    torch.testing.assert_close(out.loss, sum(terms) / 2, rtol=0, atol=TOL)
    assert (
        float(out.components["skipped_images"]) == 1 and float(out.components["images_with_positives"]) == 2
    )
    out.loss.backward()
    assert ta.grad is None and tb.grad is None and ya.grad is not None and torch.isfinite(ya.grad).all()


def test_pixcontrast_and_instance_terms_by_hand():
    tau = 0.3
    q = _cells([1.0, 0.0], [0.0, 1.0])  # one image, two cells
    keys = _cells([1.0, 0.0], [0.6, 0.8]).detach()
    pos = torch.tensor([[[True, False], [False, False]]])  # only A0-B0 positive
    loss = PixProLoss(pixpro_weight=0.0, pixcontrast_weight=1.0, pixcontrast_temperature=tau)
    out = loss(q, q, keys, keys, pos, projected_a=q, projected_b=q)
    # A->B: query A0 (1,0) against B0 (cos 1, positive) and B1 (cos 0.6); B->A: query B0 against A0 and A1
    ab = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau)))
    ba = ab  # same vectors on both sides
    assert out.loss.item() == pytest.approx((ab + ba) / 2, abs=1e-12)
    # instance branch: -mean[cos(p_a, z_b) + cos(p_b, z_a)]
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([[1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    inst = PixProLoss(pixpro_weight=0.0, instance_weight=1.0)
    out = inst(
        q, q, keys, keys, pos, instance_pred_a=p, instance_pred_b=p, instance_target_a=z, instance_target_b=z
    )
    c = 1 / math.sqrt(2)
    assert out.loss.item() == pytest.approx(-((c + c) + (-1 - 1)) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="projected_a"):
        PixProLoss(pixcontrast_weight=1.0)(q, q, keys, keys, pos)
    with pytest.raises(ValueError, match="instance_pred"):
        PixProLoss(instance_weight=1.0)(q, q, keys, keys, pos)


def test_a_batch_without_positive_pairs_gives_a_finite_zero_with_the_skip_counted(caplog):
    y = _cells([1.0, 0.0], [0.0, 1.0])
    none = torch.zeros(1, 2, 2, dtype=torch.bool)
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.dense.pixpro"):
        out = PixProLoss(pixcontrast_weight=1.0)(
            y, y, y.detach(), y.detach(), none, projected_a=y, projected_b=y
        )
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    assert (
        float(out.components["skipped_images"]) == 1
        and "no" in caplog.text
        and "positive cell pair" in caplog.text
    )
    out.loss.backward()
    assert torch.equal(y.grad, torch.zeros_like(y))
    # through the model: crops far apart
    model = tiny_model(pixcontrast_weight=1.0).double()
    batch = two_views(overlap=False)
    result = model(**batch)
    assert result.loss.item() == 0.0 and not result.positives.any()
    result.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert float(model.last_loss_components["skipped_images"]) == 3


def test_loss_inputs_are_checked():
    y = _cells([1.0, 0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"positives must be a bool tensor \[1, 2, 2\]"):
        PixProLoss()(y, y, y, y, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        PixProLoss()(y[0], y, y, y, torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-finite"):
        PixProLoss()(y * math.nan, y, y, y, torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one"):
        PixProLoss(pixpro_weight=0.0)


# -- momentum ----------------------------------------------------------------------------------------------


def test_cosine_momentum_schedule_values():
    assert cosine_momentum(0, 100) == 0.99
    assert cosine_momentum(100, 100) == 1.0
    assert cosine_momentum(50, 100) == pytest.approx(0.995, abs=1e-15)
    assert cosine_momentum(25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-15)
    assert cosine_momentum(150, 100) == 1.0 and cosine_momentum(-3, 100) == 0.99
    values = [cosine_momentum(s, 10, 0.9) for s in range(11)]
    assert values == sorted(values) and values[0] == 0.9
    with pytest.raises(ValueError, match="total_steps"):
        cosine_momentum(1, 0)
    with pytest.raises(ValueError, match="base"):
        cosine_momentum(1, 10, 1.0)


def test_momentum_copy_starts_equal_and_moves_by_the_ema():
    model = tiny_model(instance_weight=1.0).double()
    online = dict(model._online().named_parameters())
    copy = dict(model.momentum_encoder.encoder.named_parameters())
    assert set(online) == set(copy) and any(k.startswith("instance_projector.") for k in copy)
    assert all(torch.equal(online[k], copy[k]) for k in online)
    assert all(not p.requires_grad for p in copy.values())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    before = {k: v.detach().clone() for k, v in copy.items()}
    model.momentum_update(0.9)
    for k in online:
        torch.testing.assert_close(copy[k], 0.9 * before[k] + 0.1 * online[k], rtol=0, atol=1e-15)
    model.momentum_update(1.0)  # the end of the schedule: no change
    after = {k: v.detach().clone() for k, v in copy.items()}
    model.momentum_update(1.0)
    assert all(torch.equal(after[k], copy[k]) for k in copy)
    with pytest.raises(ValueError, match="momentum"):
        model.momentum_update(1.5)


# -- model ------------------------------------------------------------------------------------------------


def test_model_loss_equals_the_formula_on_its_own_branches():
    model = tiny_model(ppm_transform_layers=2).double().eval()
    batch = two_views()
    out = model(**batch)
    with torch.no_grad():
        fa = spatial_features(model.backbone, batch["pixel_values"])
        fb = spatial_features(model.backbone, batch["pixel_values_b"])
        ya, yb = model.ppm(model.projector(fa)), model.ppm(model.projector(fb))
        key = model.momentum_encoder.encoder
        ta = key["projector"](spatial_features(key["backbone"], batch["pixel_values"]))
        tb = key["projector"](spatial_features(key["backbone"], batch["pixel_values_b"]))
    pos = positive_pairs(batch["geometry_a"], batch["geometry_b"], ya.shape[-2:])
    terms = []
    for b in range(3):
        pairs = pos[b].nonzero().tolist()
        assert pairs
        cos = [
            F.cosine_similarity(ya[b].flatten(1)[:, i], tb[b].flatten(1)[:, j], dim=0)
            + F.cosine_similarity(yb[b].flatten(1)[:, j], ta[b].flatten(1)[:, i], dim=0)
            for i, j in pairs
        ]
        terms.append(-sum(cos) / len(pairs))
    torch.testing.assert_close(out.loss, sum(terms) / 3, rtol=0, atol=TOL)
    assert torch.equal(out.positives, pos)


@pytest.mark.parametrize("family", ["convnext", "resnet", "vit"])
def test_every_backbone_family_trains(family):
    model = tiny_model(family, pixcontrast_weight=0.5, instance_weight=0.5).double()
    expected = {"convnext": 12, "resnet": 12, "vit": 16}[family]
    assert dense_feature_size(model.config.backbone_config) == model.config.feature_size == expected
    out = model(**two_views())
    assert out.feature_map.shape[:2] == (3, expected) and out.projected.shape[1] == HEAD["projection_dim"]
    assert torch.isfinite(out.loss) and {"pixpro", "pixcontrast", "instance"} <= set(
        model.last_loss_components
    )
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.") and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    # one view: features only
    single = model(pixel_values=two_views()["pixel_values"])
    assert single.loss is None and single.feature_map.shape == out.feature_map.shape


class _PooledOnly(torch.nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(3, 12).double()

    def forward(self, pixel_values, **kwargs):
        return BaseModelOutputWithPooling(pooler_output=self.proj(pixel_values.mean(dim=(2, 3))))


def test_bad_inputs_are_refused_at_the_boundary():
    model = tiny_model().double()
    batch = two_views()
    with pytest.raises(ValueError, match="geometries"):
        model(pixel_values=batch["pixel_values"], pixel_values_b=batch["pixel_values_b"])
    with pytest.raises(ValueError, match="2 and 3 images"):
        model(pixel_values=batch["pixel_values"][:2], pixel_values_b=batch["pixel_values_b"])
    with pytest.raises(ValueError, match="3 geometries for 2"):
        model(
            **{
                **batch,
                "pixel_values": batch["pixel_values"][:2],
                "pixel_values_b": batch["pixel_values_b"][:2],
            }
        )
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(pixel_values=batch["pixel_values"][0])
    model.backbone = _PooledOnly(model.backbone.config)
    with pytest.raises(ValueError, match="no spatial output"):
        model(**batch)
    with pytest.raises(ValueError, match="ppm_transform_layers"):
        PixProConfig(backbone_config=tiny_backbone("vit"), ppm_transform_layers=3)
    with pytest.raises(ValueError, match="momentum_base"):
        PixProConfig(backbone_config=tiny_backbone("vit"), momentum_base=1.0)
    with pytest.raises(ValueError, match="At least one loss weight"):
        PixProConfig(backbone_config=tiny_backbone("vit"), pixpro_weight=0.0)
    with pytest.raises(ValueError, match="model_type"):
        PixProConfig(backbone_config={"hidden_size": 4})


def _settings(config) -> dict:
    d = config.to_dict()
    d["backbone_config"] = {
        k: v for k, v in d["backbone_config"].items() if k not in ("_name_or_path", "dtype")
    }
    return {k: v for k, v in d.items() if k not in ("_name_or_path", "dtype")}


def test_save_and_load_round_trip_exactly(tmp_path):
    model = tiny_model(instance_weight=0.3, ppm_gamma=1.5).double()
    batch = two_views()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch).loss.backward()  # one step and one EMA update: the copy differs from the online weights
    optimizer.step()
    model.momentum_update(0.9)
    model.save_pretrained(tmp_path / "pixpro")
    for loaded in (
        AutoModel.from_pretrained(tmp_path / "pixpro"),
        PixProModel.from_pretrained(tmp_path / "pixpro"),
    ):
        assert type(loaded) is PixProModel
        loaded = loaded.double()
        assert _settings(loaded.config) == _settings(model.config)
        mine, theirs = model.state_dict(), loaded.state_dict()
        assert set(mine) == set(theirs) and any(k.startswith("momentum_encoder.") for k in mine)
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
        model.eval(), loaded.eval()
        torch.testing.assert_close(model(**batch).loss, loaded(**batch).loss, rtol=0, atol=TOL)
        model.train()
    config = json.loads((tmp_path / "pixpro" / "config.json").read_text())
    assert config["model_type"] == "pixpro_encoder" and config["ppm_gamma"] == 1.5
    card = (tmp_path / "pixpro" / "README.md").read_text()
    assert "Propagate Yourself" in card and "instance branch (BYOL) x 0.3" in card and "0.99 to 1" in card


# -- data, trainer, recipe ----------------------------------------------------------------------------------


def write_images(folder, n: int = 6) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray((rng.random((40 + 4 * i, 48, 3)) * 255).astype("uint8")).save(path)
        paths.append(str(path))
    return paths


def test_collator_gives_two_views_with_geometry_and_replays(tmp_path):
    paths = write_images(tmp_path / "images", 3)
    config = tiny_model().config
    rows = [{"image": p} for p in paths]
    batch = PixProCollator.from_config(config, generator=torch.Generator().manual_seed(0))(rows)
    assert batch["pixel_values"].shape == batch["pixel_values_b"].shape == (3, 3, 32, 32)
    assert batch["geometry_a"].shape == batch["geometry_b"].shape == (3, 5)
    heights = torch.tensor([40.0, 44.0, 48.0])
    for geo in (batch["geometry_a"], batch["geometry_b"]):
        assert (geo[:, 0] >= 0).all() and (geo[:, 2] <= 48).all() and (geo[:, 3] <= heights).all()
        assert set(geo[:, 4].tolist()) <= {0.0, 1.0}
    again = PixProCollator.from_config(config, generator=torch.Generator().manual_seed(0))(rows)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    with pytest.raises(ValueError, match="no 'image' column"):
        PixProCollator()([{"picture": paths[0]}])


def test_trainer_runs_two_steps_with_the_momentum_schedule(tmp_path):
    paths = write_images(tmp_path / "images", 6)
    model = tiny_model(pixcontrast_weight=0.5)
    start = {k: v.detach().clone() for k, v in model.momentum_encoder.encoder.named_parameters()}
    args = PixProTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = PixProTrainer(
        model=model,
        args=args,
        train_dataset=[{"image": p} for p in paths],
        eval_dataset=[{"image": p} for p in paths],
    )
    assert trainer._copies_model_weights()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and {"pixpro", "pixcontrast", "skipped_images", "momentum"} <= set(logged[0])
    assert (
        logged[0]["momentum"] == cosine_momentum(1, 2)
        and logged[1]["momentum"] == cosine_momentum(2, 2) == 1.0
    )
    assert trainer.skipped_images_total == sum(entry["skipped_images"] for entry in logged)
    moved = model.momentum_encoder.encoder.named_parameters()
    assert any(not torch.equal(start[k], v) for k, v in moved)  # step 1 moved the copy (m = 0.995)
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    with pytest.raises(TypeError, match="needs a PixProModel"):
        PixProTrainer(model=torch.nn.Linear(2, 2), args=args)
    with pytest.raises(ValueError, match="two views"):
        trainer.compute_loss(model, {"pixel_values": torch.randn(1, 3, 32, 32)})


def test_recipe_task_runs_a_tiny_recipe(tmp_path):
    register_recipe_task(PIXPRO_TASK, replace=True)
    folder = tmp_path / "images"
    write_images(folder, 6)
    recipe = {
        "task": "pixpro",
        "model": {"backbone_config": {**tiny_backbone("convnext").to_diff_dict(), "model_type": "convnext"},
                  "image_size": 32, **HEAD},
        "data": {"train": {"type": "folder", "path": str(folder)}, "eval": {"type": "folder", "path": str(folder)},
                 "eval_view_pairs": 1},
        "method": {"ppm_gamma": 1.0, "instance_weight": 0.5},
        "args": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 3,
                 "save_strategy": "no", "disable_tqdm": True, "use_cpu": True},
    }  # fmt: skip
    results = run_recipe(recipe)
    assert results["train_rows"] == 6 and results["eval_rows"] == 6
    assert results["before"]["num_queries"] == results["after"]["num_queries"] > 0
    assert 0.0 <= results["after"]["top1"] <= 1.0
    saved = AutoModel.from_pretrained(results["output"])
    assert saved.config.ppm_gamma == 1.0 and saved.config.instance_weight == 0.5
    with pytest.raises(ValueError, match="ppm_transform_layers"):
        run_recipe({**recipe, "method": {"ppm_transform_layers": 5}})


@pytest.mark.parametrize(
    ("engine", "refused"), [("fsdp2", True), ("zero3", True), ("zero2", False), ("ddp", False)]
)
def test_momentum_copy_refused_where_weights_are_sharded(tmp_path, monkeypatch, engine, refused):
    info = {
        "fsdp2": EngineInfo("fsdp2", 2),
        "zero3": EngineInfo("deepspeed", 2, 3),
        "zero2": EngineInfo("deepspeed", 2, 2),
        "ddp": EngineInfo("ddp", 2),
    }[engine]
    args = PixProTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, save_strategy="no"
    )
    trainer = PixProTrainer(model=tiny_model(), args=args, train_dataset=[{"image": "unused.png"}])
    monkeypatch.setattr(type(trainer), "engine", property(lambda self: info))
    if refused:
        with pytest.raises(EngineError, match="momentum"):
            trainer.check_engine()
    else:
        trainer.check_engine()
