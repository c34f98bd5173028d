"""Dense features: spatial maps of vision backbones, crop geometry and positive cell pairs against hand
computations, the two-view transform's geometry against the pixels it produced, and the dense correspondence
score."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    ConvNextConfig,
    ConvNextModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTMAEConfig,
    ViTMAEModel,
    ViTModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hf_contrastive.vision.dense.features import (
    TwoViewTransform,
    ViewGeometry,
    cell_centers,
    dense_correspondence_score,
    geometry_tensor,
    positive_pairs,
    spatial_features,
)
from tests.tiny_models import summation_tolerance

logging.getLogger("transformers").setLevel(logging.ERROR)

TOKENS = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2}


# -- crop geometry --------------------------------------------------------------------------------------------


def test_cell_centres_by_hand_with_and_without_flip():
    # box 8 x 8 from (0, 0), 2 x 2 grid: bins of 4 pixels, centres at 2 and 6, rows first
    plain = cell_centers(ViewGeometry(0, 0, 8, 8), 2)
    assert plain.tolist() == [[2.0, 2.0], [6.0, 2.0], [2.0, 6.0], [6.0, 6.0]]
    # mirrored: column 0 of the view shows the crop's right column
    flipped = cell_centers(ViewGeometry(0, 0, 8, 8, flipped=True), 2)
    assert flipped.tolist() == [[6.0, 2.0], [2.0, 2.0], [6.0, 6.0], [2.0, 6.0]]
    # a non-square grid of an offset box: bins of 10/2 = 5 by 6/3 = 2 pixels
    offset = cell_centers(ViewGeometry(10, 4, 20, 10), (3, 2))
    assert offset.tolist() == [[12.5, 5.0], [17.5, 5.0], [12.5, 7.0], [17.5, 7.0], [12.5, 9.0], [17.5, 9.0]]
    batch = cell_centers([ViewGeometry(0, 0, 8, 8), ViewGeometry(0, 0, 8, 8, True)], 2)
    assert batch.shape == (2, 4, 2) and torch.equal(batch[1], flipped)


def test_positive_pairs_by_hand_on_known_crops():
    a = ViewGeometry(0, 0, 8, 8)  # centres (2,2) (6,2) (2,6) (6,6); bin diagonal sqrt(32)
    b = ViewGeometry(4, 0, 12, 8)  # centres (6,2) (10,2) (6,6) (10,6)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 0] = expected[3, 2] = (
        True  # same centre; the next nearest is 4 px = 0.707 diagonals: not < 0.7
    )
    assert torch.equal(positive_pairs(a, b, 2)[0], expected)
    # view B mirrored: its columns swap, so do the positives
    b_flip = ViewGeometry(4, 0, 12, 8, flipped=True)  # centres (10,2) (6,2) (10,6) (6,6)
    expected_flip = torch.zeros(4, 4, dtype=torch.bool)
    expected_flip[1, 1] = expected_flip[3, 3] = True
    assert torch.equal(positive_pairs(a, b_flip, 2)[0], expected_flip)
    # both mirrored
    a_flip = ViewGeometry(0, 0, 8, 8, flipped=True)  # centres (6,2) (2,2) (6,6) (2,6)
    both = torch.zeros(4, 4, dtype=torch.bool)
    both[0, 1] = both[2, 3] = True
    assert torch.equal(positive_pairs(a_flip, b_flip, 2)[0], both)
    # a larger threshold admits the 4 px neighbours (4 / sqrt(32) = 0.7071 < 0.75)
    loose = positive_pairs(a, b, 2, threshold=0.75)[0]
    assert loose[0, 0] and loose[1, 0] and not loose[0, 1]
    # views of different scale: the larger bin diagonal (of B: sqrt(128)) is the unit
    big = ViewGeometry(0, 0, 16, 16)  # centres (4,4) (12,4) (4,12) (12,12)
    scaled = positive_pairs(a, big, 2)[0]
    assert scaled[:, 0].all()  # every A centre is sqrt(8) = 0.25 diagonals from (4, 4)
    assert scaled[1, 1] and not scaled[0, 1]  # (6,2)-(12,4): 0.559; (2,2)-(12,4): 0.901
    # crops that do not overlap
    far = ViewGeometry(100, 100, 108, 108)
    assert not positive_pairs(a, far, 2).any()


def _loop_positives(geo_a, geo_b, grid_a, grid_b, threshold):
    """The definition written out cell by cell in Python floats."""

    def centres(g, grid):
        h, w = grid
        out = []
        for i in range(h):
            for j in range(w):
                u = (w - 1 - j + 0.5) / w if g.flipped else (j + 0.5) / w
                out.append((g.x0 + u * (g.x1 - g.x0), g.y0 + (i + 0.5) / h * (g.y1 - g.y0)))
        return out, math.hypot((g.x1 - g.x0) / w, (g.y1 - g.y0) / h)

    ca, da = centres(geo_a, grid_a)
    cb, db = centres(geo_b, grid_b)
    return torch.tensor(
        [[math.hypot(p[0] - q[0], p[1] - q[1]) / max(da, db) < threshold for q in cb] for p in ca]
    )


def test_positive_pairs_match_a_loop_on_random_crops():
    g = torch.Generator().manual_seed(0)
    geos_a, geos_b = [], []
    for _ in range(6):
        boxes = []
        for _ in range(2):
            x0, y0 = torch.randint(0, 30, (2,), generator=g).tolist()
            w, h = torch.randint(8, 40, (2,), generator=g).tolist()
            boxes.append(ViewGeometry(x0, y0, x0 + w, y0 + h, bool(torch.randint(0, 2, (), generator=g))))
        geos_a.append(boxes[0])
        geos_b.append(boxes[1])
    got = positive_pairs(geos_a, geos_b, (3, 4), 0.7, grid_hw_b=(2, 5))
    assert got.shape == (6, 12, 10)
    for k in range(6):
        assert torch.equal(got[k], _loop_positives(geos_a[k], geos_b[k], (3, 4), (2, 5), 0.7)), k
    assert got.any() and not got.all()
    # tensors [B, 5] give the same answer as ViewGeometry lists
    assert torch.equal(
        positive_pairs(geometry_tensor(geos_a), geometry_tensor(geos_b), (3, 4), 0.7, (2, 5)), got
    )


def test_geometry_inputs_are_checked():
    with pytest.raises(ValueError, match="x1 > x0"):
        ViewGeometry(5, 0, 5, 4)
    with pytest.raises(ValueError, match="finite"):
        ViewGeometry(0, 0, math.inf, 4)
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        geometry_tensor(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="ViewGeometry"):
        geometry_tensor([(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="same number"):
        positive_pairs([ViewGeometry(0, 0, 4, 4)] * 2, [ViewGeometry(0, 0, 4, 4)], 2)
    with pytest.raises(ValueError, match="threshold"):
        positive_pairs(ViewGeometry(0, 0, 4, 4), ViewGeometry(0, 0, 4, 4), 2, threshold=0)
    with pytest.raises(ValueError, match="grid_hw"):
        cell_centers(ViewGeometry(0, 0, 4, 4), (0, 2))
    geo = ViewGeometry.from_crop(top=3, left=5, height=10, width=20, flipped=True)
    assert (geo.x0, geo.y0, geo.x1, geo.y1, geo.flipped) == (5.0, 3.0, 25.0, 13.0, True)


def _ramp(height: int, width: int) -> torch.Tensor:
    """An image whose pixels hold their own centre coordinates: channel 0 is x, channel 1 is y."""
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    return torch.stack(
        [xs.expand(height, width), ys[:, None].expand(height, width), torch.zeros(height, width)]
    )


def test_two_view_geometry_matches_the_pixels_it_produced():
    # Each output pixel of a view is a cell of a grid the size of the view: its value (the ramp, resampled
    # bilinearly, which keeps a linear function exact away from the crop's border) is its own centre.
    size, border = 24, 2
    image = _ramp(20, 20) / 20  # views are clipped to [0, 1]
    transform = TwoViewTransform(size, scale=(0.2, 0.6), photometric=False, mean=(0, 0, 0), std=(1, 1, 1))
    seen_flips = set()
    for seed in range(8):
        view_a, view_b, geo_a, geo_b = transform(image, torch.Generator().manual_seed(seed))
        for view, geo in ((view_a, geo_a), (view_b, geo_b)):
            assert view.shape == (3, size, size)
            assert 0 <= geo.x0 < geo.x1 <= 20 and 0 <= geo.y0 < geo.y1 <= 20
            seen_flips.add(geo.flipped)
            centres = cell_centers(geo, size).reshape(size, size, 2).to(torch.float32)
            inner = (slice(border, size - border), slice(border, size - border))
            tol = summation_tolerance(torch.float32, 20.0, 8)
            torch.testing.assert_close(20 * view[0][inner], centres[..., 0][inner], rtol=0, atol=tol)
            torch.testing.assert_close(20 * view[1][inner], centres[..., 1][inner], rtol=0, atol=tol)
    assert seen_flips == {False, True}
    # same generator seed, same views
    first = transform(image, torch.Generator().manual_seed(3))
    again = transform(image, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0]) and first[2] == again[2] and first[3] == again[3]


def test_photometric_views_stay_in_range_and_keep_geometry():
    image = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0))
    plain = TwoViewTransform(16, photometric=False, mean=(0, 0, 0), std=(1, 1, 1))
    colour = TwoViewTransform(16, photometric=True, mean=(0, 0, 0), std=(1, 1, 1))
    a = plain(image, torch.Generator().manual_seed(5))
    b = colour(image, torch.Generator().manual_seed(5))
    assert b[2] == a[2]  # the crop and flip are drawn first, so the geometry of view A is the same
    assert b[0].min() >= 0 and b[0].max() <= 1


# -- spatial features ------------------------------------------------------------------------------------------


def _tokens_on_grid(tokens: torch.Tensor, leading: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Token `leading + r * grid_w + c` at cell `(r, c)`, written out."""
    batch, _, dim = tokens.shape
    out = torch.empty(batch, dim, grid_h, grid_w, dtype=tokens.dtype)
    for r in range(grid_h):
        for c in range(grid_w):
            out[:, :, r, c] = tokens[:, leading + r * grid_w + c]
    return out


