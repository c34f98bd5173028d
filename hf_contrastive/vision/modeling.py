"""Helpers on transformers' own image-text dual encoders: `CLIPModel`, `SiglipModel` and
`VisionTextDualEncoderModel` (any vision tower + any text tower).

Nothing here copies modeling code: every embedding comes from the model's own `forward`, so a folder saved
after training gives the same features with plain `transformers`. What this module adds is what training and
evaluation need around it:

- [`dual_encoder_forward`]: one forward of the model (through its wrappers, so DDP/FSDP hooks fire) that
  returns the L2-normalised projected embeddings *and* the towers' pooled features before projection (the
  improved CLIP recipe puts its own projectors on those);
- [`logit_scale_and_bias`]: the model's learnable scale (exponentiated) and, for SigLIP, its bias;
- [`encode_images`] / [`encode_texts`]: batched inference from paths, PIL images or strings;
- [`zero_shot_classify`]: class embeddings from prompt templates (averaged, as CLIP does), arg-max;
- [`check_processor_matches`]: the processor's image size and vocabulary against the towers' configs.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DualEncoderOutput",
    "check_processor_matches",
    "clamp_logit_scale",
    "dual_encoder_family",
    "dual_encoder_forward",
    "encode_images",
    "encode_texts",
    "image_side",
    "load_image",
    "logit_scale_and_bias",
    "unwrap_dual_encoder",
    "zero_shot_classify",
    "DEFAULT_TEMPLATES",
]

#: Prompt templates used when none are given (a small subset of CLIP's ImageNet ensemble).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
)

_FAMILIES = {
    "CLIPModel": "clip",
    "SiglipModel": "siglip",
    "Siglip2Model": "siglip",
    "VisionTextDualEncoderModel": "dual",
}


@dataclass
class DualEncoderOutput:
    """What one forward of a dual encoder gives the losses.

    Attributes:
        image_embeds (`torch.Tensor`): `[N_img, D]` projected, L2-normalised image embeddings.
        text_embeds (`torch.Tensor`): `[N_txt, D]` projected, L2-normalised text embeddings.
        image_pooled (`torch.Tensor`): `[N_img, H_v]` the vision tower's pooled output before the projection
            (SigLIP has no separate projection: its pooled output is the embedding before normalisation).
        text_pooled (`torch.Tensor`): `[N_txt, H_t]` the same for the text tower.
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    image_pooled: torch.Tensor
    text_pooled: torch.Tensor


def unwrap_dual_encoder(model: Any) -> Any:
    """The transformers dual encoder under DDP (`.module`) and PEFT (`get_base_model()`) wrappers."""
    seen = 0
    while seen < 4:
        seen += 1
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            break
    return model


def dual_encoder_family(model: Any) -> str:
    """`"clip"`, `"siglip"` or `"dual"` (`VisionTextDualEncoderModel`); `TypeError` for anything else."""
    base = unwrap_dual_encoder(model)
    for cls in type(base).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    raise TypeError(
        "Expected a transformers image-text dual encoder (CLIPModel, SiglipModel or VisionTextDualEncoderModel), "
        f"got {type(base).__name__}."
    )


