"""Converting the packaged GGUF: the plain model gets every weight of the state dict, or an error."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_causal_lm

from hf_contrastive.core.smollm2 import rebuild_from_state_dict


def test_rebuild_keeps_every_weight():
    source = tiny_causal_lm(40)
    rebuilt = rebuild_from_state_dict(source.config, source.state_dict())
    want = source.state_dict()
    assert rebuilt.state_dict().keys() == want.keys()
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_missing_key_is_an_error():
    source = tiny_causal_lm(40)
    tampered = dict(source.state_dict())
    key = next(k for k in tampered if "layers.0.self_attn.q_proj" in k)
    del tampered[key]
    with pytest.raises(
        ValueError, match=r"1 missing key\(s\) \['model\.layers\.0\.self_attn\.q_proj\.weight'\]"
    ):
        rebuild_from_state_dict(source.config, tampered)


def test_unexpected_key_is_an_error_unless_named():
    source = tiny_causal_lm(40)
    tampered = {**source.state_dict(), "model.layers.0.extra.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\) \['model\.layers\.0\.extra\.weight'\]"):
        rebuild_from_state_dict(source.config, tampered)
    rebuilt = rebuild_from_state_dict(
        source.config, tampered, tolerated_unexpected={"model.layers.0.extra.weight"}
    )
    assert "model.layers.0.extra.weight" not in rebuilt.state_dict()