def test_vit_tokens_are_laid_on_the_patch_grid():
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=16, patch_size=8, **TOKENS), add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = vit(pixel_values=pixels).last_hidden_state  # [2, 1 + 4, 16]
        fmap = spatial_features(vit, pixels)
    assert torch.equal(fmap, _tokens_on_grid(tokens, 1, 2, 2))
    # another input size: position embeddings interpolated, grid from the input
    with torch.no_grad():
        wide = spatial_features(vit, torch.randn(1, 3, 16, 32))
    assert wide.shape == (1, 16, 2, 4)


def test_register_tokens_and_mae_without_masking():
    torch.manual_seed(0)
    reg = Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(image_size=16, patch_size=8, num_register_tokens=3, **TOKENS)
    ).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = reg(pixel_values=pixels).last_hidden_state  # CLS + 3 registers + 4 patches
        assert tokens.shape[1] == 8
        assert torch.equal(spatial_features(reg, pixels), _tokens_on_grid(tokens, 4, 2, 2))
    mae = ViTMAEModel(ViTMAEConfig(image_size=16, patch_size=8, mask_ratio=0.0, **TOKENS)).eval()
    with torch.no_grad():
        ordered = mae(pixel_values=pixels, noise=torch.arange(4.0).expand(2, 4)).last_hidden_state
        assert torch.equal(spatial_features(mae, pixels), _tokens_on_grid(ordered, 1, 2, 2))
    mae.config.mask_ratio = 0.75
    with pytest.raises(ValueError, match="mask_ratio=0.75"):
        spatial_features(mae, pixels)


