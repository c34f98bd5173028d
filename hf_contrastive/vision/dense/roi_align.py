"""RoI-Align (He et al. 2017, Mask R-CNN) in plain PyTorch, and the FPN rule that assigns boxes to levels.

[`roi_align`] follows the semantics of `torchvision.ops.roi_align` (torchvision is not a dependency): each of
the `output_size` bins of a box is the average of `sampling_ratio x sampling_ratio` bilinear samples placed at
the centres of a regular sub-grid of the bin; `sampling_ratio <= 0` takes `ceil(box side / output side)` samples
per bin and axis, per box (torchvision's adaptive rule). With `aligned=True` a box coordinate `x` in image
pixels maps to `x * spatial_scale - 0.5` on the feature map, so that the centre of feature cell `j` sits at image
coordinate `(j + 0.5) / spatial_scale` (Detectron2's `ROIAlignV2`); with `aligned=False` there is no half-pixel
shift and boxes are at least one cell wide. A sample more than one cell outside the map is zero; samples in the
border band are clamped onto the edge, as torchvision does. Gradients flow to the features (not to the boxes).

[`assign_fpn_levels`] is the rule of the FPN paper (Lin et al. 2017, eq. 1) as Detectron2 writes it:
`k = floor(k0 + log2(sqrt(w h) / canonical_box_size + 1e-8))`, clamped to the available levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["assign_fpn_levels", "boxes_to_rois", "roi_align"]


def boxes_to_rois(boxes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """`[K, 5]` rows `(batch index, x1, y1, x2, y2)` from a `[K, 5]` tensor or a list of per-image `[K_i, 4]` boxes.

    Args:
        boxes (`torch.Tensor | Sequence[torch.Tensor]`): a `[K, 5]` tensor (returned as it is) or one `[K_i, 4]`
            tensor of `(x1, y1, x2, y2)` boxes per image of the batch.

    Raises:
        `ValueError`: for any other shape.
    """
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                "roi_align: boxes as one tensor must have shape [K, 5] (batch index, x1, y1, x2, y2), got "
                f"{tuple(boxes.shape)}; pass a list of [K_i, 4] tensors for per-image boxes."
            )
        return boxes
    rows = []
    for index, part in enumerate(boxes):
        if not isinstance(part, torch.Tensor) or part.dim() != 2 or part.shape[1] != 4:
            shape = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
            raise ValueError(
                f"roi_align: boxes[{index}] must be a [K_i, 4] tensor of (x1, y1, x2, y2), got {shape}."
            )
        column = torch.full((part.shape[0], 1), float(index), dtype=part.dtype, device=part.device)
        rows.append(torch.cat([column, part], dim=1))
    if not rows:
        raise ValueError("roi_align: got an empty list of boxes.")
    return torch.cat(rows)


def _axis_weights(
    coords: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps of sample coordinates `coords` along an axis of `size` cells (torchvision's rules).

    Returns `(low index, high index, low weight, high weight)`; the weights are zero for a sample outside
    `[-1, size]`.
    """
    valid = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0.0)
    low = c.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    c = torch.where(at_edge, low.to(c.dtype), c)
    frac = c - low.to(c.dtype)
    w_low = (1.0 - frac) * valid
    w_high = frac * valid
    return low, high, w_low, w_high


