"""Image and caption augmentations of the improved CLIP recipe (Fini et al. 2023), without torchvision.

Image operations work on PIL images and on float tensors `[C, H, W]` with values in `[0, 1]`:

- geometric ones ([`RandomResizedCrop`], [`RandomHorizontalFlip`], [`Resize`], [`CenterCrop`]) keep the type
  they are given;
- photometric ones ([`ColorJitter`], [`RandomGrayscale`], [`GaussianBlur`]) turn a PIL image into a tensor
  first (as [`ToTensor`] does) and return a tensor; [`Normalize`] needs a tensor.

Every random operation is a callable `op(image, generator=None)`: its draws come from the `torch.Generator`
it is given (the global generator when `None`), so seeding the generator replays the same draw. [`Compose`]
passes its generator on to every operation that accepts one, so any other callable (for example a torchvision
transform, where torchvision can be installed) can be put in a pipeline, or passed where a transform is
expected, instead of these.

The three pipelines of the recipe:

- [`global_view_transform`]: the global image, RandomResizedCrop with scale 0.5-1;
- [`strong_view_transform`]: each augmented view, RandomResizedCrop 0.08-1, colour jitter 0.4/0.4/0.4/0.1
  (p 0.8), grayscale (p 0.2), Gaussian blur (sigma 0.1-2, p 0.5), horizontal flip (p 0.5);
- [`eval_transform`]: shorter side resized, centre crop.

Caption operations take a string and a `random.Random` (replayable when seeded) and never return an empty
caption: [`remove_stopwords`], the EDA operations of Wei and Zou (2019) [`random_swap`], [`random_delete`],
[`synonym_replace`], and the two caption views of the recipe, [`weak_caption`] (stop words removed with
probability 0.8) and [`strong_caption`] (stop-word removal, then one EDA operation: synonym 0.4, swap 0.4,
delete 0.2).

The word lists under `hf_contrastive/vision/wordlists/` were written for this package: `stopwords_en.txt`
(English function words: articles, pronouns, prepositions, conjunctions, auxiliaries) and `synonyms_en.tsv`
(common words of image captions, each with a few hand-picked synonyms). They are small on purpose; pass your
own lists (a set of words, a mapping word -> synonyms, or a file path) for anything larger.
"""

from __future__ import annotations

import inspect
import math
import random
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LUMA_WEIGHTS",
    "STOPWORDS_PATH",
    "SYNONYMS_PATH",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "Normalize",
    "RandomApply",
    "RandomGrayscale",
    "Solarize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToTensor",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "eval_transform",
    "gaussian_blur",
    "gaussian_kernel1d",
    "global_view_transform",
    "load_stopwords",
    "load_synonyms",
    "random_delete",
    "random_swap",
    "remove_stopwords",
    "rgb_to_grayscale",
    "strong_caption",
    "strong_view_transform",
    "synonym_replace",
    "weak_caption",
]

ImageLike = Image.Image | torch.Tensor

#: ImageNet statistics (what the improved CLIP recipe normalises with).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: OpenAI CLIP's statistics (those of `CLIPImageProcessor`).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: ITU-R BT.601 luma weights (those of PIL's `convert("L")`).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_WORDLISTS = Path(__file__).resolve().parent / "wordlists"
#: The shipped stop-word list (one word per line, `#` comments).
STOPWORDS_PATH: Path = _WORDLISTS / "stopwords_en.txt"
#: The shipped synonym list (`word<TAB>synonym,synonym,...`, `#` comments).
SYNONYMS_PATH: Path = _WORDLISTS / "synonyms_en.tsv"

_INTERPOLATION = {
    "nearest": (Image.Resampling.NEAREST, "nearest"),
    "bilinear": (Image.Resampling.BILINEAR, "bilinear"),
    "bicubic": (Image.Resampling.BICUBIC, "bicubic"),
}


# ----------------------------------------------------------------------------------------------------------
# checks and random draws
# ----------------------------------------------------------------------------------------------------------


def _check_probability(owner: str, name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= float(p) <= 1.0):
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1], got {p!r}.")
    return float(p)


def _check_size(owner: str, size: Any) -> tuple[int, int]:
    """An `int` (square) or a `(height, width)` pair of positive integers."""
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)
    ):
        raise ValueError(
            f"{owner}: size must be an int > 0 or a (height, width) pair of ints > 0, got {size!r}."
        )
    return int(pair[0]), int(pair[1])


def _check_interpolation(owner: str, interpolation: str) -> str:
    if interpolation not in _INTERPOLATION:
        raise ValueError(
            f"{owner}: interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}."
        )
    return interpolation