@pytest.mark.parametrize("family", ["convnext", "resnet"])
def test_feature_maps_are_returned_as_they_are(family):
    torch.manual_seed(0)
    if family == "convnext":
        model = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 12], depths=[1, 1], num_stages=2)).eval()
    else:
        model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1])).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state
        assert torch.equal(spatial_features(model, pixels), expected)
    assert expected.shape[:2] == (2, 12) and expected.dim() == 4


class _PooledOnly(nn.Module):
    """A backbone that returns only pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ViTConfig(image_size=16, patch_size=8, **TOKENS)
        self.proj = nn.Linear(3, 16)

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=self.proj(pixel_values.mean(dim=(2, 3))))


def test_a_backbone_without_spatial_output_is_refused():
    with pytest.raises(ValueError, match=r"no spatial output.*pooler_output: \(2, 16\)"):
        spatial_features(_PooledOnly(), torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        spatial_features(_PooledOnly(), torch.randn(3, 16, 16))


# -- dense correspondence score --------------------------------------------------------------------------------


def _position_images(n: int, side: int = 40) -> list[torch.Tensor]:
    """Images whose pixels hold their centre coordinates (scaled to [0, 1]) and the image's index."""
    images = []
    for k in range(n):
        ramp = _ramp(side, side) / side
        ramp[2] = (k + 1) / (n + 1)
        images.append(ramp)
    return images


