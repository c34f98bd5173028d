from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"
ENC_DEC = ("t5", "bart")


def load_tiny(name: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForSeq2SeqLM if name in ENC_DEC else AutoModelForCausalLM
    return cls.from_pretrained(DATA / "models" / name).eval()


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    torch.manual_seed(0)
    return {name: load_tiny(name) for name in ("llama", "gpt2", "t5", "bart")}


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((DATA / "reference_v455.json").read_text())
