"""Boundary checks of the core: backbone token limits, recipe values of the wrong type, corrupt files."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import bert_config
from transformers import RobertaConfig

from hf_contrastive.core.boundary import CorruptFileError, cap_max_length, corrupt_file_errors, position_limit
from hf_contrastive.core.data.collator import ContrastiveDataCollator
from hf_contrastive.core.data.columns import ColumnRoles
from hf_contrastive.core.recipes import RecipeError, check_section, coerce_value, read_method, schema_of
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig

LONG = "a man is eating food . " * 40  # ~240 tokens, far past the tiny backbone's 64 positions


def test_position_limit_reads_max_position_embeddings_and_roberta_offsets():
    assert position_limit(bert_config()) == 64
    roberta = RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert position_limit(roberta) == 512  # positions start at padding_idx + 1
    assert position_limit(SentenceEncoderConfig(backbone_config=bert_config())) == 64
    assert position_limit(None) is None


def test_cap_max_length_warns_once_when_the_request_is_too_long():
    with pytest.warns(UserWarning, match=r"max_length=300 exceeds the backbone's limit of 40"):
        assert cap_max_length(300, 40) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cap_max_length(300, 40) == 40  # once
        assert cap_max_length(None, 40) == 40
        assert cap_max_length(30, 40) == 30
        assert cap_max_length(300, None) == 300


def test_collator_truncates_at_the_backbone_limit(bert_tok):
    roles = ColumnRoles(anchor="anchor", positive="positive")
    rows = [{"anchor": LONG, "positive": "a dog runs"}] * 2
    # Before: no cap, the batch is ~240 tokens wide and the 64-position backbone fails in torch.
    with pytest.warns(UserWarning, match="max_seq_length=512 exceeds the backbone's limit of 64"):
        collator = ContrastiveDataCollator(bert_tok, roles, max_length=512, position_limit=64)
    assert collator(rows)["input_ids"].shape[1] == 64
    unset = ContrastiveDataCollator(bert_tok, roles, position_limit=64)
    assert unset(rows)["input_ids"].shape[1] == 64


@dataclass
class _Method:
    temperature: float = 0.05
    queue_size: int = 16
    symmetric: bool = False
    languages: list[str] | None = None


def test_recipe_values_are_checked_against_their_types():
    with pytest.raises(RecipeError, match=r"method\.temperature must be a number, got 'abc'"):
        read_method(_Method, {"temperature": "abc"})
    with pytest.raises(RecipeError, match=r"method\.queue_size must be an integer, got 1\.5"):
        read_method(_Method, {"queue_size": 1.5})
    with pytest.raises(RecipeError, match=r"method\.symmetric must be a boolean .*got 'maybe'"):
        read_method(_Method, {"symmetric": "maybe"})
    with pytest.raises(RecipeError, match=r"method\.languages must be a list of strings or null, got 'en'"):
        read_method(_Method, {"languages": "en"})
    method = read_method(_Method, {"temperature": "1e-2", "queue_size": "32", "languages": ["en"]})
    assert method.temperature == pytest.approx(0.01) and method.queue_size == 32
    assert coerce_value("1e-4", float, "args.learning_rate") == pytest.approx(1e-4)


def test_check_section_refuses_unknown_keys_with_a_suggestion():
    with pytest.raises(RecipeError, match=r"\['eval_stss'\].*data\.eval_sts\?.*accepted keys: \['eval_sts'"):
        check_section({"eval_stss": "dev"}, {"eval_sts": str, "train": dict}, "data")
    assert check_section({"eval_sts": "dev"}, {"eval_sts": str}, "data") == {"eval_sts": "dev"}
    assert "temperature" in schema_of(_Method)


def test_corrupt_json_and_safetensors_are_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": ', encoding="utf-8")
    with (
        pytest.raises(CorruptFileError, match=r"config\.json is not valid JSON") as info,
        corrupt_file_errors(tmp_path),
    ):
        json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)

    good = tmp_path / "w"
    good.mkdir()
    save_file({"x": torch.zeros(64)}, str(good / "model.safetensors"))
    data = (good / "model.safetensors").read_bytes()
    (good / "model.safetensors").write_bytes(data[: len(data) // 2])
    with (
        pytest.raises(CorruptFileError, match=r"model\.safetensors .*truncated or corrupt"),
        corrupt_file_errors(good),
    ):
        load_file(str(good / "model.safetensors"))
