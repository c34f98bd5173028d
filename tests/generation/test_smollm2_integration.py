"""SmolLM2-135M (packaged on PyPI): token-exact with transformers 4.55.4 on wikinews prompts, single and batched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hf_contrastive

REF = json.loads((Path(__file__).resolve().parent / "data" / "reference_v455_smollm2.json").read_text())

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    from hf_contrastive.core.smollm2 import smollm2_folder

    folder = smollm2_folder()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_smollm2_matches_v455_single_and_left_padded_batch(smollm2):
    gen = REF["generate_kwargs"]
    pad = gen["pad_token_id"]
    for prompt, expected in zip(REF["prompts"], REF["single"]):
        ids = torch.tensor([prompt])
        out = smollm2.generate(ids, attention_mask=torch.ones_like(ids), **gen)  # plain generate, registered
        assert out[0].tolist() == expected
    out = smollm2.generate(
        torch.tensor(REF["batch_input_ids"]),
        attention_mask=torch.tensor(REF["batch_attention_mask"]),
        custom_generate=hf_contrastive.contrastive_search,
        **gen,
    ).tolist()
    for row, mask, expected in zip(out, REF["batch_attention_mask"], REF["single"]):
        assert row[len(mask) - sum(mask) :] == expected
    assert all(
        t == pad for row, mask in zip(out, REF["batch_attention_mask"]) for t in row[: len(mask) - sum(mask)]
    )