def _check_range(
    owner: str, name: str, value: Sequence[float], low: float, high: float, closed_low: bool
) -> tuple:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    )
    if ok:
        a, b = float(value[0]), float(value[1])
        low_ok = (a >= low) if closed_low else (a > low)
        ok = low_ok and a <= b <= high
    if not ok:
        opening = "[" if closed_low else "("
        closing = ")" if math.isinf(high) else "]"
        raise ValueError(
            f"{owner}: {name} must be a (min, max) pair with min <= max, both in "
            f"{opening}{low:g}, {high:g}{closing}; got {value!r}."
        )
    return float(value[0]), float(value[1])


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    """One draw from `U(low, high)`; always consumes one number of the generator."""
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


def _coin(p: float, generator: torch.Generator | None) -> bool:
    """`True` with probability `p`; always consumes one number of the generator (replayable draws)."""
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < p


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in `[low, high]` (both included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _check_tensor(owner: str, image: Any, channels: tuple[int, ...] = (1, 3)) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"{owner}: expected a PIL image or a float tensor [C, H, W], got {type(image).__name__}."
        )
    if image.dim() != 3 or image.shape[0] not in channels:
        raise ValueError(
            f"{owner}: expected a tensor of shape [C, H, W] with C in {channels}, got shape "
            f"{tuple(image.shape)}."
        )
    if not image.is_floating_point():
        raise TypeError(
            f"{owner}: expected a floating-point tensor with values in [0, 1], got dtype {image.dtype} "
            "(convert with ToTensor first)."
        )
    return image


def _as_tensor(owner: str, image: ImageLike, channels: tuple[int, ...] = (1, 3)) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return _pil_to_tensor(image)
    return _check_tensor(owner, image, channels)