def dual_encoder_forward(
    model: Any,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **text_kwargs: Any,
) -> DualEncoderOutput:
    """One forward of the model (wrappers included) with every image and every text of a batch.

    The numbers of images and texts may differ (the augmented views of the improved recipe); the model's own
    logits are not used.

    Args:
        model (`Any`): a `CLIPModel`, `SiglipModel` or `VisionTextDualEncoderModel`, possibly wrapped by DDP,
            FSDP or PEFT.
        pixel_values (`torch.Tensor`): `[N_img, 3, H, W]`.
        input_ids (`torch.Tensor`): `[N_txt, L]`.
        attention_mask (`torch.Tensor`, *optional*): `[N_txt, L]` (SigLIP is trained without one: pass `None`).
        text_kwargs (`Any`): other text inputs (`token_type_ids`, `position_ids`).
    """
    kwargs = dict(text_kwargs)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    dual_encoder_family(model)
    base = unwrap_dual_encoder(model)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    # CLIP overwrites its towers' `pooler_output` with the projected features; the features before the
    # projection are read where they enter the projection layer, inside the model's own forward.
    for name in ("visual_projection", "text_projection"):
        layer = getattr(base, name, None)
        if isinstance(layer, torch.nn.Module):
            hooks.append(
                layer.register_forward_hook(
                    lambda _m, args, _out, key=name: captured.__setitem__(key, args[0])
                )
            )
    dtype = next(base.vision_model.parameters()).dtype
    if pixel_values.is_floating_point() and pixel_values.dtype != dtype:
        pixel_values = pixel_values.to(dtype)  # the collator makes float32; the towers may be bf16 or fp64
    try:
        out = model(pixel_values=pixel_values, input_ids=input_ids, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    image_pooled = captured.get("visual_projection", out.vision_model_output.pooler_output)
    text_pooled = captured.get("text_projection", out.text_model_output.pooler_output)
    # Read inside the model's forward, so in autocast's dtype (bf16 / fp16) even where accelerate hands the
    # outputs back in float32: give them the dtype of the embeddings, which the loss's own heads expect.
    image_pooled = image_pooled.to(out.image_embeds.dtype)
    text_pooled = text_pooled.to(out.text_embeds.dtype)
    return DualEncoderOutput(out.image_embeds, out.text_embeds, image_pooled, text_pooled)


def logit_scale_and_bias(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(exp(logit_scale), logit_bias or None)` of the model, keeping their graph (they are trained)."""
    base = unwrap_dual_encoder(model)
    scale = base.logit_scale.exp()
    bias = getattr(base, "logit_bias", None)
    return scale, bias


def clamp_logit_scale(model: Any, max_scale: float = 100.0) -> None:
    """Clip the learnable log-scale to `[0, log(max_scale)]` in place, as CLIP does after each step."""
    if max_scale <= 1.0:
        raise ValueError(f"max_scale must be > 1 (CLIP uses 100), got {max_scale}.")
    base = unwrap_dual_encoder(model)
    with torch.no_grad():
        base.logit_scale.clamp_(0.0, math.log(max_scale))


def check_processor_matches(model: Any, processor: Any) -> None:
    """Refuse a processor whose image size or vocabulary does not fit the model's towers.

    Raises:
        `ValueError`: naming the setting of each side that differs.
    """
    base = unwrap_dual_encoder(model)
    problems = []
    image_processor = getattr(processor, "image_processor", None)
    vision_cfg = getattr(base.config, "vision_config", None)
    if image_processor is not None and vision_cfg is not None and hasattr(vision_cfg, "image_size"):
        size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None)
        side = image_side(size)
        if side is not None and side != int(vision_cfg.image_size):
            problems.append(
                f"the image processor makes {side}x{side} images, the vision tower expects "
                f"{vision_cfg.image_size}x{vision_cfg.image_size}"
            )
    tokenizer = getattr(processor, "tokenizer", None)
    text_cfg = getattr(base.config, "text_config", None)
    if tokenizer is not None and text_cfg is not None and hasattr(text_cfg, "vocab_size"):
        if len(tokenizer) > int(text_cfg.vocab_size):
            problems.append(
                f"the tokenizer has {len(tokenizer)} tokens, the text tower's embedding has {text_cfg.vocab_size}"
            )
    if problems:
        raise ValueError("The processor does not match the model's towers: " + "; ".join(problems) + ".")


def image_side(size: Any) -> int | None:
    """The side in pixels of a processor's `size` / `crop_size` (int, dict or `SizeDict`); `None` if unknown."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        for key in ("height", "shortest_edge", "width"):
            if key in size and size[key] is not None:
                return int(size[key])
        return None
    for key in ("height", "shortest_edge", "width"):
        value = getattr(size, key, None)
        if value is not None:
            return int(value)
    return None


def load_image(image: Any) -> Image.Image:
    """A PIL RGB image from a path or a PIL image; `ValueError` naming the file when it cannot be decoded."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"Cannot decode image {os.fspath(image)!r}: {exc}") from exc
    if isinstance(image, dict) and (
        "path" in image or "bytes" in image
    ):  # datasets' Image feature, undecoded
        if image.get("bytes"):
            try:
                with Image.open(io.BytesIO(image["bytes"])) as im:
                    return im.convert("RGB")
            except (OSError, SyntaxError, ValueError) as exc:
                raise ValueError(f"Cannot decode image bytes ({image.get('path')!r}): {exc}") from exc
        return load_image(image["path"])
    raise TypeError(f"Expected an image path or a PIL image, got {type(image).__name__}.")


def _device(model: Any) -> torch.device:
    return next(unwrap_dual_encoder(model).parameters()).device


@torch.no_grad()
def encode_images(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    batch_size: int = 32,
    normalize: bool = True,
    image_transform: Any = None,
) -> torch.Tensor:
    """Embeddings `[N, D]` (float32, on CPU) of images given as paths or PIL images.

    Args:
        model (`Any`): the dual encoder.
        processor (`Any`): its processor (`image_processor` is used), or `None` with `image_transform`.
        images (`Sequence[Any]`): paths or PIL images.
        batch_size (`int`, *optional*, defaults to `32`): images per forward.
        normalize (`bool`, *optional*, defaults to `True`): L2-normalise (the model's own output is).
        image_transform (`Any`, *optional*): a callable PIL image -> `[3, H, W]` tensor used instead of the
            processor (the evaluation transform of `hf_contrastive.vision.augment`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    base = unwrap_dual_encoder(model)
    was_training = base.training
    base.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            batch = [load_image(im) for im in images[start : start + batch_size]]
            pixel_values = pixel_values_of(batch, processor, image_transform).to(_device(base))
            pixel_values = pixel_values.to(next(base.vision_model.parameters()).dtype)
            emb = base.get_image_features(pixel_values=pixel_values)
            emb = getattr(emb, "pooler_output", emb)
            out.append(emb.float().cpu())
    finally:
        base.train(was_training)
    emb = torch.cat(out) if out else torch.empty(0, 0)
    return F.normalize(emb, dim=-1) if normalize and emb.numel() else emb


def pixel_values_of(
    images: Sequence[Image.Image], processor: Any, image_transform: Any = None
) -> torch.Tensor:
    """`[N, 3, H, W]` pixel values from PIL images, by `image_transform` when given, else by the processor."""
    if image_transform is not None:
        return torch.stack([image_transform(im) for im in images])
    image_processor = getattr(processor, "image_processor", processor)
    if image_processor is None:
        raise ValueError(
            "Need a processor (with an image_processor) or an image_transform to make pixel values."
        )
    return image_processor(images=list(images), return_tensors="pt")["pixel_values"]


@torch.no_grad()
def encode_texts(
    model: Any,
    processor: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool = True,
    max_length: int | None = None,
) -> torch.Tensor:
    """Embeddings `[N, D]` (float32, on CPU) of texts.

    Args:
        model (`Any`): the dual encoder.
        processor (`Any`): its processor or tokenizer.
        texts (`Sequence[str]`): the texts.
        batch_size (`int`, *optional*, defaults to `64`): texts per forward.
        normalize (`bool`, *optional*, defaults to `True`): L2-normalise.
        max_length (`int`, *optional*): truncation length (default: the tokenizer's).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one string.")
    base = unwrap_dual_encoder(model)
    family = dual_encoder_family(base)
    was_training = base.training
    base.eval()
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            feats = tokenize_texts(processor, list(texts[start : start + batch_size]), family, max_length)
            feats = {k: v.to(_device(base)) for k, v in feats.items()}
            emb = base.get_text_features(**feats)
            emb = getattr(emb, "pooler_output", emb)
            out.append(emb.float().cpu())
    finally:
        base.train(was_training)
    emb = torch.cat(out) if out else torch.empty(0, 0)
    return F.normalize(emb, dim=-1) if normalize and emb.numel() else emb


def tokenize_texts(
    processor: Any, texts: list[str], family: str, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Tokenise as the family was trained: SigLIP pads to `max_length` and takes no attention mask."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer is None or not callable(tokenizer):
        raise ValueError("Need a processor with a tokenizer (or a tokenizer) to encode texts.")
    if family == "siglip":
        length = max_length or 64
        feats = tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        return {"input_ids": feats["input_ids"]}
    kwargs: dict[str, Any] = {"padding": True, "truncation": True, "return_tensors": "pt"}
    if max_length is not None:
        kwargs["max_length"] = max_length
    feats = tokenizer(texts, **kwargs)
    return {k: feats[k] for k in ("input_ids", "attention_mask") if k in feats}


@torch.no_grad()
def zero_shot_classify(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    image_transform: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot classification with prompt templates (CLIP's protocol).

    Each class embedding is the mean of its normalised template embeddings, re-normalised; each image goes to
    the class of highest cosine similarity.

    Returns:
        `(predictions [N], scores [N, C])`.
    """
    if not class_names:
        raise ValueError("class_names is empty.")
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"Each template must contain '{{}}' for the class name; got {list(templates)!r}.")
    classes = []
    for name in class_names:
        emb = encode_texts(model, processor, [t.format(name) for t in templates], batch_size=batch_size)
        classes.append(F.normalize(emb.mean(0), dim=-1))
    class_emb = torch.stack(classes)
    image_emb = encode_images(
        model, processor, images, batch_size=batch_size, image_transform=image_transform
    )
    scores = image_emb @ class_emb.T
    return scores.argmax(dim=-1), scores
