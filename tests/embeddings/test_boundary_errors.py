"""Boundary errors of the embeddings wing: long texts, inputs that are not texts, corrupt model files."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import save_tiny_bert

from hf_contrastive import SentenceEncoder
from hf_contrastive.core.boundary import CorruptFileError

LONG = "a man is eating food . " * 40  # ~240 tokens; the tiny backbone has 64 positions


def test_encode_truncates_at_the_backbone_position_limit(tiny_encoder):
    # Before: RuntimeError "The size of tensor a (242) must match the size of tensor b (64)".
    emb = tiny_encoder.encode([LONG, "a dog runs"])
    assert emb.shape == (2, tiny_encoder.embedding_dim) and torch.isfinite(emb).all()
    with pytest.warns(UserWarning, match=r"max_length=500 exceeds the backbone's limit of 64"):
        again = tiny_encoder.encode([LONG], max_length=500)
    torch.testing.assert_close(again[0], emb[0])


@pytest.mark.parametrize(
    ("texts", "given"),
    [(None, "got None"), (42, "got int 42"), (b"bytes", "got bytes b'bytes'"), ({"a": 1}, "got dict")],
)
def test_encode_says_what_texts_must_be(tiny_encoder, texts, given):
    with pytest.raises(TypeError, match=rf"texts must be a string or a sequence of strings.*{given}"):
        tiny_encoder.encode(texts)


def test_encode_names_the_item_that_is_not_a_string(tiny_encoder):
    with pytest.raises(TypeError, match=r"sequence of strings; item 1 is None\."):
        tiny_encoder.encode(["ok", None])
    with pytest.raises(TypeError, match=r"item 0 is int 3"):
        tiny_encoder.encode([3])


def _folders(tmp_path):
    save_tiny_bert(tmp_path / "bert")
    model = SentenceEncoder.from_pretrained(str(tmp_path / "bert"), pooling="mean")
    model.save_pretrained(tmp_path / "own")
    return {"bert": tmp_path / "bert", "own": tmp_path / "own"}


@pytest.mark.parametrize("kind", ["bert", "own"])
def test_corrupt_config_json_names_the_file(tmp_path, kind):
    folder = _folders(tmp_path)[kind]
    (folder / "config.json").write_text('{"model_type": ', encoding="utf-8")
    # Before: a bare json.JSONDecodeError "Expecting value: line 1 column 16 (char 15)".
    with pytest.raises(CorruptFileError, match=rf"{kind}/config\.json is not valid JSON.*again"):
        SentenceEncoder.from_pretrained(str(folder), pooling="mean")


@pytest.mark.parametrize("kind", ["bert", "own"])
def test_truncated_safetensors_names_the_file(tmp_path, kind):
    folder = _folders(tmp_path)[kind]
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    # Before: a bare SafetensorError "Error while deserializing header: incomplete metadata ...".
    with pytest.raises(OSError, match=rf"{kind}/model\.safetensors .*truncated or corrupt"):
        SentenceEncoder.from_pretrained(str(folder), pooling="mean")


def test_corrupt_sentence_transformers_module_config_is_named(tmp_path, minilm_path):
    folder = tmp_path / "st"
    shutil.copytree(minilm_path, folder)
    (folder / "1_Pooling" / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(CorruptFileError, match=r"1_Pooling/config\.json is not valid JSON"):
        SentenceEncoder.from_pretrained(str(folder))
