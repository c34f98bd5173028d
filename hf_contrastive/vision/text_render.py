"""Text rendered as a strip of image patches, for pixel-based language models (PIXEL, Pixel Linguist).

[`TextRenderer`] draws a text in black on a white strip `patch_size` pixels high and `patch_size * max_patches`
wide, with PIL and a TrueType font shipped by an installable package (DejaVu Sans from matplotlib by default),
and returns the pixel values with the mask of the patches that carry the sequence: the patches the text covers
plus one end-of-text patch after it (PIXEL's `[SEP]`, a black square by default), so that
`attention_mask.sum() == text_patches + 1`.

Differences from the PangoCairo renderer of PIXEL / Pixel Linguist (8 pt at 120 DPI, Go Noto fonts):

- **Size**: 8 pt at 120 DPI is `8 * 120 / 72 = 13.33` px; that is the default `font_size` here, in pixels.
  The glyph rasteriser (FreeType through PIL, grey-level anti-aliasing) and hinting differ from Cairo's, so
  pixel values are not those of PIXEL's renderer, and weights trained with one do not transfer unchanged.
- **Shaping**: PIL's basic layout (the default here, `layout="basic"`) places one glyph per character with
  the font's advance widths and kerning, without HarfBuzz. No ligatures, no contextual forms (Arabic joining,
  Indic conjuncts), no bidirectional reordering: right-to-left text is drawn left to right. `layout="raqm"`
  uses libraqm (HarfBuzz + FriBiDi) where PIL was built with it, which shapes and reorders like Pango.
- **Scripts**: one font file, no font fallback. DejaVu Sans covers Latin, Greek, Cyrillic and some other
  scripts; characters it lacks (CJK, most Indic scripts, emoji) are drawn as the font's empty box. PIXEL falls
  back through fontconfig to Go Noto, which covers most of Unicode.
- **Words and patches**: later PIXEL renderers can also start each word on a patch boundary ("structured"
  rendering); this renderer draws the text as one continuous line, as PIXEL's default does, so a patch may
  hold parts of two words.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FONT",
    "DEFAULT_FONT_SIZE",
    "END_PATCH_STYLES",
    "RenderedText",
    "TextRenderer",
    "default_font_path",
]

DEFAULT_FONT = "DejaVuSans.ttf"
"""The font file looked up in matplotlib's font folder when no path is given."""

DEFAULT_FONT_SIZE = 8 * 120 / 72
"""8 pt at 120 DPI, in pixels: the size of PIXEL's PangoCairo renderer."""

END_PATCH_STYLES = ("black", "blank")
"""The end-of-text patch: a black square (PIXEL's `[SEP]` patch) or a white one (counted in the mask only)."""


def default_font_path(name: str = DEFAULT_FONT) -> str:
    """Path of a TrueType font shipped by matplotlib (`matplotlib/mpl-data/fonts/ttf/<name>`).

    Args:
        name (`str`, *optional*, defaults to `"DejaVuSans.ttf"`): the font file's name.

    Raises:
        `ImportError`: when matplotlib is not installed (the message names the package and the alternative).
        `FileNotFoundError`: when matplotlib has no such font file.
    """
    try:
        import matplotlib  # optional dependency: only its font files are used
    except ImportError as err:
        raise ImportError(
            "The text renderer's default font (DejaVu Sans) ships with the matplotlib package: "
            "`pip install matplotlib`, or pass font_path= a TrueType (.ttf) file of your own."
        ) from err
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise FileNotFoundError(f"matplotlib has no font file {name!r} (looked at {path}).")
    return str(path)


@dataclass
class RenderedText:
    """The renderer's output for a batch of texts.

    Args:
        pixel_values (`torch.FloatTensor` of shape `(batch, channels, patch_size, patch_size * max_patches)`):
            ink in `[0, 1]` as brightness (white 1, black 0).
        attention_mask (`torch.LongTensor` of shape `(batch, max_patches)`): 1 on the patches the text covers and
            on the end-of-text patch after them, 0 on the blank rest.
        text_patches (`list[int]`): the number of patches each (possibly truncated) text covers.
        truncated (`list[bool]`): whether each text was cut to fit.
    """

    pixel_values: torch.Tensor
    attention_mask: torch.Tensor
    text_patches: list[int]
    truncated: list[bool]


