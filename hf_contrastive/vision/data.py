"""Image-caption data: COCO-style caption files as `datasets` rows, and the collator that turns rows into
pixel values and token ids.

A row holds an image (a path, a PIL image or an undecoded `datasets.Image` value) and one caption or a list
of captions. The collator draws one caption per image (seeded, replayable), loads and transforms the images
(the processor's own transform, or any callable such as those of [`hf_contrastive.vision.augment`]),
tokenises the captions, and, for the improved CLIP recipe, adds augmented views of both. An image that cannot
be decoded is dropped from the batch with a counted, logged reason (or raises, if asked).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from hf_contrastive.core.utils import data_dir
from hf_contrastive.vision.modeling import load_image, pixel_values_of, tokenize_texts

logger = logging.getLogger(__name__)

__all__ = ["ImageTextCollator", "coco_mini_dir", "load_coco_captions"]


def coco_mini_dir() -> Path:
    """`../shared/data/vision/coco-mini` (80 train images with 400 captions, 79 val images with 395)."""
    return data_dir() / "vision" / "coco-mini"


def load_coco_captions(split: str = "train", root: str | Path | None = None) -> Dataset:
    """One row per image of a COCO caption split: `image` (path), `captions` (list of str), `image_id`.

    Args:
        split (`str`, *optional*, defaults to `"train"`): `"train"` or `"val"` (files `annotations/
            captions_{split}2017.json` and images under `{split}2017/`).
        root (`str | Path`, *optional*): the COCO folder (default: the coco-mini copy under the shared data).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    root = Path(root) if root is not None else coco_mini_dir()
    path = root / "annotations" / f"captions_{split}2017.json"
    if not path.is_file():
        raise FileNotFoundError(f"No COCO caption file at {path}.")
    data = json.loads(path.read_text())
    captions: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    rows = {"image": [], "captions": [], "image_id": []}
    for img in sorted(data["images"], key=lambda r: int(r["id"])):
        image_id = int(img["id"])
        if image_id not in captions:
            continue
        rows["image"].append(str(root / f"{split}2017" / img["file_name"]))
        rows["captions"].append(captions[image_id])
        rows["image_id"].append(image_id)
    return Dataset.from_dict(rows)