def _image_size(owner: str, image: ImageLike) -> tuple[int, int]:
    """`(height, width)` of a PIL image or a `[C, H, W]` tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    _check_tensor(owner, image)
    return int(image.shape[-2]), int(image.shape[-1])


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def _accepts_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# ----------------------------------------------------------------------------------------------------------
# geometric operations
# ----------------------------------------------------------------------------------------------------------


def _crop_resize(
    image: ImageLike, top: int, left: int, height: int, width: int, size: tuple[int, int], interpolation: str
) -> ImageLike:
    """The box `(top, left, height, width)` of `image`, resized to `size = (H, W)`."""
    pil_mode, torch_mode = _INTERPOLATION[interpolation]
    out_h, out_w = size
    if isinstance(image, Image.Image):
        return image.resize((out_w, out_h), resample=pil_mode, box=(left, top, left + width, top + height))
    crop = image[..., top : top + height, left : left + width]
    if (height, width) == (out_h, out_w):
        return crop.clone()
    kwargs = {} if torch_mode == "nearest" else {"align_corners": False, "antialias": True}
    out = F.interpolate(crop[None], size=(out_h, out_w), mode=torch_mode, **kwargs)[0]
    # bicubic overshoots at edges; the photometric operations expect values in [0, 1]
    return out.clamp(0.0, 1.0) if torch_mode == "bicubic" else out


class RandomResizedCrop:
    r"""Crop a random box of random area and aspect ratio, then resize it to `size` (Szegedy et al. 2015).

    The box is drawn as in the standard algorithm: up to 10 tries of an area `s * H * W` with `s ~ U(scale)`
    and an aspect ratio `r = w / h` with `log r ~ U(log ratio)`, `w = round(sqrt(s H W r))`,
    `h = round(sqrt(s H W / r))`, accepted when the box fits, at a uniform position; if no try fits, the
    centre crop of the whole image clipped to the ratio range.

    Args:
        size (`int` or `tuple[int, int]`): output size, square or `(height, width)`.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): range of the box's area as a
            fraction of the image's, within `(0, 1]`.
        ratio (`tuple[float, float]`, *optional*, defaults to `(3/4, 4/3)`): range of the box's width/height.
        interpolation (`str`, *optional*, defaults to `"bicubic"`): `"bicubic"` (as the recipe), `"bilinear"`
            or `"nearest"`.

    Example::

        crop = RandomResizedCrop(224, scale=(0.5, 1.0))
        view = crop(Image.open(path), generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bicubic",
    ) -> None:
        owner = type(self).__name__
        self.size = _check_size(owner, size)
        self.scale = _check_range(owner, "scale", scale, 0.0, 1.0, closed_low=False)
        self.ratio = _check_range(owner, "ratio", ratio, 0.0, math.inf, closed_low=False)
        self.interpolation = _check_interpolation(owner, interpolation)

    def get_params(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """The crop box `(top, left, box_height, box_width)` for an image of `height x width`."""
        area = height * width
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_low, log_high, generator))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(0, height - h, generator)
                left = _randint(0, width - w, generator)
                return top, left, h, w
        # fallback: the centre crop of the largest box within the ratio range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        height, width = _image_size(type(self).__name__, image)
        top, left, h, w = self.get_params(height, width, generator)
        return _crop_resize(image, top, left, h, w, self.size, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomHorizontalFlip:
    """Mirror the image left-right (reverse the columns) with probability `p`.

    Args:
        p (`float`, *optional*, defaults to `0.5`): probability of the flip, in `[0, 1]`.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_probability(type(self).__name__, "p", p)

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        _image_size(type(self).__name__, image)
        if not _coin(self.p, generator):
            return image
        if isinstance(image, Image.Image):
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image.flip(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Resize:
    """Resize the shorter side to `size` (keeping the aspect ratio), or to exactly `(height, width)`.

    With an `int`, the longer side becomes `int(size * long / short)` (truncated, as torchvision does).

    Args:
        size (`int` or `tuple[int, int]`): the shorter side's new length, or the output `(height, width)`.
        interpolation (`str`, *optional*, defaults to `"bicubic"`): `"bicubic"`, `"bilinear"` or `"nearest"`.
    """

    def __init__(self, size: int | tuple[int, int], interpolation: str = "bicubic") -> None:
        owner = type(self).__name__
        _check_size(owner, size)
        self.size = size
        self.interpolation = _check_interpolation(owner, interpolation)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return int(self.size[0]), int(self.size[1])
        if height <= width:
            return self.size, int(self.size * width / height)
        return int(self.size * height / width), self.size

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        height, width = _image_size(type(self).__name__, image)
        return _crop_resize(image, 0, 0, height, width, self.output_size(height, width), self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """The central `size` box; top/left offsets `round((H - h) / 2)`, `round((W - w) / 2)`.

    Args:
        size (`int` or `tuple[int, int]`): output size, square or `(height, width)`; must not exceed the
            image.
    """

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = _check_size(type(self).__name__, size)

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        height, width = _image_size(type(self).__name__, image)
        h, w = self.size
        if h > height or w > width:
            raise ValueError(
                f"CenterCrop: crop size {self.size} is larger than the image ({height}, {width}); "
                "resize first."
            )
        top, left = int(round((height - h) / 2.0)), int(round((width - w) / 2.0))
        if isinstance(image, Image.Image):
            return image.crop((left, top, left + w, top + h))
        return image[..., top : top + h, left : left + w].clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


# ----------------------------------------------------------------------------------------------------------
# photometric operations (float tensors in [0, 1])
# ----------------------------------------------------------------------------------------------------------


def rgb_to_grayscale(image: torch.Tensor, num_output_channels: int = 1) -> torch.Tensor:
    """Luma `0.299 R + 0.587 G + 0.114 B` (ITU-R BT.601) of a `[3, H, W]` tensor, as 1 or 3 channels."""
    image = _check_tensor("rgb_to_grayscale", image, channels=(1, 3))
    if num_output_channels not in (1, 3):
        raise ValueError(f"rgb_to_grayscale: num_output_channels must be 1 or 3, got {num_output_channels}.")
    if image.shape[0] == 1:
        gray = image
    else:
        w = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype, device=image.device).view(3, 1, 1)
        gray = (image * w).sum(dim=0, keepdim=True)
    return gray.expand(num_output_channels, -1, -1).clone()


def _blend(image: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * image + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """`clamp(factor * image)`: 0 gives black, 1 the image."""
    return _blend(_check_tensor("adjust_brightness", image), 0.0, factor)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean luma of the image: 0 gives a uniform grey, 1 the image."""
    image = _check_tensor("adjust_contrast", image)
    mean = rgb_to_grayscale(image).mean()
    return _blend(image, mean, factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the image's grayscale version: 0 gives grey levels, 1 the image."""
    image = _check_tensor("adjust_saturation", image, channels=(3,))
    return _blend(image, rgb_to_grayscale(image), factor)


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(0)
    maxc, _ = image.max(dim=0)
    minc, _ = image.min(dim=0)
    chroma = maxc - minc
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    safe_max = torch.where(grey, torch.ones_like(maxc), maxc)
    sat = chroma / safe_max
    # hue sector by which channel is largest (red wins ties, then green)
    hue_r = ((g - b) / safe_chroma) % 6.0
    hue_g = (b - r) / safe_chroma + 2.0
    hue_b = (r - g) / safe_chroma + 4.0
    hue = torch.where(maxc == r, hue_r, torch.where(maxc == g, hue_g, hue_b)) / 6.0
    hue = torch.where(grey, torch.zeros_like(hue), hue) % 1.0
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(0)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # (R, G, B) for sectors 0..5 of the colour wheel
    table_r = torch.stack([v, q, p, p, t, v])
    table_g = torch.stack([t, v, v, q, p, p])
    table_b = torch.stack([p, p, t, v, v, q])
    idx = sector.unsqueeze(0)
    return torch.cat([tab.gather(0, idx) for tab in (table_r, table_g, table_b)], dim=0)


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in `[-0.5, 0.5]`; 1/3 turns pure red into pure green)."""
    image = _check_tensor("adjust_hue", image, channels=(3,))
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"adjust_hue: shift must be in [-0.5, 0.5], got {shift}.")
    hsv = _rgb_to_hsv(image)
    hsv = torch.stack([(hsv[0] + shift) % 1.0, hsv[1], hsv[2]])
    return _hsv_to_rgb(hsv)


def _jitter_range(
    owner: str, name: str, value: float | tuple[float, float], centre: float, bound: tuple[float, float]
):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{owner}: {name} must be >= 0 (or a (min, max) pair), got {value}.")
        low, high = centre - float(value), centre + float(value)
        low = max(low, bound[0])
        return (low, high)
    lo, hi = _check_range(owner, name, value, bound[0], bound[1], closed_low=True)
    return (lo, hi)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied in a random order, with probability `p`.

    A number `x` for brightness/contrast/saturation draws the factor from `[max(0, 1 - x), 1 + x]`; for hue
    `x` (at most 0.5) draws the shift from `[-x, x]`. A `(min, max)` pair gives the range directly (`(1, 1)`
    and `(0, 0)` for hue leave the image unchanged).

    Args:
        brightness (`float` or `tuple[float, float]`, *optional*, defaults to `0.4`): brightness jitter.
        contrast (`float` or `tuple[float, float]`, *optional*, defaults to `0.4`): contrast jitter.
        saturation (`float` or `tuple[float, float]`, *optional*, defaults to `0.4`): saturation jitter.
        hue (`float` or `tuple[float, float]`, *optional*, defaults to `0.1`): hue jitter, in `[-0.5, 0.5]`.
        p (`float`, *optional*, defaults to `1.0`): probability of jittering at all (the recipe uses 0.8).
    """

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.4,
        contrast: float | tuple[float, float] = 0.4,
        saturation: float | tuple[float, float] = 0.4,
        hue: float | tuple[float, float] = 0.1,
        p: float = 1.0,
    ) -> None:
        owner = type(self).__name__
        self.brightness = _jitter_range(owner, "brightness", brightness, 1.0, (0.0, math.inf))
        self.contrast = _jitter_range(owner, "contrast", contrast, 1.0, (0.0, math.inf))
        self.saturation = _jitter_range(owner, "saturation", saturation, 1.0, (0.0, math.inf))
        if isinstance(hue, (int, float)) and not isinstance(hue, bool):
            if not 0.0 <= hue <= 0.5:
                raise ValueError(
                    f"{owner}: hue must be in [0, 0.5] (or a pair within [-0.5, 0.5]), got {hue}."
                )
            self.hue = (-float(hue), float(hue))
        else:
            self.hue = _check_range(owner, "hue", hue, -0.5, 0.5, closed_low=True)
        self.p = _check_probability(owner, "p", p)

    def get_params(
        self, generator: torch.Generator | None = None
    ) -> tuple[list[int], float, float, float, float]:
        """`(order, brightness, contrast, saturation, hue)`: a permutation of the four operations and their
        factors."""
        order = torch.randperm(4, generator=generator).tolist()
        b = _uniform(*self.brightness, generator)
        c = _uniform(*self.contrast, generator)
        s = _uniform(*self.saturation, generator)
        h = _uniform(*self.hue, generator)
        return order, b, c, s, h

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        image = _as_tensor(type(self).__name__, image, channels=(3,))
        if not _coin(self.p, generator):
            return image
        order, b, c, s, h = self.get_params(generator)
        for op in order:
            if op == 0:
                image = adjust_brightness(image, b)
            elif op == 1:
                image = adjust_contrast(image, c)
            elif op == 2:
                image = adjust_saturation(image, s)
            else:
                image = adjust_hue(image, h)
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p})"
        )


