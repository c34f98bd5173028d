"""Image-text evaluation: retrieval recall@K both ways, zero-shot accuracy, and the modality gap.

Plain functions on embeddings, and [`ImageTextRetrievalEvaluator`], a callable that embeds a caption split
with a model and returns the figures (usable alone or as one of `ImageTextContrastiveTrainer`'s `evaluators`,
whose `evaluate()` reports them prefixed `eval_`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.vision.modeling import encode_images, encode_texts, zero_shot_classify

__all__ = [
    "ImageTextRetrievalEvaluator",
    "image_text_retrieval_metrics",
    "modality_gap",
    "zero_shot_accuracy",
]


def image_text_retrieval_metrics(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K (in %) of image->text and text->image retrieval by cosine similarity.

    Image->text: an image counts as found at K when any of its captions is among the K most similar texts
    (the COCO protocol). Text->image: a caption counts when its own image is among the K most similar images.
    Ties are broken against the correct item (a constant embedding scores chance, never better).

    Args:
        image_embeddings (`torch.Tensor`): `[N_img, D]`.
        text_embeddings (`torch.Tensor`): `[N_txt, D]`.
        text_to_image (`Sequence[int]`): for each text, the row of its image.
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10)`): cut-offs.

    Returns:
        `{"image_to_text_recall@K": ..., "text_to_image_recall@K": ..., "chance_image_to_text@K": ...,
        "chance_text_to_image@K": ...}` in %.
    """
    img = F.normalize(image_embeddings.double(), dim=-1)
    txt = F.normalize(text_embeddings.double(), dim=-1)
    owner = torch.as_tensor(list(text_to_image), dtype=torch.long)
    if owner.numel() != txt.shape[0]:
        raise ValueError(f"text_to_image has {owner.numel()} entries for {txt.shape[0]} texts.")
    if owner.numel() and (owner.min() < 0 or owner.max() >= img.shape[0]):
        raise ValueError(
            f"text_to_image must index the {img.shape[0]} images, got values in "
            f"[{int(owner.min())}, {int(owner.max())}]."
        )
    sim = img @ txt.T  # [N_img, N_txt]
    positive = owner.unsqueeze(0) == torch.arange(img.shape[0]).unsqueeze(1)  # [N_img, N_txt]
    # rank of the best correct item = number of wrong items scoring >= it (ties count against)
    best_pos_i2t = sim.masked_fill(~positive, float("-inf")).max(dim=1).values
    rank_i2t = ((sim >= best_pos_i2t.unsqueeze(1)) & ~positive).sum(dim=1)
    pos_t2i = sim.T[torch.arange(txt.shape[0]), owner]
    rank_t2i = (pos_t2i.unsqueeze(1) <= sim.T).sum(dim=1) - 1
    n_pos = positive.sum(dim=1).double()
    out: dict[str, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"ks must be >= 1, got {k}.")
        out[f"image_to_text_recall@{k}"] = 100.0 * float((rank_i2t < k).double().mean())
        out[f"text_to_image_recall@{k}"] = 100.0 * float((rank_t2i < k).double().mean())
        out[f"chance_text_to_image@{k}"] = 100.0 * min(1.0, k / img.shape[0])
        out[f"chance_image_to_text@{k}"] = 100.0 * float(_chance_any(n_pos, txt.shape[0], k).mean())
    return out