def _position_features(n: int, side: int = 40, cell: int = 8) -> callable:
    """An oracle: each cell's mean position in original-image pixels, embedded so that cosine similarity falls
    with distance (Gaussian bumps on a 1-px lattice: `<f(p), f(q)>` is proportional to
    `exp(-|p - q|^2 / (4 sigma^2))` and `|f|` is constant), plus a one-hot of the image that outweighs it."""
    lattice = torch.stack(
        torch.meshgrid(torch.arange(-12.0, side + 12.0), torch.arange(-12.0, side + 12.0), indexing="xy"), -1
    ).reshape(-1, 2)
    sigma = 2.0

    def features(pixels: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(pixels.double(), cell)  # [B, 3, h, w]
        batch, _, h, w = cells.shape
        pos = cells[:, :2].permute(0, 2, 3, 1).reshape(-1, 2) * side
        bumps = torch.exp(-(torch.cdist(pos, lattice.double()) ** 2) / (2 * sigma**2))
        bumps = F.normalize(bumps, dim=-1)
        ids = torch.round(cells[:, 2].reshape(-1) * (n + 1) - 1).long()
        onehot = F.one_hot(ids, n).double() * 3.0
        out = torch.cat([bumps, onehot], dim=-1)
        return out.reshape(batch, h, w, -1).permute(0, 3, 1, 2)

    return features


def test_an_oracle_of_positions_finds_its_positives():
    n = 6
    images, oracle = _position_images(n), _position_features(n)
    kwargs = {"image_size": 32, "num_view_pairs": 2, "seed": 1, "mean": (0, 0, 0), "std": (1, 1, 1)}
    result = dense_correspondence_score(oracle, images, **kwargs)
    assert result["grid_h"] == result["grid_w"] == 4 and result["num_images"] == n
    assert result["candidates_per_query"] == n * 16
    assert result["num_queries"] > 0
    # The nearest cell by distance is a positive whenever the query has one (positives are defined by distance),
    # and the image one-hot keeps other images out of first place: the oracle misses only where two cells are
    # equally near up to the pooled positions' border error, so at most a few queries of a hundred.
    assert result["top1"] == result["top1_within_image"] >= 0.95
    assert result["chance"] < 0.1 < result["chance_within_image"]
    # replayable: the same seed gives the same queries and answers, another seed other views
    assert dense_correspondence_score(oracle, images, **kwargs) == result
    other = dense_correspondence_score(oracle, images, **{**kwargs, "seed": 2})
    assert other != result
    # one image per group: no distractors, the two rates coincide
    alone = dense_correspondence_score(oracle, images, images_per_group=1, **kwargs)
    assert alone["top1"] == alone["top1_within_image"] and alone["chance"] == pytest.approx(
        alone["chance_within_image"]
    )
    assert alone["num_queries"] == result["num_queries"]


def test_constant_features_score_near_chance_and_a_backbone_is_restored_to_its_mode():
    images = _position_images(4)
    constant = dense_correspondence_score(
        lambda p: torch.ones(p.shape[0], 5, 4, 4), images, image_size=32, mean=(0, 0, 0), std=(1, 1, 1)
    )
    # every candidate ties, argmax takes the first cell of the first image: only that image's queries can hit
    assert constant["top1"] <= 0.25 + 1e-12
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, **TOKENS), add_pooling_layer=False).train()
    result = dense_correspondence_score(vit, images, image_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    assert vit.training and 0.0 <= result["top1"] <= 1.0 and result["grid_h"] == 4


def test_score_inputs_are_checked():
    images = _position_images(2)
    with pytest.raises(ValueError, match="num_view_pairs"):
        dense_correspondence_score(lambda p: p, images, image_size=16, num_view_pairs=0)
    with pytest.raises(ValueError, match="no images"):
        dense_correspondence_score(lambda p: p, [], image_size=16)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        dense_correspondence_score(lambda p: p.flatten(2), images, image_size=16)
    with pytest.raises(TypeError, match="callable"):
        dense_correspondence_score(3, images, image_size=16)
