"""Cards of the retrieval heads (bi-encoder, cross-encoder and LLM rerankers): metadata, snippets that run
against the saved folder and match the in-memory model, atomic saves, pushes of the model's files only."""

from __future__ import annotations

import pytest
import torch
from card_checks import (
    check_card,
    check_failed_save_keeps_previous,
    check_push_uploads_model_files_only,
    run_snippets,
)
from tiny_models import WORDS, bert_config, bert_tokenizer
from transformers import BertTokenizerFast, LlamaConfig, LlamaForCausalLM

from hf_contrastive import BiEncoder, SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.retrieval.rerankers import (
    CrossEncoderReranker,
    CrossEncoderRerankerConfig,
    LLMYesNoReranker,
)

WEIGHT_WRITER = "transformers.modeling_utils.safe_save_file"
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}


def bi_encoder(tmp_path, shared=False):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    query = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok)), normalize=True))
    document = (
        None if shared else SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    )
    query.tokenizer = tok
    model = BiEncoder.from_encoders(
        query, document, query_prompt="query: ", document_prompt="passage: "
    ).eval()
    model.card_info.base_model = "org/tiny-bert"
    return model


def cross_encoder(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    model = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(tok)).to_dict(), max_seq_length=48)
    ).eval()
    model.tokenizer = tok
    model.card_info.base_model = "org/tiny-bert"
    return model


def llm_reranker():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", ":", *sorted(set(WORDS)), "."]
    vocab = list(dict.fromkeys(vocab))
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    model = LLMYesNoReranker.from_backbone(
        LlamaForCausalLM(cfg).eval(),
        tokenizer=tok,
        yes_token="yes",
        no_token="no",
        prompt_template="query : {query} . document : {document} . yes or no :",
        max_seq_length=40,
    ).eval()
    model.card_info.base_model = "org/tiny-llama"
    return model


@pytest.mark.parametrize("shared", [True, False])
def test_bi_encoder_card_and_snippets(tmp_path, shared):
    model = bi_encoder(tmp_path, shared)
    folder = tmp_path / "bi"
    model.save_pretrained(folder)
    card = check_card(folder, "org/tiny-bert", "sentence-similarity")
    assert "dense-retrieval" in card.data.tags
    assert "`query: `" in card.text and ("shared" in card.text) == shared
    ours, plain = run_snippets(folder)
    torch.testing.assert_close(ours["query_embeddings"], model.encode_queries(ours["queries"]))
    torch.testing.assert_close(ours["document_embeddings"], model.encode_documents(ours["documents"]))
    torch.testing.assert_close(
        ours["scores"], model.similarity(model.encode_queries(ours["queries"]), ours["document_embeddings"])
    )
    # The plain snippet adds the query prompt by hand and reaches the same embedding.
    assert plain["queries"][0].startswith("query: ")
    torch.testing.assert_close(
        plain["query_embeddings"], model.encode_queries([plain["queries"][0][len("query: ") :]])
    )


def test_bi_encoder_failed_save_is_atomic(tmp_path, monkeypatch):
    model = bi_encoder(tmp_path)
    check_failed_save_keeps_previous(model.save_pretrained, tmp_path / "bi", monkeypatch, WEIGHT_WRITER)


def test_bi_encoder_push(tmp_path, hub):
    model = bi_encoder(tmp_path)
    expected = {"README.md", "config.json", "model.safetensors", *TOKENIZER_FILES}
    check_push_uploads_model_files_only(
        lambda **kw: model.push_to_hub("me/bi", **kw), hub, tmp_path, expected
    )
    assert 'BiEncoder.from_pretrained("me/bi")' in hub.commits[0]["files"]["README.md"].decode()


def test_cross_encoder_card_and_snippets(tmp_path):
    model = cross_encoder(tmp_path)
    folder = tmp_path / "ce"
    model.save_pretrained(folder)
    card = check_card(folder, "org/tiny-bert", "text-ranking")
    assert "reranker" in card.data.tags and "nogueira2019passage" in card.text
    ours, plain = run_snippets(folder)
    pairs = [(ours["query"], d) for d in ours["documents"]]
    torch.testing.assert_close(ours["scores"], model.predict(pairs))
    batch = model.tokenize_pairs([ours["query"]] * len(ours["documents"]), ours["documents"])
    with torch.no_grad():
        torch.testing.assert_close(plain["logits"], model(**batch).logits)
    # Loading the folder keeps the card's metadata for the next save.
    assert CrossEncoderReranker.from_pretrained(folder).card_info.base_model == "org/tiny-bert"


def test_cross_encoder_failed_save_is_atomic(tmp_path, monkeypatch):
    model = cross_encoder(tmp_path)
    check_failed_save_keeps_previous(model.save_pretrained, tmp_path / "ce", monkeypatch, WEIGHT_WRITER)


def test_cross_encoder_push(tmp_path, hub):
    model = cross_encoder(tmp_path)
    expected = {"README.md", "config.json", "model.safetensors", *TOKENIZER_FILES}
    check_push_uploads_model_files_only(
        lambda **kw: model.push_to_hub("me/ce", **kw), hub, tmp_path, expected
    )


def test_llm_reranker_card_and_snippet(tmp_path):
    model = llm_reranker()
    folder = tmp_path / "llm"
    model.save_pretrained(folder)
    card = check_card(folder, "org/tiny-llama", "text-ranking")
    assert "llama" in card.data.tags and "dai2025supervised" in card.text
    (ours,) = run_snippets(folder)
    pairs = [(ours["query"], d) for d in ours["documents"]]
    torch.testing.assert_close(ours["scores"], model.predict(pairs))


def test_llm_reranker_failed_save_is_atomic(tmp_path, monkeypatch):
    model = llm_reranker()
    check_failed_save_keeps_previous(model.save_pretrained, tmp_path / "llm", monkeypatch, WEIGHT_WRITER)


def test_llm_reranker_push(tmp_path, hub):
    model = llm_reranker()
    expected = {"README.md", "config.json", "model.safetensors", *TOKENIZER_FILES}
    check_push_uploads_model_files_only(
        lambda **kw: model.push_to_hub("me/llm", **kw), hub, tmp_path, expected
    )