class Solarize:
    """Invert every value at or above `threshold` (`x -> 1 - x`) with probability `p` (BYOL's second view,
    Grill et al. 2020). Takes a float tensor `[C, H, W]` with values in `[0, 1]`.

    Args:
        threshold (`float`, *optional*, defaults to `0.5`): values `>= threshold` are inverted.
        p (`float`, *optional*, defaults to `1.0`): probability of the operation, in `[0, 1]`.
    """

    def __init__(self, threshold: float = 0.5, p: float = 1.0) -> None:
        self.threshold = float(threshold)
        self.p = _check_probability(type(self).__name__, "p", p)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not _coin(self.p, generator):
            return image
        return torch.where(image >= self.threshold, 1.0 - image, image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, p={self.p})"


class RandomGrayscale:
    """Replace the image by its luma (BT.601 weights, three equal channels) with probability `p`.

    Args:
        p (`float`, *optional*, defaults to `0.2`): probability of the conversion (the recipe's value).
    """

    def __init__(self, p: float = 0.2) -> None:
        self.p = _check_probability(type(self).__name__, "p", p)

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        image = _as_tensor(type(self).__name__, image)
        if not _coin(self.p, generator):
            return image
        return rgb_to_grayscale(image, num_output_channels=image.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def gaussian_kernel1d(
    sigma: float, radius: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised 1-D Gaussian `exp(-x^2 / (2 sigma^2))` for `x = -radius..radius` (default radius `ceil(3
    sigma)`)."""
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"gaussian_kernel1d: sigma must be a finite number > 0, got {sigma!r}.")
    radius = max(1, math.ceil(3.0 * sigma)) if radius is None else int(radius)
    if radius < 0:
        raise ValueError(f"gaussian_kernel1d: radius must be >= 0, got {radius}.")
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur(image: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of a `[C, H, W]` tensor; borders are reflected (replicated on tiny images)."""
    image = _check_tensor("gaussian_blur", image)
    kernel = gaussian_kernel1d(sigma, radius, dtype=image.dtype).to(image.device)
    r = (kernel.numel() - 1) // 2
    channels = image.shape[0]
    height, width = image.shape[-2:]
    mode = "reflect" if r < height and r < width else "replicate"
    x = F.pad(image[None], (r, r, r, r), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x[0]


class GaussianBlur:
    """Gaussian blur with `sigma ~ U(sigma)`, with probability `p` (SimCLR's blur).

    Args:
        sigma (`tuple[float, float]`, *optional*, defaults to `(0.1, 2.0)`): range of the standard deviation
            in pixels, both > 0.
        p (`float`, *optional*, defaults to `1.0`): probability of blurring (the recipe uses 0.5).
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 1.0) -> None:
        owner = type(self).__name__
        self.sigma = _check_range(owner, "sigma", sigma, 0.0, math.inf, closed_low=False)
        self.p = _check_probability(owner, "p", p)

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        image = _as_tensor(type(self).__name__, image)
        if not _coin(self.p, generator):
            return image
        return gaussian_blur(image, _uniform(*self.sigma, generator))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma}, p={self.p})"


class ToTensor:
    """PIL image -> float32 tensor `[3, H, W]` in `[0, 1]` (converted to RGB); a uint8 tensor is divided by
    255 and a float tensor is returned as it is."""

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return _pil_to_tensor(image)
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            return _check_tensor("ToTensor", image.to(torch.float32) / 255.0)
        return _check_tensor("ToTensor", image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normalize:
    """`(image - mean) / std` per channel, on a float tensor `[C, H, W]`.

    Args:
        mean (`Sequence[float]`): one value per channel.
        std (`Sequence[float]`): one value per channel, each > 0.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) != len(std) or not mean:
            raise ValueError(f"Normalize: mean and std need one value per channel, got {mean} and {std}.")
        if not all(s > 0 and math.isfinite(s) for s in std):
            raise ValueError(f"Normalize: every std must be a finite number > 0, got {std}.")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if isinstance(image, Image.Image):
            raise TypeError("Normalize: expected a float tensor [C, H, W]; put ToTensor before Normalize.")
        image = _check_tensor(type(self).__name__, image, channels=(len(self.mean),))
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        return (image - mean) / std

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class RandomApply:
    """Apply `transform` with probability `p` (it receives the generator when it accepts one).

    Args:
        transform (`Callable`): any image -> image callable.
        p (`float`, *optional*, defaults to `0.5`): probability of applying it.
    """

    def __init__(self, transform: Callable, p: float = 0.5) -> None:
        if not callable(transform):
            raise TypeError(f"RandomApply: transform must be callable, got {type(transform).__name__}.")
        self.transform = transform
        self.p = _check_probability(type(self).__name__, "p", p)
        self._takes_generator = _accepts_generator(transform)

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        if not _coin(self.p, generator):
            return image
        return self.transform(image, generator=generator) if self._takes_generator else self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r}, p={self.p})"