class ImageTextCollator:
    r"""Rows of images and captions -> `pixel_values`, `input_ids`, `attention_mask` (and augmented views).

    Args:
        processor (`Any`): the model's processor (`image_processor` + `tokenizer`), e.g. `CLIPProcessor` or
            `VisionTextDualEncoderProcessor`.
        image_column (`str`, *optional*, defaults to `"image"`): column of images (path, PIL image, or
            undecoded `datasets.Image`).
        caption_column (`str`, *optional*, defaults to `"captions"`): column of one caption or a list of them.
        family (`str`, *optional*, defaults to `"clip"`): `"siglip"` tokenises to a fixed length without an
            attention mask, as SigLIP is trained.
        max_length (`int`, *optional*): caption truncation length.
        image_transform (`Callable`, *optional*): PIL image -> `[3, H, W]` tensor for the global view (default: the
            processor's own resize/crop/normalise).
        caption_sampling (`str`, *optional*, defaults to `"random"`): `"random"` (one caption per image per
            batch, seeded) or `"first"`.
        augmented_views (`int`, *optional*, defaults to `0`): augmented (image, caption) views per row for the
            improved CLIP recipe (it uses 2).
        augmented_image_transform (`Callable`, *optional*): the strong image transform of the views (called as
            `transform(image, generator=g)` when it accepts a generator).
        global_caption_transform / augmented_caption_transform (`Callable`, *optional*): `(text, rng) -> text`
            for the global caption (weak augmentation) and the views' captions (strong augmentation).
        on_bad_image (`str`, *optional*, defaults to `"skip"`): `"skip"` drops a row whose image cannot be
            decoded (counted in `self.skipped` and logged) or `"raise"`.
        seed (`int`, *optional*, defaults to `0`): seed of the caption draws and augmentations.
    """

    def __init__(
        self,
        processor: Any,
        image_column: str = "image",
        caption_column: str = "captions",
        family: str = "clip",
        max_length: int | None = None,
        image_transform: Callable | None = None,
        caption_sampling: str = "random",
        augmented_views: int = 0,
        augmented_image_transform: Callable | None = None,
        global_caption_transform: Callable | None = None,
        augmented_caption_transform: Callable | None = None,
        on_bad_image: str = "skip",
        seed: int = 0,
    ) -> None:
        if caption_sampling not in ("random", "first"):
            raise ValueError(f"caption_sampling must be 'random' or 'first', got {caption_sampling!r}.")
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}.")
        if augmented_views < 0:
            raise ValueError(f"augmented_views must be >= 0, got {augmented_views}.")
        if augmented_views and augmented_image_transform is None:
            raise ValueError(
                "augmented_views > 0 needs an augmented_image_transform (the strong image transform)."
            )
        self.processor = processor
        self.image_column, self.caption_column = image_column, caption_column
        self.family, self.max_length = family, max_length
        self.image_transform = image_transform
        self.caption_sampling = caption_sampling
        self.augmented_views = int(augmented_views)
        self.augmented_image_transform = augmented_image_transform
        self.global_caption_transform = global_caption_transform
        self.augmented_caption_transform = augmented_caption_transform
        self.on_bad_image = on_bad_image
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.skipped: Counter[str] = Counter()

    def check_columns(self, column_names: Sequence[str]) -> None:
        """`ValueError` naming the missing image or caption column."""
        missing = [c for c in (self.image_column, self.caption_column) if c not in column_names]
        if missing:
            raise ValueError(
                f"The dataset has no column {missing[0]!r} (image_column={self.image_column!r}, "
                f"caption_column={self.caption_column!r}); its columns are {list(column_names)}."
            )

    def _caption(self, value: Any) -> str:
        if isinstance(value, str):
            captions = [value]
        elif isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value):
            captions = list(value)
        else:
            raise ValueError(f"A caption must be a non-empty string or list of strings, got {value!r}.")
        return captions[0] if self.caption_sampling == "first" else self.rng.choice(captions)

    def _transform(self, transform: Callable, image: Any) -> torch.Tensor:
        try:
            return transform(image, generator=self.generator)
        except TypeError:
            return transform(image)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("ImageTextCollator got an empty list of rows.")
        self.check_columns(list(rows[0]))
        images, captions = [], []
        for row in rows:
            try:
                image = load_image(row[self.image_column])
            except (ValueError, TypeError) as exc:
                if self.on_bad_image == "raise":
                    raise
                reason = type(exc).__name__ + ": " + str(exc).split(":")[0]
                self.skipped[reason] += 1
                logger.warning(
                    "Skipping a row whose image cannot be used (%s); %d skipped so far.",
                    exc,
                    sum(self.skipped.values()),
                )
                continue
            images.append(image)
            captions.append(self._caption(row[self.caption_column]))
        if not images:
            raise ValueError(
                f"No image of this batch of {len(rows)} rows could be decoded: {dict(self.skipped)}."
            )
        texts = (
            [self.global_caption_transform(c, self.rng) for c in captions]
            if self.global_caption_transform
            else captions
        )
        if self.image_transform is not None:
            pixel_values = torch.stack([self._transform(self.image_transform, im) for im in images])
        else:
            pixel_values = pixel_values_of(images, self.processor)
        batch: dict[str, torch.Tensor] = {"pixel_values": pixel_values}
        views, view_texts = [], []
        for _ in range(self.augmented_views):  # view-major: [view 0 of every row, view 1 of every row, ...]
            views.extend(self._transform(self.augmented_image_transform, im) for im in images)
            view_texts.extend(
                self.augmented_caption_transform(c, self.rng) if self.augmented_caption_transform else c
                for c in captions
            )
        # Global and augmented captions are tokenised together, so both blocks share one padded length.
        feats = tokenize_texts(self.processor, texts + view_texts, self.family, self.max_length)
        n = len(texts)
        batch.update({k: v[:n] for k, v in feats.items()})
        if self.augmented_views:
            batch["aug_pixel_values"] = torch.stack(views)
            batch.update({f"aug_{k}": v[n:] for k, v in feats.items()})
        return batch
