"""Tiny random image-text dual encoders and processors built from configs (no network, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    VisionTextDualEncoderProcessor,
    ViTConfig,
    ViTModel,
)

from tests.tiny_models import bert_tokenizer

IMAGE_SIZE = 32
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def tiny_processor(folder: Path) -> VisionTextDualEncoderProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=MEAN,
        image_std=STD,
    )
    return VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=bert_tokenizer(folder))


def _text(vocab: int) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    }


def _vision() -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }


def tiny_clip(vocab: int, seed: int = 0, dropout: float = 0.0) -> CLIPModel:
    torch.manual_seed(seed)
    text = {
        **_text(vocab),
        "attention_dropout": dropout,
        "eos_token_id": 3,
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    cfg = CLIPConfig(
        text_config=text, vision_config={**_vision(), "attention_dropout": dropout}, projection_dim=16
    )
    return CLIPModel(cfg)


def tiny_siglip(vocab: int, seed: int = 0) -> SiglipModel:
    torch.manual_seed(seed)
    text = {**_text(vocab), "projection_size": 32}
    return SiglipModel(SiglipConfig(text_config=text, vision_config=_vision()))


def tiny_dual(vocab: int, seed: int = 0, dropout: float = 0.0) -> VisionTextDualEncoderModel:
    torch.manual_seed(seed)
    vision = ViTModel(
        ViTConfig(**{**_vision(), "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout})
    )
    text = BertModel(
        BertConfig(
            **{**_text(vocab), "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        )
    )
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision.config, text.config, projection_dim=16
    )
    return VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[str]:
    """`n` random RGB JPEGs (different sizes are fine: the processor resizes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size[0] + i % 3, size[1], 3)) * 255).astype("uint8")
        path = folder / f"img{i}.jpg"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths
