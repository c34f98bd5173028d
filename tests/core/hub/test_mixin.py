"""The shared save-and-card path: upload filter, hidden-size lookup, templates, and the sentence encoder through
the mixin (card, runnable snippets, atomic save, push of the model's files only)."""

from __future__ import annotations

import pytest
import torch
from card_checks import (
    check_card,
    check_failed_save_keeps_previous,
    check_push_uploads_model_files_only,
    run_snippets,
)
from transformers import BertConfig, DistilBertConfig, GPT2Config, T5Config

from hf_contrastive import SentenceEncoderConfig
from hf_contrastive.core.configuration import backbone_hidden_size
from hf_contrastive.core.hub import HubMixin, push_folder_to_hub
from hf_contrastive.core.hub.card import card_template_names
from hf_contrastive.core.hub.push import folder_operations
from hf_contrastive.relation.configuration import RelationClassifierConfig
from hf_contrastive.retrieval.rerankers.configuration import CrossEncoderRerankerConfig

WEIGHT_WRITER = "transformers.modeling_utils.safe_save_file"


@pytest.fixture
def encoder(tiny_encoder):
    tiny_encoder.card_info.base_model = "org/tiny-bert"
    return tiny_encoder


def _trainer_like_folder(root):
    (root / "logs").mkdir(parents=True)
    (root / "checkpoint-5").mkdir()
    (root / "nested-adapter").mkdir()
    for name in (
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "training_args.bin",
        "trainer_state.json",
        "all_results.json",
        "logs/events.out",
        "checkpoint-5/model.safetensors",
        "checkpoint-5/config.json",
        "nested-adapter/adapter_config.json",
        "nested-adapter/adapter_model.safetensors",
        ".hidden",
    ):
        (root / name).write_text(name)
    return root


def test_folder_upload_takes_model_files_only(tmp_path, hub):
    folder = _trainer_like_folder(tmp_path / "out")
    push_folder_to_hub(folder, "me/model")
    assert set(hub.commits[0]["files"]) == {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "nested-adapter/adapter_config.json",
        "nested-adapter/adapter_model.safetensors",
    }
    push_folder_to_hub(folder, "me/model", extra_files=["training_args.bin", "logs/*"])
    assert set(hub.commits[1]["files"]) - set(hub.commits[0]["files"]) == {
        "training_args.bin",
        "logs/events.out",
    }
    push_folder_to_hub(folder, "me/model", allow_patterns=["*.json"])
    assert set(hub.commits[2]["files"]) == {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "trainer_state.json",
        "all_results.json",
    }


def test_extra_files_must_exist_and_checkpoints_never_go_up(tmp_path):
    folder = _trainer_like_folder(tmp_path / "out")
    with pytest.raises(ValueError, match="match no file"):
        folder_operations(folder, extra_files=["missing.bin"])
    with pytest.raises(ValueError, match="match no file"):
        folder_operations(folder, extra_files=["checkpoint-5/model.safetensors"])


def test_hidden_size_lookup_is_shared():
    assert backbone_hidden_size(BertConfig(hidden_size=48)) == 48
    assert backbone_hidden_size(T5Config(d_model=40)) == 40
    assert backbone_hidden_size(GPT2Config(n_embd=24)) == 24
    assert backbone_hidden_size(DistilBertConfig(dim=16, hidden_dim=64)) == 16
    assert backbone_hidden_size({"d_model": 8}) == 8
    with pytest.raises(ValueError, match="no backbone_config"):
        backbone_hidden_size(None, "X")
    with pytest.raises(ValueError, match="hidden size"):
        backbone_hidden_size({"vocab_size": 3})
    # The heads' configs agree on a backbone that names its width n_embd (the lookups had drifted).
    gpt2 = GPT2Config(n_embd=24, n_layer=1, n_head=2)
    assert SentenceEncoderConfig(backbone_config=gpt2).hidden_size == 24
    assert RelationClassifierConfig(backbone_config=gpt2).hidden_size == 24
    assert CrossEncoderRerankerConfig(backbone_config=gpt2).hidden_size == 24


def test_one_template_per_family():
    assert {
        "sentence_encoder.md",
        "bi_encoder.md",
        "reranker.md",
        "relation_classifier.md",
        "causal_lm_adapter.md",
        "tkre_encoder.md",
    } <= set(card_template_names())


def test_sentence_encoder_card_snippets_match_the_in_memory_model(encoder, tmp_path):
    assert isinstance(encoder, HubMixin)
    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    card = check_card(folder, "org/tiny-bert", "sentence-similarity")
    assert "sentence-embeddings" in card.data.tags and "bert" in card.data.tags
    ours, plain = run_snippets(folder)
    torch.testing.assert_close(ours["embeddings"], encoder.encode(ours["sentences"]))
    batch = encoder.tokenizer(plain["sentences"], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain["embeddings"], encoder(**batch).embeddings)


def test_sentence_encoder_failed_save_is_atomic(encoder, tmp_path, monkeypatch):
    check_failed_save_keeps_previous(encoder.save_pretrained, tmp_path / "enc", monkeypatch, WEIGHT_WRITER)


def test_sentence_encoder_push_uploads_model_files_only(encoder, hub, tmp_path):
    expected = {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    check_push_uploads_model_files_only(
        lambda **kw: encoder.push_to_hub("me/tiny-encoder", **kw), hub, tmp_path, expected
    )
    folder = hub.download(tmp_path / "downloaded", commit=0)
    ours = run_snippets(folder, replace="me/tiny-encoder")[0]
    torch.testing.assert_close(ours["embeddings"], encoder.encode(ours["sentences"]))


def test_save_then_push_flag_filters_the_folder(encoder, hub, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "training_args.bin").write_bytes(b"x")
    encoder.save_pretrained(folder, push_to_hub=True, repo_id="me/x")
    assert (folder / "training_args.bin").exists()  # kept locally
    assert "training_args.bin" not in hub.commits[0]["files"]
    assert 'from_pretrained("me/x")' in hub.commits[0]["files"]["README.md"].decode()


def test_card_info_must_be_model_card_info(encoder):
    with pytest.raises(TypeError, match="ModelCardInfo"):
        encoder.card_info = {"base_model": "x"}


def test_results_reach_model_index(encoder, tmp_path):
    from hf_contrastive import EvalEntry

    encoder.card_info.add_result(
        EvalEntry("sentence-similarity", "STS-B", "mteb/stsbenchmark-sts", "spearman", 0.5)
    )
    encoder.save_pretrained(tmp_path / "enc")
    card = check_card(tmp_path / "enc", "org/tiny-bert")
    index = card.data.to_dict()["model-index"][0]["results"][0]
    assert index["metrics"][0]["value"] == pytest.approx(0.5)
    assert "| STS-B |" in card.text