class Compose:
    """Chain image operations; the generator goes to every operation whose signature takes `generator`.

    Args:
        transforms (`Iterable[Callable]`): the operations, applied in order (ours, or any callable such as a
            torchvision transform).
    """

    def __init__(self, transforms: Iterable[Callable]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {type(t).__name__}.")
        self._takes_generator = [_accepts_generator(t) for t in self.transforms]

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> ImageLike:
        for t, takes in zip(self.transforms, self._takes_generator):
            image = t(image, generator=generator) if takes else t(image)
        return image

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


def global_view_transform(
    size: int | tuple[int, int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = False,
    interpolation: str = "bicubic",
) -> Compose:
    """The global image of the improved CLIP recipe: RandomResizedCrop (scale 0.5-1), to tensor, normalise.

    The reference recipe does not flip the global view; `flip=True` adds a horizontal flip (p 0.5).

    Args:
        size (`int` or `tuple[int, int]`, *optional*, defaults to `224`): output size.
        mean (`Sequence[float]`, *optional*, defaults to `IMAGENET_MEAN`): normalisation mean (pass the
            processor's `image_mean` for a pretrained tower, e.g. [`CLIP_MEAN`]).
        std (`Sequence[float]`, *optional*, defaults to `IMAGENET_STD`): normalisation std.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.5, 1.0)`): area range of the crop.
        flip (`bool`, *optional*, defaults to `False`): also flip horizontally with probability 0.5.
        interpolation (`str`, *optional*, defaults to `"bicubic"`): resampling of the crop.
    """
    ops: list[Callable] = [RandomResizedCrop(size, scale=scale, interpolation=interpolation)]
    if flip:
        ops.append(RandomHorizontalFlip(0.5))
    ops += [ToTensor(), Normalize(mean, std)]
    return Compose(ops)


def strong_view_transform(
    size: int | tuple[int, int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.08, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    blur_p: float = 0.5,
    flip_p: float = 0.5,
    interpolation: str = "bicubic",
) -> Compose:
    """An augmented image view of the improved CLIP recipe (SimCLR's augmentations).

    RandomResizedCrop (scale 0.08-1), colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale with p 0.2,
    Gaussian blur (sigma 0.1-2) with p 0.5, horizontal flip with p 0.5, normalise.

    Args:
        size (`int` or `tuple[int, int]`, *optional*, defaults to `224`): output size.
        mean (`Sequence[float]`, *optional*, defaults to `IMAGENET_MEAN`): normalisation mean.
        std (`Sequence[float]`, *optional*, defaults to `IMAGENET_STD`): normalisation std.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.08, 1.0)`): area range of the crop.
        jitter (`tuple[float, float, float, float]`, *optional*, defaults to `(0.4, 0.4, 0.4, 0.1)`):
            brightness, contrast, saturation and hue jitter.
        jitter_p (`float`, *optional*, defaults to `0.8`): probability of the colour jitter.
        grayscale_p (`float`, *optional*, defaults to `0.2`): probability of the grayscale conversion.
        blur_sigma (`tuple[float, float]`, *optional*, defaults to `(0.1, 2.0)`): range of the blur's sigma.
        blur_p (`float`, *optional*, defaults to `0.5`): probability of the blur.
        flip_p (`float`, *optional*, defaults to `0.5`): probability of the horizontal flip.
        interpolation (`str`, *optional*, defaults to `"bicubic"`): resampling of the crop.
    """
    if len(jitter) != 4:
        raise ValueError(
            f"strong_view_transform: jitter is (brightness, contrast, saturation, hue), got {jitter!r}."
        )
    b, c, s, h = jitter
    return Compose(
        [
            RandomResizedCrop(size, scale=scale, interpolation=interpolation),
            ToTensor(),
            ColorJitter(b, c, s, h, p=jitter_p),
            RandomGrayscale(grayscale_p),
            GaussianBlur(blur_sigma, p=blur_p),
            RandomHorizontalFlip(flip_p),
            Normalize(mean, std),
        ]
    )


def eval_transform(
    size: int | tuple[int, int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bicubic",
) -> Compose:
    """Evaluation: resize the shorter side to `size`, centre crop `size`, to tensor, normalise.

    Args:
        size (`int` or `tuple[int, int]`, *optional*, defaults to `224`): shorter side and crop size (for a
            `(height, width)` pair the shorter side is resized to the larger entry, so the crop fits).
        mean (`Sequence[float]`, *optional*, defaults to `IMAGENET_MEAN`): normalisation mean.
        std (`Sequence[float]`, *optional*, defaults to `IMAGENET_STD`): normalisation std.
        interpolation (`str`, *optional*, defaults to `"bicubic"`): resampling of the resize.
    """
    crop = _check_size("eval_transform", size)
    return Compose([Resize(max(crop), interpolation), CenterCrop(crop), ToTensor(), Normalize(mean, std)])


# ----------------------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)
_WARNED_MISSING: set[str] = set()

Synonyms = Mapping[str, Sequence[str]] | str | PathLike | None
Stopwords = Iterable[str] | str | PathLike | None


def _read_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


@lru_cache(maxsize=8)
def _stopwords_from(path: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _read_lines(Path(path)))


@lru_cache(maxsize=8)
def _synonyms_from(path: str) -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(_read_lines(Path(path)), start=1):
        word, sep, rest = line.partition("\t")
        synonyms = tuple(s.strip().lower() for s in rest.split(",") if s.strip())
        if not sep or not word.strip() or not synonyms:
            raise ValueError(f"{path}: entry {number} is not 'word<TAB>synonym,synonym,...': {line!r}.")
        table[word.strip().lower()] = synonyms
    return table


def _warn_missing(kind: str, path: Path) -> None:
    key = f"{kind}:{path}"
    if key not in _WARNED_MISSING:
        _WARNED_MISSING.add(key)
        warnings.warn(
            f"The {kind} list {path} is missing; caption operations that need it are skipped (the caption is "
            "returned unchanged). Pass a list of your own to use them.",
            UserWarning,
            stacklevel=3,
        )


def load_stopwords(source: Stopwords = None) -> frozenset[str]:
    """Stop words, lower-cased: the shipped list (`None`), a file (one word per line), or any iterable of
    words.

    A missing file warns once and gives an empty set (so no word is removed).
    """
    if source is None or isinstance(source, (str, PathLike)):
        path = Path(source) if source is not None else STOPWORDS_PATH
        if not path.is_file():
            _warn_missing("stop-word", path)
            return frozenset()
        return _stopwords_from(str(path))
    return frozenset(str(w).lower() for w in source)


def load_synonyms(source: Synonyms = None) -> dict[str, tuple[str, ...]] | None:
    """Synonyms by lower-cased word: the shipped list (`None`), a TSV file (`word<TAB>syn,syn`), or a mapping.

    A missing file warns once and gives `None` (synonym replacement is then skipped).
    """
    if source is None or isinstance(source, (str, PathLike)):
        path = Path(source) if source is not None else SYNONYMS_PATH
        if not path.is_file():
            _warn_missing("synonym", path)
            return None
        return _synonyms_from(str(path))
    if not isinstance(source, Mapping):
        raise TypeError(
            f"synonyms must be a mapping word -> synonyms, a file path or None, got {type(source).__name__}."
        )
    table = {}
    for word, synonyms in source.items():
        if isinstance(synonyms, str):
            raise TypeError(f"synonyms[{word!r}] must be a sequence of words, got the string {synonyms!r}.")
        table[str(word).lower()] = tuple(str(s) for s in synonyms if str(s).strip())
    return table


def _words(owner: str, text: Any) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"{owner}: expected a caption string, got {type(text).__name__}.")
    words = text.split()
    if not words:
        raise ValueError(
            f"{owner}: got an empty caption {text!r}; every caption must hold at least one word."
        )
    return words


def _rng(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.Random()


def _core(token: str) -> str:
    """The word without leading/trailing punctuation, lower-cased ("Dog," -> "dog")."""
    return _TOKEN.match(token).group(2).lower()


def remove_stopwords(
    text: str,
    p: float = 0.8,
    rng: random.Random | None = None,
    *,
    per_word: bool = False,
    stopwords: Stopwords = None,
) -> str:
    """Remove stop words from a caption; never returns an empty caption (the input is kept instead).

    Two readings of "stop words removed with probability p": the reference code of the recipe draws once per
    caption and then removes every stop word (`per_word=False`, the default); `per_word=True` drops each stop
    word on its own with probability `p`.

    Args:
        text (`str`): the caption (words separated by white space).
        p (`float`, *optional*, defaults to `0.8`): removal probability (0.9 on YFCC in the paper).
        rng (`random.Random`, *optional*): source of the draws (seed it to replay them).
        per_word (`bool`, *optional*, defaults to `False`): one draw per stop word instead of one per caption.
        stopwords (`Iterable[str]`, `str` or `PathLike`, *optional*): the stop words (default: the shipped
            list).
    """
    words = _words("remove_stopwords", text)
    p = _check_probability("remove_stopwords", "p", p)
    rng = _rng(rng)
    stop = load_stopwords(stopwords)
    if per_word:
        kept = [w for w in words if not (_core(w) in stop and rng.random() < p)]
    elif rng.random() < p:
        kept = [w for w in words if _core(w) not in stop]
    else:
        kept = words
    return " ".join(kept if kept else words)


def random_swap(text: str, rng: random.Random | None = None, n: int = 1) -> str:
    """EDA random swap: `n` times, exchange the words at two distinct random positions (the multiset of words
    is kept). A one-word caption is returned as it is.

    Args:
        text (`str`): the caption.
        rng (`random.Random`, *optional*): source of the draws.
        n (`int`, *optional*, defaults to `1`): number of swaps (EDA's default).
    """
    words = _words("random_swap", text)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"random_swap: n must be an int >= 0, got {n!r}.")
    rng = _rng(rng)
    for _ in range(n if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def random_delete(text: str, p: float = 0.1, rng: random.Random | None = None) -> str:
    """EDA random deletion: drop each word with probability `p`; if every word would go, one random word
    stays.

    Args:
        text (`str`): the caption.
        p (`float`, *optional*, defaults to `0.1`): deletion probability per word (EDA's default).
        rng (`random.Random`, *optional*): source of the draws.
    """
    words = _words("random_delete", text)
    p = _check_probability("random_delete", "p", p)
    rng = _rng(rng)
    if len(words) == 1:
        return words[0]
    kept = [w for w in words if rng.random() >= p]
    if not kept:
        kept = [rng.choice(words)]
    return " ".join(kept)


def synonym_replace(
    text: str,
    rng: random.Random | None = None,
    n: int = 1,
    synonyms: Synonyms = None,
    stopwords: Stopwords = None,
) -> str:
    """EDA synonym replacement: pick up to `n` distinct words that have synonyms in the list (stop words
    never) and replace every occurrence of each with one of its synonyms, drawn at random.

    Punctuation around a word is kept, and a capitalised word gets a capitalised synonym. When the synonym
    list is missing, a warning is given once and the caption is returned unchanged.

    Args:
        text (`str`): the caption.
        rng (`random.Random`, *optional*): source of the draws.
        n (`int`, *optional*, defaults to `1`): number of distinct words to replace (EDA's default).
        synonyms (`Mapping[str, Sequence[str]]`, `str` or `PathLike`, *optional*): the synonym list (default:
            the shipped `synonyms_en.tsv`).
        stopwords (`Iterable[str]`, `str` or `PathLike`, *optional*): words never replaced (default: the
            shipped list).
    """
    words = _words("synonym_replace", text)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"synonym_replace: n must be an int >= 0, got {n!r}.")
    table = load_synonyms(synonyms)
    if not table:
        return " ".join(words)
    rng = _rng(rng)
    stop = load_stopwords(stopwords)
    candidates = sorted({_core(w) for w in words if _core(w) in table and _core(w) not in stop})
    rng.shuffle(candidates)
    chosen = {word: rng.choice(table[word]) for word in candidates[:n]}
    out = []
    for token in words:
        prefix, core, suffix = _TOKEN.match(token).groups()
        replacement = chosen.get(core.lower())
        if replacement is None:
            out.append(token)
            continue
        if core[:1].isupper():
            replacement = replacement[:1].upper() + replacement[1:]
        out.append(prefix + replacement + suffix)
    return " ".join(out)


def weak_caption(
    text: str,
    rng: random.Random | None = None,
    p: float = 0.8,
    *,
    per_word: bool = False,
    stopwords: Stopwords = None,
) -> str:
    """The global caption of the recipe: stop words removed with probability `p` (0.8; 0.9 on YFCC).

    Args:
        text (`str`): the caption.
        rng (`random.Random`, *optional*): source of the draws.
        p (`float`, *optional*, defaults to `0.8`): stop-word removal probability.
        per_word (`bool`, *optional*, defaults to `False`): see [`remove_stopwords`].
        stopwords (`Iterable[str]`, `str` or `PathLike`, *optional*): the stop words (default: the shipped
            list).
    """
    return remove_stopwords(text, p, rng, per_word=per_word, stopwords=stopwords)


def strong_caption(
    text: str,
    rng: random.Random | None = None,
    p: float = 0.8,
    weights: tuple[float, float, float] = (0.4, 0.4, 0.2),
    *,
    delete_p: float = 0.1,
    per_word: bool = False,
    synonyms: Synonyms = None,
    stopwords: Stopwords = None,
) -> str:
    """An augmented caption of the recipe: stop-word removal, then one EDA operation drawn with `weights`.

    Args:
        text (`str`): the caption.
        rng (`random.Random`, *optional*): source of the draws.
        p (`float`, *optional*, defaults to `0.8`): stop-word removal probability.
        weights (`tuple[float, float, float]`, *optional*, defaults to `(0.4, 0.4, 0.2)`): relative
            probabilities of synonym replacement, random swap and random deletion (each >= 0, not all 0).
        delete_p (`float`, *optional*, defaults to `0.1`): per-word probability of the random deletion.
        per_word (`bool`, *optional*, defaults to `False`): see [`remove_stopwords`].
        synonyms (`Mapping[str, Sequence[str]]`, `str` or `PathLike`, *optional*): synonym list (default:
            shipped).
        stopwords (`Iterable[str]`, `str` or `PathLike`, *optional*): stop words (default: shipped).
    """
    if (
        len(weights) != 3
        or not all(isinstance(w, (int, float)) and w >= 0 and math.isfinite(w) for w in weights)
        or sum(weights) <= 0
    ):
        raise ValueError(
            "strong_caption: weights are the (synonym, swap, delete) probabilities, three numbers >= 0 "
            f"that are not all 0; got {weights!r}."
        )
    rng = _rng(rng)
    text = remove_stopwords(text, p, rng, per_word=per_word, stopwords=stopwords)
    op = rng.choices(("synonym", "swap", "delete"), weights=weights, k=1)[0]
    if op == "synonym":
        return synonym_replace(text, rng, 1, synonyms=synonyms, stopwords=stopwords)
    if op == "swap":
        return random_swap(text, rng, 1)
    return random_delete(text, delete_p, rng)