class TextRenderer:
    r"""Renders texts as strips of `max_patches` square patches, black text on white, for a pixel encoder.

    Each text is drawn on one line from `left_padding` pixels, its baseline `baseline` pixels from the top.
    A text covers `ceil((left_padding + width) / patch_size)` patches (at least one, even when empty); the next
    patch is the end-of-text patch. A text that would need more than `max_patches - 1` patches is cut at the
    last character that fits, and a warning names the limit. Rendering is deterministic: the same text and
    settings give the same pixels.

    Args:
        max_patches (`int`, *optional*, defaults to `64`): patches per strip (Pixel Linguist: 64, PIXEL: 529).
        patch_size (`int`, *optional*, defaults to `16`): side of a patch, and height of the strip, in pixels.
        font_path (`str | os.PathLike`, *optional*): a TrueType font file (default: DejaVu Sans from matplotlib).
        font_size (`float`, *optional*, defaults to `13.33`): the font size in pixels (8 pt at 120 DPI).
        rgb (`bool`, *optional*, defaults to `False`): three identical channels instead of one grey channel.
        end_patch (`str`, *optional*, defaults to `"black"`): `"black"` draws PIXEL's black end-of-text patch,
            `"blank"` leaves it white (it is in the mask either way).
        left_padding (`int`, *optional*, defaults to `2`): white pixels before the first glyph.
        baseline (`int`, *optional*): pixels from the top to the baseline (default: three quarters of the
            strip's height, 12 for 16-pixel patches, which leaves the descenders of a 13-pixel font inside).
        layout (`str`, *optional*, defaults to `"basic"`): PIL's text layout, `"basic"` (no shaping, the same on
            every PIL build) or `"raqm"` (HarfBuzz shaping and bidirectional text, where PIL has libraqm).

    Example::

        >>> renderer = TextRenderer()
        >>> out = renderer(["A short sentence.", "Another one."])
        >>> out.pixel_values.shape, out.attention_mask.sum(-1)
        (torch.Size([2, 1, 16, 1024]), tensor([9, 7]))
    """

    def __init__(
        self,
        max_patches: int = 64,
        patch_size: int = 16,
        font_path: str | os.PathLike | None = None,
        font_size: float = DEFAULT_FONT_SIZE,
        rgb: bool = False,
        end_patch: str = "black",
        left_padding: int = 2,
        baseline: int | None = None,
        layout: str = "basic",
    ) -> None:
        for name, value, low in (("max_patches", max_patches, 2), ("patch_size", patch_size, 4)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not (isinstance(font_size, (int, float)) and math.isfinite(font_size) and font_size > 0):
            raise ValueError(f"font_size must be a number > 0 (pixels), got {font_size!r}.")
        if end_patch not in END_PATCH_STYLES:
            raise ValueError(f"end_patch must be one of {END_PATCH_STYLES}, got {end_patch!r}.")
        if (
            isinstance(left_padding, bool)
            or not isinstance(left_padding, int)
            or not 0 <= left_padding < patch_size
        ):
            raise ValueError(f"left_padding must be an integer in [0, {patch_size}), got {left_padding!r}.")
        baseline = round(patch_size * 3 / 4) if baseline is None else baseline
        if isinstance(baseline, bool) or not isinstance(baseline, int) or not 0 < baseline <= patch_size:
            raise ValueError(f"baseline must be an integer in (0, {patch_size}], got {baseline!r}.")
        if layout not in ("basic", "raqm"):
            raise ValueError(f"layout must be 'basic' or 'raqm', got {layout!r}.")
        if layout == "raqm" and not features.check("raqm"):
            raise ValueError("layout='raqm' needs PIL built with libraqm; this PIL has none (use 'basic').")
        self.max_patches, self.patch_size = max_patches, patch_size
        self.font_path = os.fspath(font_path) if font_path is not None else default_font_path()
        if not os.path.isfile(self.font_path):
            raise FileNotFoundError(f"No font file at {self.font_path}.")
        self.font_size, self.rgb, self.end_patch = float(font_size), bool(rgb), end_patch
        self.left_padding, self.baseline, self.layout = left_padding, baseline, layout
        engine = ImageFont.Layout.RAQM if layout == "raqm" else ImageFont.Layout.BASIC
        self.font = ImageFont.truetype(self.font_path, size=self.font_size, layout_engine=engine)

    @property
    def num_channels(self) -> int:
        """1 (grey) or 3 (RGB)."""
        return 3 if self.rgb else 1

    @property
    def width(self) -> int:
        """Width of a strip in pixels."""
        return self.patch_size * self.max_patches

    @property
    def max_text_patches(self) -> int:
        """Patches a text may cover: all but the end-of-text patch."""
        return self.max_patches - 1

    def settings(self) -> dict[str, Any]:
        """The settings that define the pixels (for configs and cards)."""
        return {
            "max_patches": self.max_patches,
            "patch_size": self.patch_size,
            "font_file": os.path.basename(self.font_path),
            "font_size": self.font_size,
            "rgb": self.rgb,
            "end_patch": self.end_patch,
            "left_padding": self.left_padding,
            "baseline": self.baseline,
            "layout": self.layout,
        }

    def text_width(self, text: str) -> float:
        """Advance width of `text` in pixels, padding included."""
        return self.left_padding + float(self.font.getlength(text))

    def patches_for(self, text: str) -> int:
        """Patches `text` covers when drawn untruncated (at least one)."""
        return max(1, math.ceil(self.text_width(text) / self.patch_size - 1e-9))

    def _fit(self, text: str) -> str:
        """The longest prefix of `text` that covers at most `max_text_patches` patches (binary search)."""
        limit = self.max_text_patches * self.patch_size
        low, high = 0, len(text)
        while low < high:
            mid = (low + high + 1) // 2
            if self.text_width(text[:mid]) <= limit:
                low = mid
            else:
                high = mid - 1
        return text[:low]

    def render_one(self, text: str) -> tuple[np.ndarray, int, bool]:
        """`(pixels [patch_size, width] uint8, text patches, truncated)` of one text."""
        if not isinstance(text, str):
            raise TypeError(f"TextRenderer renders strings, got {type(text).__name__}.")
        text = " ".join(text.split())  # one line: newlines and tabs become spaces
        truncated = self.patches_for(text) > self.max_text_patches
        if truncated:
            text = self._fit(text)
        image = Image.new("L", (self.width, self.patch_size), 255)
        if text:
            ImageDraw.Draw(image).text(
                (self.left_padding, self.baseline), text, font=self.font, fill=0, anchor="ls"
            )
        pixels = np.asarray(image, dtype=np.uint8).copy()
        patches = self.patches_for(text)
        # Anything a glyph drew past its advance width (an italic overhang) beyond the counted patches is cut,
        # so the strip never holds ink outside the mask.
        pixels[:, patches * self.patch_size :] = 255
        if self.end_patch == "black":
            pixels[:, patches * self.patch_size : (patches + 1) * self.patch_size] = 0
        return pixels, patches, truncated

    def __call__(self, texts: str | Sequence[str]) -> RenderedText:
        """Render a text or a batch of texts.

        Args:
            texts (`str | Sequence[str]`): the texts.

        Returns:
            [`RenderedText`]: `pixel_values` `[B, C, patch_size, patch_size * max_patches]` in `[0, 1]` and
            `attention_mask` `[B, max_patches]`.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not len(texts):
            raise ValueError("TextRenderer got no texts.")
        strips, counts, cut = [], [], []
        for text in texts:
            pixels, patches, truncated = self.render_one(text)
            strips.append(pixels)
            counts.append(patches)
            cut.append(truncated)
        if any(cut):
            logger.warning(
                "%d of %d text(s) are wider than the render limit of %d patches (%d pixels: %d for text and one "
                "end-of-text patch) and were truncated; raise max_patches to keep more.",
                sum(cut),
                len(cut),
                self.max_patches,
                self.width,
                self.max_text_patches,
            )
        values = torch.from_numpy(np.stack(strips)).float().div_(255.0).unsqueeze(1)
        if self.rgb:
            values = values.expand(-1, 3, -1, -1).contiguous()
        positions = torch.arange(self.max_patches)
        mask = (positions[None, :] < torch.tensor(counts)[:, None] + 1).long()
        return RenderedText(values, mask, counts, cut)
