"""Dense (per-location) features of vision backbones, crop geometry, and a dense correspondence score.

The parts every dense or region-level method of this wing shares (PixPro, Xie et al. 2021; DITO, Kim et al.
2023):

- [`spatial_features`]: a feature map `[B, C, H, W]` from any transformers vision backbone: a 4-D
  `last_hidden_state` as it is (ConvNeXt, ResNet, VitDet; a channels-last map is moved to channels-first), a
  token sequence (ViT, ViT-MAE without masking, DINOv2 with registers, CLIP's vision tower) reshaped to the
  patch grid after dropping the leading special tokens (CLS, registers);
- crop geometry: [`ViewGeometry`] (the crop box in original-image pixel coordinates and whether the view was
  mirrored), [`TwoViewTransform`] (two augmented views of one image with their geometries; BYOL's
  asymmetric photometric operations), [`cell_centers`] and [`positive_pairs`] (PixPro's positive cell
  pairs: centre distance over the larger of the two views' bin diagonals below 0.7);
- [`dense_correspondence_score`]: an honest dense metric computable on a few dozen images. For two random
  views of each image with known geometry, each cell of view A that has a geometric positive in view B
  queries every cell of view B of every image of the evaluated group (the other images are distractors);
  the query is a top-1 hit when its nearest neighbour by cosine similarity is one of its positives. The
  chance rate of the same queries (positives / candidates) is reported beside it. The views come from a seed
  only, so two models (before and after training) answer exactly the same queries.

Coordinates: a box `(x0, y0, x1, y1)` spans the pixels `x0 <= x < x1`, `y0 <= y < y1` of the original image
(pixel edges on integers). A view resized to a `h x w` feature grid has bins of `(x1 - x0) / w` by
`(y1 - y0) / h` pixels; cell `(i, j)` (row, column of the feature map) has its centre at
`x = x0 + (j + 0.5) (x1 - x0) / w`, `y = y0 + (i + 0.5) (y1 - y0) / h`, with `j` replaced by `w - 1 - j`
when the view was mirrored (column `j` of a mirrored view shows column `w - 1 - j` of the crop).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from hf_contrastive.vision.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Compose,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Solarize,
    ToTensor,
    _crop_resize,
)
from hf_contrastive.vision.modeling import load_image

__all__ = [
    "DEFAULT_POSITIVE_THRESHOLD",
    "TwoViewTransform",
    "ViewGeometry",
    "cell_centers",
    "dense_correspondence_score",
    "geometry_tensor",
    "positive_pairs",
    "spatial_features",
]

DEFAULT_POSITIVE_THRESHOLD = 0.7
"""PixPro's threshold on the centre distance divided by the larger bin diagonal of the two views."""