def _chance_any(n_pos: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """P(at least one of `n_pos` correct items among `k` drawn without replacement from `n`)."""
    k = min(k, n)
    out = []
    for p in n_pos.tolist():
        p = int(p)
        miss = 1.0
        for j in range(k):
            miss *= max(0.0, (n - p - j) / (n - j))
        out.append(1.0 - miss)
    return torch.tensor(out, dtype=torch.float64)


def modality_gap(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, paired: bool | None = None
) -> dict[str, float]:
    """How far apart the two modalities sit on the sphere (Liang et al. 2022; what CLOSE's shift corrects).

    With `delta = mean(n(image)) - mean(n(text))`:

    - `centroid_distance`: `||delta||`;
    - `gap_direction_share`: for paired rows, the share of the mean squared pair distance that lies along
      `delta` (`mean(((x_i - y_i) . delta/||delta||)^2) / mean(||x_i - y_i||^2)`); the paired mean of
      `(x_i - y_i) . delta/||delta||` equals `||delta||` exactly;
    - `mean_pair_cosine` (paired) and `mean_cross_cosine` (all image-text pairs).

    Args:
        image_embeddings (`torch.Tensor`): `[N, D]`.
        text_embeddings (`torch.Tensor`): `[M, D]`.
        paired (`bool`, *optional*): rows are pairs (default: when `N == M`).
    """
    if image_embeddings.dim() != 2 or text_embeddings.dim() != 2:
        raise ValueError("modality_gap expects two 2-D tensors [N, D] and [M, D].")
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            f"Embedding sizes differ: images {image_embeddings.shape[1]}, texts {text_embeddings.shape[1]}."
        )
    x = F.normalize(image_embeddings.double(), dim=-1)
    y = F.normalize(text_embeddings.double(), dim=-1)
    delta = x.mean(0) - y.mean(0)
    norm = float(delta.norm())
    out = {"centroid_distance": norm, "mean_cross_cosine": float((x @ y.T).mean())}
    paired = (x.shape[0] == y.shape[0]) if paired is None else paired
    if paired:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"paired=True needs as many images as texts, got {x.shape[0]} and {y.shape[0]}.")
        diff = x - y
        out["mean_pair_cosine"] = float((x * y).sum(-1).mean())
        if norm > 0:
            along = diff @ (delta / norm)
            out["gap_direction_share"] = float((along**2).mean() / (diff**2).sum(-1).mean())
    return out


def zero_shot_accuracy(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    labels: Sequence[int],
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    image_transform: Any = None,
) -> dict[str, float]:
    """Top-1 zero-shot accuracy (%) with prompt templates, and the majority-class rate for reference."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    kwargs = {"templates": templates} if templates is not None else {}
    predictions, _ = zero_shot_classify(
        model, processor, images, class_names, image_transform=image_transform, **kwargs
    )
    gold = torch.as_tensor(list(labels))
    majority = torch.bincount(gold, minlength=len(class_names)).max()
    return {
        "zero_shot_accuracy": 100.0 * float((predictions == gold).double().mean()),
        "majority_rate": 100.0 * float(majority) / max(len(labels), 1),
    }


class ImageTextRetrievalEvaluator:
    """Recall@K both ways on a caption split, for a dual encoder.

    Args:
        dataset (`Any`): rows with an image column and a list-of-captions column (e.g. [`load_coco_captions`]).
        processor (`Any`): the model's processor.
        image_column (`str`, *optional*, defaults to `"image"`): image column.
        caption_column (`str`, *optional*, defaults to `"captions"`): caption column (a string or a list).
        name (`str`, *optional*, defaults to `"retrieval"`): prefix of the figures (`retrieval_image_to_text_recall@5`).
        ks (`Sequence[int]`, *optional*, defaults to `(1, 5, 10)`): cut-offs.
        image_transform (`Any`, *optional*): evaluation transform used instead of the processor's.
        max_length (`int`, *optional*): caption truncation length.
        with_gap (`bool`, *optional*, defaults to `True`): also report the modality gap.
    """

    def __init__(
        self,
        dataset: Any,
        processor: Any,
        image_column: str = "image",
        caption_column: str = "captions",
        name: str = "retrieval",
        ks: Sequence[int] = (1, 5, 10),
        image_transform: Any = None,
        max_length: int | None = None,
        with_gap: bool = True,
    ) -> None:
        columns = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
        for column in (image_column, caption_column):
            if column not in columns:
                raise ValueError(
                    f"The evaluation dataset has no column {column!r}; its columns are {columns}."
                )
        self.images = list(dataset[image_column])
        self.texts, self.owner = [], []
        for i, caps in enumerate(dataset[caption_column]):
            caps = [caps] if isinstance(caps, str) else list(caps)
            self.texts.extend(caps)
            self.owner.extend([i] * len(caps))
        self.processor, self.name, self.ks = processor, name, tuple(ks)
        self.image_transform, self.max_length, self.with_gap = image_transform, max_length, with_gap

    def embed(self, model: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings of the split."""
        image = encode_images(model, self.processor, self.images, image_transform=self.image_transform)
        text = encode_texts(model, self.processor, self.texts, max_length=self.max_length)
        return image, text

    def __call__(self, model: Any) -> dict[str, float]:
        image, text = self.embed(model)
        figures = image_text_retrieval_metrics(image, text, self.owner, self.ks)
        if self.with_gap:
            gap = modality_gap(image[torch.as_tensor(self.owner)], text, paired=True)
            figures.update({f"gap_{k}": v for k, v in gap.items()})
        return {f"{self.name}_{k}": v for k, v in figures.items()}
