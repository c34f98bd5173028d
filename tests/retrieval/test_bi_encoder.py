"""Bi-encoder: shared or separate towers, prompts and lengths in the config, Contriever-style loading."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from tiny_models import TEXTS, WORDS, bert_config, bert_tokenizer, save_tiny_bert

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.retrieval.bi_encoder import BiEncoder, BiEncoderConfig


def tower_config(tok, **head):
    return SentenceEncoderConfig(backbone_config=bert_config(len(tok)), **head)


def bi_encoder(tmp_path, shared=True, seed=0, **settings):
    torch.manual_seed(seed)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = BiEncoder(BiEncoderConfig(tower_config(tok), shared_towers=shared, **settings))
    model.tokenizer = tok
    return model.eval()


def test_contriever_checkpoint_gives_mean_pooled_bert(tmp_path):
    """A Contriever checkpoint is a BertModel folder; its embedding is the masked mean of the last layer."""
    bert, tok = save_tiny_bert(tmp_path / "contriever")
    config = json.loads((tmp_path / "contriever" / "config.json").read_text())
    config["architectures"] = ["Contriever"]  # as facebook/contriever's config says
    (tmp_path / "contriever" / "config.json").write_text(json.dumps(config))
    model = BiEncoder.from_pretrained(tmp_path / "contriever")
    assert model.config.shared_towers and model.query_encoder.config.pooling == "mean"
    texts = TEXTS[:4]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)  # Contriever's "average" pooling, no normalisation
    torch.testing.assert_close(model.encode_queries(texts), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_documents(texts), expected, atol=1e-5, rtol=1e-5)
    # round trip through our own format
    model.save_pretrained(tmp_path / "saved")
    again = BiEncoder.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(again.encode_documents(texts), expected, atol=1e-5, rtol=1e-5)


def test_separate_towers_prompts_and_lengths_round_trip(tmp_path):
    model = bi_encoder(
        tmp_path, shared=False, query_prompt="query: ", document_prompt="passage: ", document_max_length=5
    )
    assert model.document_encoder is not model.query_encoder
    with torch.no_grad():  # make the towers differ
        model.document_encoder.backbone.embeddings.word_embeddings.weight.mul_(1.5)
    q, d = model.encode_queries(TEXTS), model.encode_documents(TEXTS)
    tok = model.tokenizer
    ref_q = model.query_encoder.encode([f"query: {t}" for t in TEXTS])
    ref_d = model.document_encoder.encode([f"passage: {t}" for t in TEXTS], max_length=5)
    torch.testing.assert_close(q, ref_q)
    torch.testing.assert_close(d, ref_d)
    assert not torch.allclose(model.document_encoder.encode(TEXTS), model.query_encoder.encode(TEXTS))
    model.save_pretrained(tmp_path / "bi")
    saved = json.loads((tmp_path / "bi" / "config.json").read_text())
    assert saved["query_prompt"] == "query: " and saved["document_max_length"] == 5
    assert saved["shared_towers"] is False
    from transformers import AutoModel

    again = AutoModel.from_pretrained(tmp_path / "bi")
    assert isinstance(again, BiEncoder)
    again.tokenizer = tok
    torch.testing.assert_close(again.encode_queries(TEXTS), q)
    torch.testing.assert_close(again.encode_documents(TEXTS), d)
    # one forward, first rows to the query tower
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    both = model(**batch, num_queries=2).embeddings
    torch.testing.assert_close(both[:2], model(**batch, tower="query").embeddings[:2])
    torch.testing.assert_close(both[2:], model(**batch, tower="document").embeddings[2:])


def test_shared_towers_have_one_set_of_weights(tmp_path):
    model = bi_encoder(tmp_path)
    assert model.document_encoder is model.query_encoder
    n_tower = sum(p.numel() for p in model.query_encoder.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_tower
    torch.testing.assert_close(model.encode_queries(TEXTS), model.encode_documents(TEXTS))


def test_sentence_encoder_encode_queries_uses_named_prompts(tmp_path):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    enc = SentenceEncoder(tower_config(tok, prompts={"query": "query: ", "passage": "passage: "})).eval()
    enc.tokenizer = tok
    torch.testing.assert_close(enc.encode_queries(TEXTS), enc.encode(TEXTS, prompt="query: "))
    torch.testing.assert_close(enc.encode_documents(TEXTS), enc.encode(TEXTS, prompt="passage: "))


def test_bad_input(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    with pytest.raises(ValueError, match="shared_towers=True uses the query tower"):
        BiEncoderConfig(tower_config(tok), document_encoder_config=tower_config(tok))
    with pytest.raises(TypeError, match="must be strings"):
        BiEncoderConfig(tower_config(tok), query_prompt=3)
    with pytest.raises(ValueError, match="document_max_length must be a positive integer"):
        BiEncoderConfig(tower_config(tok), document_max_length=0)
    with pytest.raises(ValueError, match="tower must be 'query' or 'document'"):
        bi_encoder(tmp_path).tower("passage")


def test_trainer_routes_roles_to_towers_with_prompts(tmp_path):
    """Anchors go through the query tower with the query prompt, positives through the document tower."""
    g = torch.Generator().manual_seed(0)
    rows = [
        " ".join(WORDS[i] for i in torch.randint(len(WORDS), (5,), generator=g).tolist()) for _ in range(16)
    ]
    ds = Dataset.from_dict({"anchor": rows[:8], "positive": rows[8:]})
    model = bi_encoder(tmp_path, shared=False, query_prompt="a ", document_prompt="the ")
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
    batch = trainer.data_collator([ds[i] for i in range(4)])
    tok = model.tokenizer
    texts = tok.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert all(t.startswith("a ") for t in texts[:4]) and all(t.startswith("the ") for t in texts[4:])
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
        q = model.query_encoder(
            **tok([f"a {t}" for t in rows[:4]], padding=True, return_tensors="pt")
        ).embeddings
        d = model.document_encoder(
            **tok([f"the {t}" for t in rows[8:12]], padding=True, return_tensors="pt")
        ).embeddings
        logits = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T / 0.05
        ref = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    before_q = {k: v.clone() for k, v in model.query_encoder.state_dict().items()}
    before_d = {k: v.clone() for k, v in model.document_encoder.state_dict().items()}
    trainer.train()
    name = "backbone.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(model.query_encoder.state_dict()[name], before_q[name])
    assert not torch.equal(model.document_encoder.state_dict()[name], before_d[name])