# ----------------------------------------------------------------------------------------------------------
# spatial features of a backbone
# ----------------------------------------------------------------------------------------------------------


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def _token_grid(config: Any, height: int, width: int, length: int) -> tuple[int, int, int]:
    """`(grid_h, grid_w, leading)`: the patch grid of a token sequence of `length` and its special tokens."""
    patch = _pair(getattr(config, "patch_size", None))
    if patch is not None:
        grid_h, grid_w = height // patch[0], width // patch[1]
        leading = length - grid_h * grid_w
        if grid_h > 0 and grid_w > 0 and leading >= 0:
            return grid_h, grid_w, leading
    # hierarchical backbones (Swin-like) merge patches: find the stride whose grid has exactly `length` cells
    for stride in range(1, max(height, width) + 1):
        if height % stride == 0 and width % stride == 0 and (height // stride) * (width // stride) == length:
            return height // stride, width // stride, 0
    raise ValueError(
        f"spatial_features: cannot lay {length} tokens on a patch grid for an input of {height}x{width} "
        f"(config patch_size={getattr(config, 'patch_size', None)!r}, image_size="
        f"{getattr(config, 'image_size', None)!r}); the backbone's tokens do not form a spatial grid."
    )


def _describe(output: Any) -> str:
    if isinstance(output, Mapping):
        parts = []
        for key, value in output.items():
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            parts.append(f"{key}: {shape}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    return type(output).__name__


def spatial_features(backbone: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """The feature map `[B, C, H, W]` of a transformers vision backbone for `pixel_values` `[B, 3, H_in, W_in]`.

    - A 4-D `last_hidden_state` is returned as it is (ConvNeXt, ResNet, RegNet, VitDet); a channels-last
      `[B, H, W, C]` one (last axis equal to `config.hidden_size`, second axis not) is permuted.
    - A 3-D `last_hidden_state` `[B, L, C]` (ViT, DeiT, DINOv2, CLIP's vision tower, ViT-MAE) is laid on the
      patch grid `(H_in // p, W_in // p)` with `p = config.patch_size`, after dropping the `L - grid` leading
      special tokens (CLS, distillation, registers). When the input size differs from `config.image_size`,
      `interpolate_pos_encoding=True` is passed where the backbone accepts it. Hierarchical token backbones
      (Swin) are laid on the grid whose cell count equals `L`.
    - ViT-MAE must run without masking (`config.mask_ratio == 0`); its tokens are kept in image order by
      passing a non-random `noise`.

    Args:
        backbone (`PreTrainedModel`): a vision backbone called as `backbone(pixel_values=...)`.
        pixel_values (`torch.Tensor`): images `[B, 3, H_in, W_in]`.

    Raises:
        ValueError: when the backbone has no spatial output (no `last_hidden_state`, or a 2-D one, e.g. only
            pooled features); the message names the outputs it returned.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
        raise ValueError(f"spatial_features: pixel_values must be [B, C, H, W], got {shape}.")
    config = getattr(backbone, "config", None)
    model_type = getattr(config, "model_type", "")
    height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    kwargs: dict[str, Any] = {}
    forward = getattr(backbone, "forward", backbone)
    if model_type == "vit_mae":
        ratio = float(getattr(config, "mask_ratio", 0.0))
        if ratio != 0.0:
            raise ValueError(
                f"spatial_features: a ViT-MAE backbone must run without masking to give a full patch grid; "
                f"its config has mask_ratio={ratio}. Set `backbone.config.mask_ratio = 0.0`."
            )
        patch = _pair(config.patch_size)
        num = (height // patch[0]) * (width // patch[1])
        # increasing noise -> identity shuffle: tokens stay in image order
        kwargs["noise"] = torch.arange(num, device=pixel_values.device, dtype=torch.float32).expand(
            pixel_values.shape[0], num
        )
    image_size = _pair(getattr(config, "image_size", None))
    if (
        image_size is not None
        and image_size != (height, width)
        and _accepts(forward, "interpolate_pos_encoding")
    ):
        kwargs["interpolate_pos_encoding"] = True
    output = backbone(pixel_values=pixel_values, **kwargs)
    hidden = None
    if isinstance(output, Mapping) or hasattr(output, "keys"):
        hidden = output.get("last_hidden_state") if hasattr(output, "get") else None
    elif isinstance(output, torch.Tensor):
        hidden = output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() not in (3, 4):
        raise ValueError(
            f"spatial_features: {type(backbone).__name__} has no spatial output: expected a `last_hidden_state` "
            f"of shape [B, C, H, W] or [B, L, C], got {_describe(output)}. Use a backbone that returns a "
            "feature map or patch tokens (ConvNeXt, ResNet, ViT), not only pooled features."
        )
    if hidden.dim() == 4:
        channels = getattr(config, "hidden_size", None)
        # a channels-last map [B, H, W, C] (some backbones keep their layers in that layout)
        channels_last = (
            isinstance(channels, int) and hidden.shape[-1] == channels and hidden.shape[1] != channels
        )
        return hidden.permute(0, 3, 1, 2).contiguous() if channels_last else hidden
    batch, length, dim = hidden.shape
    grid_h, grid_w, leading = _token_grid(config, height, width, int(length))
    tokens = hidden[:, leading:, :]
    return tokens.transpose(1, 2).reshape(batch, dim, grid_h, grid_w)


# ----------------------------------------------------------------------------------------------------------
# crop geometry
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view comes from: its crop box in original-image pixel coordinates and its horizontal flip.

    Args:
        x0 (`float`): left edge of the box.
        y0 (`float`): top edge of the box.
        x1 (`float`): right edge (exclusive), `> x0`.
        y1 (`float`): bottom edge (exclusive), `> y0`.
        flipped (`bool`, *optional*, defaults to `False`): whether the view was mirrored left-right after the
            crop.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    flipped: bool = False

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"ViewGeometry: box coordinates must be finite numbers, got {values!r}.")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(
                f"ViewGeometry: the box must have x1 > x0 and y1 > y0, got (x0, y0, x1, y1) = {values!r}."
            )

    @classmethod
    def from_crop(cls, top: int, left: int, height: int, width: int, flipped: bool = False) -> ViewGeometry:
        """From a `(top, left, height, width)` crop box, as `RandomResizedCrop.get_params` gives it."""
        return cls(float(left), float(top), float(left + width), float(top + height), bool(flipped))

    def to_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`[x0, y0, x1, y1, flipped]` as a tensor of 5 values."""
        return torch.tensor([self.x0, self.y0, self.x1, self.y1, float(self.flipped)], dtype=dtype)


GeometryLike = ViewGeometry | Sequence[ViewGeometry] | torch.Tensor


def geometry_tensor(geometry: GeometryLike, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Geometries as a `[B, 5]` tensor `(x0, y0, x1, y1, flipped)`.

    Args:
        geometry (`ViewGeometry`, a sequence of them, or a tensor `[5]` / `[B, 5]`): the views' geometries.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float64`): dtype of the result.
    """
    if isinstance(geometry, ViewGeometry):
        return geometry.to_tensor(dtype)[None]
    if isinstance(geometry, torch.Tensor):
        out = geometry.to(dtype)
        out = out[None] if out.dim() == 1 else out
        if out.dim() != 2 or out.shape[-1] != 5:
            raise ValueError(
                f"geometry tensors must be [B, 5] (x0, y0, x1, y1, flipped), got shape {tuple(geometry.shape)}."
            )
        if not bool(((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])).all()):
            raise ValueError("geometry tensors must have x1 > x0 and y1 > y0 in every row.")
        return out
    if isinstance(geometry, Sequence) and geometry and all(isinstance(g, ViewGeometry) for g in geometry):
        return torch.stack([g.to_tensor(dtype) for g in geometry])
    raise TypeError(
        "geometry must be a ViewGeometry, a non-empty sequence of ViewGeometry, or a [B, 5] tensor; got "
        f"{type(geometry).__name__}."
    )


def _grid(grid_hw: Any) -> tuple[int, int]:
    pair = _pair(grid_hw)
    if pair is None or pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(
            f"grid_hw must be an int > 0 or a (height, width) pair of ints > 0, got {grid_hw!r}."
        )
    return pair


def _centers_and_diagonals(
    geometry: torch.Tensor, grid_h: int, grid_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres `[B, N, 2]` (x, y; cells in row-major order) and bin diagonals `[B]` of `[B, 5]` geometries."""
    dtype, device = geometry.dtype, geometry.device
    x0, y0, x1, y1, flipped = geometry.unbind(-1)
    cols = (torch.arange(grid_w, dtype=dtype, device=device) + 0.5) / grid_w  # [w]
    rows = (torch.arange(grid_h, dtype=dtype, device=device) + 0.5) / grid_h  # [h]
    # a mirrored view's column j shows the crop's column w - 1 - j
    u = torch.where(flipped[:, None] > 0.5, 1.0 - cols[None], cols[None])  # [B, w]
    xs = x0[:, None] + u * (x1 - x0)[:, None]  # [B, w]
    ys = y0[:, None] + rows[None] * (y1 - y0)[:, None]  # [B, h]
    grid_x = xs[:, None, :].expand(-1, grid_h, -1)
    grid_y = ys[:, :, None].expand(-1, -1, grid_w)
    centres = torch.stack([grid_x, grid_y], dim=-1).reshape(geometry.shape[0], grid_h * grid_w, 2)
    diagonals = torch.sqrt(((x1 - x0) / grid_w) ** 2 + ((y1 - y0) / grid_h) ** 2)
    return centres, diagonals


def cell_centers(geometry: GeometryLike, grid_hw: int | tuple[int, int]) -> torch.Tensor:
    """Centres of the feature-map cells in original-image coordinates, cells in row-major order.

    Args:
        geometry (`ViewGeometry`, a sequence of them, or a `[B, 5]` tensor): the views' geometries.
        grid_hw (`int` or `tuple[int, int]`): the feature map's `(height, width)`.

    Returns:
        `torch.Tensor`: `[N, 2]` `(x, y)` for one `ViewGeometry`, `[B, N, 2]` otherwise (float64 unless a
        tensor of another float dtype was given), `N = height * width`.
    """
    grid_h, grid_w = _grid(grid_hw)
    dtype = geometry.dtype if isinstance(geometry, torch.Tensor) and geometry.is_floating_point() else None
    geo = geometry_tensor(geometry, dtype or torch.float64)
    centres, _ = _centers_and_diagonals(geo, grid_h, grid_w)
    return centres[0] if isinstance(geometry, ViewGeometry) else centres


def positive_pairs(
    geom_a: GeometryLike,
    geom_b: GeometryLike,
    grid_hw: int | tuple[int, int],
    threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    grid_hw_b: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """PixPro's positive cell pairs between two views of the same images.

    Cells `i` of view A and `j` of view B are positive when `||c_i - c_j|| / max(d_A, d_B) < threshold`, with
    `c` the cell centres in original-image coordinates (see [`cell_centers`]) and `d` each view's bin diagonal.

    Args:
        geom_a (`ViewGeometry`, a sequence of them, or a `[B, 5]` tensor): geometries of the first views.
        geom_b (`ViewGeometry`, a sequence of them, or a `[B, 5]` tensor): geometries of the second views
            (same number as `geom_a`).
        grid_hw (`int` or `tuple[int, int]`): the feature map's `(height, width)` (of view A).
        threshold (`float`, *optional*, defaults to `0.7`): PixPro's positive threshold, `> 0`.
        grid_hw_b (`int` or `tuple[int, int]`, *optional*): view B's grid when it differs from view A's.

    Returns:
        `torch.BoolTensor`: `[B, N_a, N_b]` (cells in row-major order).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"positive_pairs: threshold must be a number > 0, got {threshold!r}.")
    grid_a = _grid(grid_hw)
    grid_b = _grid(grid_hw_b) if grid_hw_b is not None else grid_a
    a, b = geometry_tensor(geom_a), geometry_tensor(geom_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"positive_pairs: geom_a and geom_b must describe the same number of images, got {a.shape[0]} and "
            f"{b.shape[0]}."
        )
    centres_a, diag_a = _centers_and_diagonals(a, *grid_a)
    centres_b, diag_b = _centers_and_diagonals(b.to(a.device), *grid_b)
    distance = torch.cdist(centres_a, centres_b)  # [B, Na, Nb]
    scale = torch.maximum(diag_a, diag_b)[:, None, None]
    return (distance / scale) < threshold


# ----------------------------------------------------------------------------------------------------------
# two augmented views with their geometry
# ----------------------------------------------------------------------------------------------------------


class TwoViewTransform:
    r"""Two augmented views of an image and their geometries (PixPro's pipeline, BYOL's augmentations).

    Each view: RandomResizedCrop (`scale`, default 0.08-1, ratio 3/4-4/3) whose box is kept, a horizontal flip
    with probability `flip_p` (kept), then the photometric operations of BYOL (Grill et al. 2020), asymmetric
    between the two views: colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale p 0.2, Gaussian blur
    (sigma 0.1-2) with p 1.0 / 0.1, solarisation with p 0.0 / 0.2; then normalisation. With
    `photometric=False` only the crop, flip and normalisation are applied (what the dense evaluation uses).

    Calling it returns `(view_a, view_b, geom_a, geom_b)`: two `[3, size, size]` tensors and two
    [`ViewGeometry`].

    Args:
        size (`int` or `tuple[int, int]`, *optional*, defaults to `224`): output size of each view.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): area range of the crops.
        ratio (`tuple[float, float]`, *optional*, defaults to `(3/4, 4/3)`): aspect-ratio range of the crops.
        flip_p (`float`, *optional*, defaults to `0.5`): probability of the horizontal flip of each view.
        photometric (`bool`, *optional*, defaults to `True`): apply BYOL's colour operations.
        jitter (`tuple[float, float, float, float]`, *optional*, defaults to `(0.4, 0.4, 0.2, 0.1)`):
            brightness, contrast, saturation, hue.
        jitter_p (`float`, *optional*, defaults to `0.8`): probability of the colour jitter.
        grayscale_p (`float`, *optional*, defaults to `0.2`): probability of the grayscale conversion.
        blur_p (`tuple[float, float]`, *optional*, defaults to `(1.0, 0.1)`): blur probability per view.
        solarize_p (`tuple[float, float]`, *optional*, defaults to `(0.0, 0.2)`): solarisation probability per
            view.
        mean (`Sequence[float]`, *optional*, defaults to ImageNet's): normalisation mean.
        std (`Sequence[float]`, *optional*, defaults to ImageNet's): normalisation std.
        interpolation (`str`, *optional*, defaults to `"bilinear"`): resampling of the crops.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_p: float = 0.5,
        photometric: bool = True,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float] = (1.0, 0.1),
        solarize_p: tuple[float, float] = (0.0, 0.2),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        self.crop = RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=interpolation)
        self.size = self.crop.size
        self.interpolation = interpolation
        self.flip = RandomHorizontalFlip(flip_p)
        self.photometric = bool(photometric)
        if len(jitter) != 4:
            raise ValueError(
                f"TwoViewTransform: jitter is (brightness, contrast, saturation, hue), got {jitter!r}."
            )
        for name, pair in (("blur_p", blur_p), ("solarize_p", solarize_p)):
            if len(pair) != 2:
                raise ValueError(f"TwoViewTransform: {name} gives one probability per view, got {pair!r}.")
        self.colour = [
            Compose(
                [
                    ColorJitter(*jitter, p=jitter_p),
                    RandomGrayscale(grayscale_p),
                    GaussianBlur((0.1, 2.0), p=blur_p[k]),
                    Solarize(0.5, p=solarize_p[k]),
                ]
            )
            for k in range(2)
        ]
        self.normalize = Normalize(mean, std)

    def view(
        self, image: Image.Image | torch.Tensor, index: int = 0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ViewGeometry]:
        """One view (`index` 0 or 1 picks the photometric branch) and its geometry."""
        if isinstance(image, Image.Image):
            height, width = image.height, image.width
        elif isinstance(image, torch.Tensor) and image.dim() == 3:
            height, width = int(image.shape[-2]), int(image.shape[-1])
        else:
            raise TypeError(
                f"TwoViewTransform: expected a PIL image or a [3, H, W] tensor, got {type(image).__name__}."
            )
        top, left, h, w = self.crop.get_params(height, width, generator)
        if isinstance(image, Image.Image):
            pixels = ToTensor()(
                _crop_resize(image.convert("RGB"), top, left, h, w, self.size, self.interpolation)
            )
        else:
            pixels = _crop_resize(image.float(), top, left, h, w, self.size, self.interpolation).clamp(
                0.0, 1.0
            )
        flipped = float(torch.rand((), generator=generator, dtype=torch.float64)) < self.flip.p
        if flipped:
            pixels = pixels.flip(-1)
        if self.photometric:
            pixels = self.colour[index](pixels, generator=generator)
        return self.normalize(pixels), ViewGeometry.from_crop(top, left, h, w, flipped)

    def __call__(
        self, image: Image.Image | torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, ViewGeometry, ViewGeometry]:
        view_a, geom_a = self.view(image, 0, generator)
        view_b, geom_b = self.view(image, 1, generator)
        return view_a, view_b, geom_a, geom_b

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.crop.scale}, flip_p={self.flip.p}, "
            f"photometric={self.photometric})"
        )


# ----------------------------------------------------------------------------------------------------------
# dense correspondence score
# ----------------------------------------------------------------------------------------------------------


def _feature_fn(backbone_or_fn: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(backbone_or_fn, torch.nn.Module) and hasattr(backbone_or_fn, "config"):
        return lambda pixels: spatial_features(backbone_or_fn, pixels)
    if callable(backbone_or_fn):
        return backbone_or_fn
    raise TypeError(
        "dense_correspondence_score: expected a transformers vision backbone or a callable pixel_values -> "
        f"[B, C, H, W], got {type(backbone_or_fn).__name__}."
    )


def _device_of(backbone_or_fn: Any) -> torch.device:
    if isinstance(backbone_or_fn, torch.nn.Module):
        for p in backbone_or_fn.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def dense_correspondence_score(
    backbone_or_feature_fn: Any,
    images: Sequence[Any],
    *,
    image_size: int = 224,
    num_view_pairs: int = 1,
    seed: int = 0,
    scale: tuple[float, float] = (0.2, 1.0),
    threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    images_per_group: int | None = None,
    batch_size: int = 32,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict[str, float]:
    """Dense nearest-neighbour correspondence of two views with known geometry, with other images as distractors.

    For each image and each of `num_view_pairs` pairs, two views are drawn (crop with area `scale`, flip with
    p 0.5, no colour change) from a generator seeded by `(seed, pair, image index)`, so the same seed gives the
    same views for any model. Each cell of view A with at least one geometric positive in view B (see
    [`positive_pairs`]) is a query; its candidates are all cells of the B views of every image of its group
    (`images_per_group` images, all images by default). A query is a top-1 hit when its most cosine-similar
    candidate is one of its positives.

    Args:
        backbone_or_feature_fn (`PreTrainedModel` or `Callable`): a vision backbone (read through
            [`spatial_features`]) or a callable `pixel_values -> [B, C, H, W]`.
        images (`Sequence`): PIL images, image paths or `[3, H, W]` tensors in `[0, 1]`.
        image_size (`int`, *optional*, defaults to `224`): size of the square views.
        num_view_pairs (`int`, *optional*, defaults to `1`): view pairs drawn per image.
        seed (`int`, *optional*, defaults to `0`): seed of the views.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.2, 1.0)`): crop area range (a milder range
            than training's 0.08-1, so that most pairs overlap).
        threshold (`float`, *optional*, defaults to `0.7`): positive threshold of [`positive_pairs`].
        images_per_group (`int`, *optional*): images whose B views form one candidate pool (default: all).
        batch_size (`int`, *optional*, defaults to `32`): views per forward pass.
        mean (`Sequence[float]`, *optional*, defaults to ImageNet's): normalisation mean.
        std (`Sequence[float]`, *optional*, defaults to ImageNet's): normalisation std.

    Returns:
        `dict`: `top1` (share of queries whose nearest candidate is a positive), `chance` (mean over queries of
        positives / candidates), `top1_within_image` (the same with only the query's own image as candidates),
        `chance_within_image`, `num_queries`, `num_images`, `candidates_per_query` (mean), `grid_h`, `grid_w`.
    """
    if not isinstance(num_view_pairs, int) or num_view_pairs < 1:
        raise ValueError(
            f"dense_correspondence_score: num_view_pairs must be an int >= 1, got {num_view_pairs!r}."
        )
    if not images:
        raise ValueError("dense_correspondence_score: got no images.")
    if images_per_group is not None and (not isinstance(images_per_group, int) or images_per_group < 1):
        raise ValueError(
            f"dense_correspondence_score: images_per_group must be an int >= 1 or None, got {images_per_group!r}."
        )
    feature_fn = _feature_fn(backbone_or_feature_fn)
    device = _device_of(backbone_or_feature_fn)
    module = backbone_or_feature_fn if isinstance(backbone_or_feature_fn, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    transform = TwoViewTransform(image_size, scale=scale, photometric=False, mean=mean, std=std)
    loaded = [img if isinstance(img, torch.Tensor) else load_image(img) for img in images]
    group = images_per_group or len(loaded)

    def features(views: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for start in range(0, len(views), batch_size):
            chunk = torch.stack(views[start : start + batch_size]).to(device)
            fmap = feature_fn(chunk)
            if not isinstance(fmap, torch.Tensor) or fmap.dim() != 4:
                raise ValueError(
                    f"dense_correspondence_score: the feature function must return [B, C, H, W], got {_describe(fmap)}."
                )
            out.append(fmap.float().cpu())
        return torch.cat(out)

    hits = hits_within = queries = 0
    chance_sum = chance_within_sum = candidates_sum = 0.0
    grid = (0, 0)
    try:
        for pair in range(num_view_pairs):
            views_a, views_b, geo_a, geo_b = [], [], [], []
            for index, image in enumerate(loaded):
                generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + pair * 100_003 + index)
                va, vb, ga, gb = transform(image, generator)
                views_a.append(va)
                views_b.append(vb)
                geo_a.append(ga)
                geo_b.append(gb)
            fa, fb = features(views_a), features(views_b)
            grid = (int(fa.shape[-2]), int(fa.shape[-1]))
            grid_b = (int(fb.shape[-2]), int(fb.shape[-1]))
            pos = positive_pairs(geo_a, geo_b, grid, threshold, grid_hw_b=grid_b)  # [M, Na, Nb]
            qa = F.normalize(fa.flatten(2).transpose(1, 2), dim=-1)  # [M, Na, C]
            kb = F.normalize(fb.flatten(2).transpose(1, 2), dim=-1)  # [M, Nb, C]
            nb = kb.shape[1]
            for start in range(0, len(loaded), group):
                stop = min(start + group, len(loaded))
                pool = kb[start:stop].reshape(-1, kb.shape[-1])  # [G * Nb, C]
                for i in range(start, stop):
                    has_pos = pos[i].any(dim=1)  # [Na]
                    if not bool(has_pos.any()):
                        continue
                    q = qa[i][has_pos]  # [Q, C]
                    sims = q @ pool.T  # [Q, G * Nb]
                    best = sims.argmax(dim=1)
                    own = i - start
                    in_image = (best >= own * nb) & (best < (own + 1) * nb)
                    local = (best - own * nb).clamp(0, nb - 1)
                    pos_q = pos[i][has_pos]  # [Q, Nb]
                    hit = in_image & pos_q.gather(1, local[:, None]).squeeze(1)
                    best_within = (q @ kb[i].T).argmax(dim=1)
                    hit_within = pos_q.gather(1, best_within[:, None]).squeeze(1)
                    npos = pos_q.sum(dim=1).double()
                    hits += int(hit.sum())
                    hits_within += int(hit_within.sum())
                    queries += int(q.shape[0])
                    chance_sum += float((npos / pool.shape[0]).sum())
                    chance_within_sum += float((npos / nb).sum())
                    candidates_sum += float(pool.shape[0]) * q.shape[0]
    finally:
        if module is not None:
            module.train(was_training)
    denom = max(queries, 1)
    return {
        "top1": hits / denom,
        "chance": chance_sum / denom,
        "top1_within_image": hits_within / denom,
        "chance_within_image": chance_within_sum / denom,
        "num_queries": queries,
        "num_images": len(loaded),
        "candidates_per_query": candidates_sum / denom,
        "grid_h": grid[0],
        "grid_w": grid[1],
    }