def _align_group(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    grid: tuple[int, int],
    aligned: bool,
) -> torch.Tensor:
    """RoI-Align of `rois` `[K, 5]` that share one sub-grid `grid = (gh, gw)`: `[K, C, out_h, out_w]`."""
    _, channels, height, width = features.shape
    out_h, out_w = output_size
    gh, gw = grid
    dtype = features.dtype
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].long()
    x1 = rois[:, 1].to(dtype) * spatial_scale - offset
    y1 = rois[:, 2].to(dtype) * spatial_scale - offset
    x2 = rois[:, 3].to(dtype) * spatial_scale - offset
    y2 = rois[:, 4].to(dtype) * spatial_scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # torchvision's legacy mode: at least one cell wide
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    # sample j of an axis: bin j // g, sub-sample j % g, at the centre of its sub-cell
    steps_y = torch.arange(out_h * gh, device=features.device, dtype=dtype)
    steps_x = torch.arange(out_w * gw, device=features.device, dtype=dtype)
    frac_y = (steps_y // gh) + ((steps_y % gh) + 0.5) / gh
    frac_x = (steps_x // gw) + ((steps_x % gw) + 0.5) / gw
    ys = y1[:, None] + frac_y[None, :] * bin_h[:, None]  # [K, out_h * gh]
    xs = x1[:, None] + frac_x[None, :] * bin_w[:, None]  # [K, out_w * gw]
    y_low, y_high, wy_low, wy_high = _axis_weights(ys, height)
    x_low, x_high, wx_low, wx_high = _axis_weights(xs, width)
    maps = features.permute(0, 2, 3, 1)  # [B, H, W, C]
    b = batch[:, None, None]
    total = None
    for yi, wy in ((y_low, wy_low), (y_high, wy_high)):
        for xi, wx in ((x_low, wx_low), (x_high, wx_high)):
            values = maps[b, yi[:, :, None], xi[:, None, :]]  # [K, Sy, Sx, C]
            term = values * (wy[:, :, None] * wx[:, None, :])[..., None]
            total = term if total is None else total + term
    pooled = total.reshape(rois.shape[0], out_h, gh, out_w, gw, channels).mean(dim=(2, 4))
    return pooled.permute(0, 3, 1, 2).contiguous()


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """Pool a fixed-size feature of each box from a batch of feature maps (`torchvision.ops.roi_align` semantics).

    Args:
        features (`torch.Tensor`): `[B, C, H, W]` feature maps.
        boxes (`torch.Tensor | Sequence[torch.Tensor]`): `[K, 5]` rows `(batch index, x1, y1, x2, y2)` or one
            `[K_i, 4]` tensor per image, in input-image coordinates.
        output_size (`int | tuple[int, int]`): `(out_h, out_w)` bins per box (an int for a square).
        spatial_scale (`float`, *optional*, defaults to `1.0`): feature cells per image pixel (`1 / stride`).
        sampling_ratio (`int`, *optional*, defaults to `-1`): samples per bin and axis; `<= 0` is adaptive
            (`ceil(box side in cells / bins)` per box).
        aligned (`bool`, *optional*, defaults to `True`): shift boxes by half a cell (see the module docstring).

    Returns:
        `torch.Tensor`: `[K, C, out_h, out_w]`, in the dtype of `features`.

    Raises:
        `ValueError`: for a feature map that is not 4-D, a batch index outside the batch, non-finite boxes, or a
            non-positive output size or scale.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"roi_align: features must be a [B, C, H, W] tensor, got {shape}.")
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(int(v) for v in output_size)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(
            f"roi_align: output_size must be a positive int or (out_h, out_w), got {output_size!r}."
        )
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"roi_align: spatial_scale must be a finite number > 0, got {spatial_scale!r}.")
    rois = boxes_to_rois(boxes).to(features.device)
    channels = features.shape[1]
    if rois.shape[0] == 0:
        return features.new_zeros((0, channels, *out))
    if not torch.isfinite(rois).all():
        raise ValueError("roi_align: boxes hold NaN or inf.")
    index = rois[:, 0]
    if (index != index.round()).any() or index.min() < 0 or index.max() >= features.shape[0]:
        raise ValueError(
            f"roi_align: batch indices must be integers in [0, {features.shape[0] - 1}], got values in "
            f"[{float(index.min())}, {float(index.max())}]."
        )
    if sampling_ratio > 0:
        return _align_group(features, rois, out, spatial_scale, (sampling_ratio, sampling_ratio), aligned)
    # adaptive: one group of boxes per distinct sub-grid
    offset = 0.5 if aligned else 0.0
    with torch.no_grad():
        scaled = rois[:, 1:].double() * spatial_scale - offset
        roi_w, roi_h = scaled[:, 2] - scaled[:, 0], scaled[:, 3] - scaled[:, 1]
        if not aligned:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        grid_h = torch.ceil(roi_h / out[0]).long().clamp(min=1)
        grid_w = torch.ceil(roi_w / out[1]).long().clamp(min=1)
    result = features.new_zeros((rois.shape[0], channels, *out))
    keys = torch.stack([grid_h, grid_w], dim=1)
    for key in torch.unique(keys, dim=0):
        rows = (keys == key).all(dim=1).nonzero(as_tuple=True)[0]
        grid = (int(key[0]), int(key[1]))
        result = result.index_copy(
            0, rows, _align_group(features, rois[rows], out, spatial_scale, grid, aligned)
        )
    return result


def assign_fpn_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """The pyramid level of each box by the FPN rule, clamped to `[min_level, max_level]`.

    `k = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`: a box of side
    `canonical_box_size` goes to `canonical_level` (P4 for 224 px, as for ImageNet-size objects), each halving of
    the side one level down.

    Args:
        boxes (`torch.Tensor`): `[..., 4]` boxes `(x1, y1, x2, y2)` (a `[K, 5]` tensor with batch indices also
            works: the last four columns are read).
        min_level (`int`): the finest level available (2 for P2).
        max_level (`int`): the coarsest level available (5 for P5).
        canonical_box_size (`float`, *optional*, defaults to `224.0`): the side mapped to `canonical_level`.
        canonical_level (`int`, *optional*, defaults to `4`): `k0` of the FPN paper.

    Returns:
        `torch.LongTensor`: `[...]` levels.
    """
    if min_level > max_level:
        raise ValueError(f"assign_fpn_levels: min_level {min_level} is above max_level {max_level}.")
    if not canonical_box_size > 0:
        raise ValueError(f"assign_fpn_levels: canonical_box_size must be > 0, got {canonical_box_size!r}.")
    xyxy = boxes[..., -4:].double()
    area = ((xyxy[..., 2] - xyxy[..., 0]).clamp(min=0) * (xyxy[..., 3] - xyxy[..., 1]).clamp(min=0)).sqrt()
    levels = torch.floor(canonical_level + torch.log2(area / canonical_box_size + 1e-8))
    return levels.clamp(min_level, max_level).long()
