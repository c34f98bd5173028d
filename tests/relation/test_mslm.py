"""Masked span LM: region rates measured on a large seeded sample, 80/10/10, nothing special masked."""

from __future__ import annotations

import pytest
import torch
from tiny_models import bert_tokenizer

from hf_contrastive.relation.data import RelationExample, marker_tokens
from hf_contrastive.relation.mslm import MaskedSpanLMCollator, region_ids


@pytest.fixture
def setup(tmp_path):
    tok = bert_tokenizer(tmp_path)
    tok.add_tokens(marker_tokens("typed_entity_marker"), special_tokens=True)
    # other: "the woman plays", subject "quick brown fox", between "jumps over the lazy",
    # object "dog in park", other "today"
    words = "the woman plays quick brown fox jumps over the lazy dog in park today".split()
    ex = RelationExample(words, (3, 6), (10, 13))
    return tok, ex


def test_region_geometry(setup):
    tok, ex = setup
    collator = MaskedSpanLMCollator(tok, seed=0)
    batch = collator.relation_collator([ex])
    region = region_ids(batch["input_ids"], batch["attention_mask"], batch["entity_positions"])[0]
    toks = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    by_region = {r: [t for t, g in zip(toks, region.tolist()) if g == r] for r in (1, 2, 3)}
    assert by_region[1] == ["jumps", "over", "the", "lazy"]
    assert by_region[2] == ["quick", "brown", "fox", "dog", "in", "park"]
    assert set(by_region[3]) == {
        "[CLS]",
        "the",
        "woman",
        "plays",
        "[S:ENTITY]",
        "[/S:ENTITY]",
        "[O:ENTITY]",
        "[/O:ENTITY]",
        "today",
        "[SEP]",
    }
    probs = collator.probabilities(batch)[0]
    for t, p in zip(toks, probs.tolist()):
        if t.startswith("[") and t.endswith("]"):
            assert p == 0.0, t


def test_masking_rates_and_replacement_policy(setup):
    tok, ex = setup
    n = 4000
    collator = MaskedSpanLMCollator(tok, p_between=0.8, p_entity=0.5, p_other=0.2, seed=1234)
    clean = collator.relation_collator([ex] * n)
    batch = collator.mask(clean)
    region = region_ids(clean["input_ids"], clean["attention_mask"], clean["entity_positions"])
    selected = batch["labels"] != -100
    special = torch.isin(clean["input_ids"], collator.protected_ids)
    assert not selected[special].any()  # [CLS], [SEP], markers: never
    for r, p in ((1, 0.8), (2, 0.5), (3, 0.2)):
        cells = (region == r) & ~special
        rate = selected[cells].float().mean().item()
        sd = (p * (1 - p) / cells.sum().item()) ** 0.5
        assert abs(rate - p) < 5 * sd, (r, rate, p)
    assert torch.equal(batch["labels"][selected], clean["input_ids"][selected])
    changed = batch["input_ids"][selected]
    original = clean["input_ids"][selected]
    masked = (changed == tok.mask_token_id).float().mean().item()
    kept = (changed == original).float().mean().item()
    total = selected.sum().item()
    sd = (0.1 * 0.9 / total) ** 0.5
    assert abs(masked - 0.8) < 5 * (0.16 / total) ** 0.5
    assert abs(kept - 0.1) < 5 * sd + 0.01  # a random draw can hit the original token
    randomised = changed[(changed != tok.mask_token_id) & (changed != original)]
    assert not torch.isin(randomised, collator.protected_ids).any()
    assert torch.equal(batch["input_ids"][~selected], clean["input_ids"][~selected])


def test_configurable_and_seeded(setup):
    tok, ex = setup
    a = MaskedSpanLMCollator(tok, p_between=0.0, p_entity=1.0, p_other=0.0, seed=3)([ex] * 4)
    b = MaskedSpanLMCollator(tok, p_between=0.0, p_entity=1.0, p_other=0.0, seed=3)([ex] * 4)
    assert torch.equal(a["input_ids"], b["input_ids"])
    region = region_ids(a["input_ids"], a["attention_mask"], a["entity_positions"])
    assert torch.equal(a["labels"] != -100, region == 2)
    with pytest.raises(ValueError, match="probability"):
        MaskedSpanLMCollator(tok, p_between=1.5)
    with pytest.raises(ValueError, match="<= 1"):
        MaskedSpanLMCollator(tok, mask_replace_prob=0.8, random_replace_prob=0.3)
