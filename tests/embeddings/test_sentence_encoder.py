"""SentenceEncoder head: forward, encode, config round trip, projection switches, PEFT."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TEXTS, bert_config, bert_tokenizer, tiny_llama
from transformers import AutoConfig, AutoModel

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig


def make_head(tmp_path, **head):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok)), **head)).eval()
    model.tokenizer = tok
    return model, tok


def test_forward_output_and_mean_pooling_reference(tmp_path):
    model, tok = make_head(tmp_path, pooling="mean")
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    out = model(**batch)
    assert out.embeddings.shape == (len(TEXTS), 32)
    states = model.backbone(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(out.embeddings, (states * m).sum(1) / m.sum(1))
    assert out.pooled is not None and out.last_hidden_state.shape[:2] == batch["input_ids"].shape


def test_save_load_round_trip_through_auto_model(tmp_path):
    model, tok = make_head(
        tmp_path,
        pooling="cls",
        projection_dim=16,
        normalize=True,
        max_seq_length=24,
        prompts={"query": "query: "},
        default_prompt_name="query",
    )
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "contrastive_sentence_encoder"
    assert saved["pooling"] == "cls" and saved["projection_dim"] == 16 and saved["normalize"] is True
    assert (tmp_path / "saved" / "tokenizer.json").exists() or (tmp_path / "saved" / "vocab.txt").exists()

    auto = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert type(auto) is SentenceEncoder
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "saved"), SentenceEncoderConfig)
    loaded = SentenceEncoder.from_pretrained(tmp_path / "saved")
    for other in (auto, loaded):
        for key in (
            "pooling",
            "projection_dim",
            "normalize",
            "max_seq_length",
            "prompts",
            "default_prompt_name",
        ):
            assert getattr(other.config, key) == getattr(model.config, key)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    torch.testing.assert_close(auto(**batch).embeddings, model(**batch).embeddings, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode(TEXTS), model.encode(TEXTS), rtol=0, atol=1e-6)
    assert loaded.encode(TEXTS).norm(dim=-1).sub(1).abs().max() < 1e-5


def test_head_overrides_at_load_time(tmp_path):
    model, _ = make_head(tmp_path, pooling="cls")
    model.save_pretrained(tmp_path / "saved")
    other = SentenceEncoder.from_pretrained(tmp_path / "saved", pooling="max", normalize=True)
    assert other.config.pooling == "max" and other.config.normalize
    with pytest.raises(ValueError, match="expected one of"):
        SentenceEncoder.from_pretrained(tmp_path / "saved", pooling="avg")


def test_mlp_only_train_and_cls_before_pooler(tmp_path):
    model, tok = make_head(tmp_path, pooling="cls", projection_dim=32, mlp_only_train=True)
    batch = tok(TEXTS[:3], padding=True, return_tensors="pt")
    cls_state = model.backbone(**batch).last_hidden_state[:, 0]
    model.eval()
    torch.testing.assert_close(model(**batch).embeddings, cls_state)  # MLP dropped at inference
    model.train()
    torch.manual_seed(1)
    train_out = model(**batch)
    expected = torch.tanh(model.projection.dense(train_out.pooled))
    torch.testing.assert_close(train_out.embeddings, expected)
    model.eval()
    model.config.mlp_only_train = False
    torch.testing.assert_close(model(**batch).embeddings, torch.tanh(model.projection.dense(cls_state)))
    model.config.pooling = "cls_before_pooler"
    torch.testing.assert_close(model(**batch).embeddings, cls_state)


def test_encode_order_batching_and_formats(tmp_path):
    model, tok = make_head(tmp_path, pooling="mean")
    full = model.encode(TEXTS, batch_size=64)
    one_by_one = torch.stack([model.encode(t) for t in TEXTS])
    torch.testing.assert_close(full, one_by_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode(TEXTS, batch_size=2), full, atol=1e-5, rtol=1e-5)
    assert model.encode(TEXTS[0]).shape == (32,)
    arr = model.encode(TEXTS, convert_to="numpy")
    assert arr.shape == (len(TEXTS), 32) and str(arr.dtype) == "float32"
    assert len(model.encode(TEXTS, convert_to="list")) == len(TEXTS)
    normed = model.encode(TEXTS, normalize=True)
    torch.testing.assert_close(normed, F.normalize(full, dim=-1), atol=1e-5, rtol=1e-5)
    assert model.training is False


def test_encode_restores_training_mode_and_prompts(tmp_path):
    model, tok = make_head(tmp_path, pooling="mean", prompts={"query": "dog "})
    model.train()
    a = model.encode(["cat sleeps"], prompt_name="query")
    b = model.encode(["dog cat sleeps"])
    assert model.training
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="Unknown prompt_name"):
        model.encode(["x"], prompt_name="document")


def test_encode_bad_input(tmp_path):
    model, _ = make_head(tmp_path)
    with pytest.raises(ValueError, match="non-empty"):
        model.encode([])
    with pytest.raises(TypeError, match="expects strings"):
        model.encode(["ok", 3])
    with pytest.raises(ValueError, match="convert_to"):
        model.encode(["ok"], convert_to="pandas")
    model.tokenizer = None
    with pytest.raises(ValueError, match="needs a tokenizer"):
        model.encode(["ok"])


def test_encode_progress_bar(tmp_path, capsys):
    model, _ = make_head(tmp_path)
    model.encode(TEXTS * 3, batch_size=4, show_progress_bar=True)
    assert "Encoding" in capsys.readouterr().err


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pooling_on_decoder_is_padding_invariant(side):
    backbone = tiny_llama()
    model = SentenceEncoder(
        SentenceEncoderConfig(backbone_config=backbone.config, pooling="last_token"), backbone=backbone
    ).eval()
    seqs = [[5, 6, 7, 8, 9], [11, 12, 13]]
    singles = [model(input_ids=torch.tensor([s])).embeddings[0] for s in seqs]
    width = max(map(len, seqs))
    ids, mask = [], []
    for s in seqs:
        pad = [0] * (width - len(s))
        ids.append(pad + s if side == "left" else s + pad)
        mask.append([0] * len(pad) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * len(pad))
    position_ids = None
    if side == "left":
        m = torch.tensor(mask)
        position_ids = (m.cumsum(-1) - 1).clamp(min=0)
    batched = model(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=position_ids
    ).embeddings
    for i in range(len(seqs)):
        torch.testing.assert_close(batched[i], singles[i], atol=1e-5, rtol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown pooling"):
        SentenceEncoderConfig(backbone_config=bert_config(), pooling="avg")
    with pytest.raises(ValueError, match="projection_activation"):
        SentenceEncoderConfig(backbone_config=bert_config(), projection_activation="swish")
    with pytest.raises(ValueError, match="default_prompt_name"):
        SentenceEncoderConfig(backbone_config=bert_config(), default_prompt_name="query")
    with pytest.raises(ValueError, match="model_type"):
        SentenceEncoderConfig(backbone_config={"hidden_size": 8})
    cfg = SentenceEncoderConfig(backbone_config=bert_config().to_dict(), projection_dim=8)
    assert cfg.embedding_dim == 8 and cfg.hidden_size == 32


def test_similarity_functions(tmp_path):
    model, _ = make_head(tmp_path)
    a, b = torch.randn(3, 32), torch.randn(2, 32)
    torch.testing.assert_close(model.similarity(a, b), F.cosine_similarity(a[:, None], b[None], dim=-1))
    model.config.similarity_fn = "dot"
    torch.testing.assert_close(model.similarity(a, b), a @ b.T)
    model.config.similarity_fn = "euclidean"
    torch.testing.assert_close(model.similarity(a, b), -torch.cdist(a, b))


def test_peft_lora_adapters_save_load_and_merge(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tok = make_head(tmp_path, pooling="mean", normalize=True)
    model.save_pretrained(tmp_path / "base")
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    base_out = model(**batch).embeddings

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False)
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in peft_model.parameters()) / 5
    peft_model.eval()
    adapted = peft_model(**batch).embeddings
    assert (adapted - base_out).abs().max() > 1e-4  # the adapter changes the output
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    reloaded = PeftModel.from_pretrained(
        SentenceEncoder.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    )
    torch.testing.assert_close(reloaded.eval()(**batch).embeddings, adapted, atol=1e-6, rtol=1e-5)

    merged = reloaded.merge_and_unload()
    assert type(merged) is SentenceEncoder
    merged.save_pretrained(tmp_path / "merged")
    plain = AutoModel.from_pretrained(tmp_path / "merged").eval()
    assert type(plain) is SentenceEncoder
    assert not any("lora" in k for k in plain.state_dict())
    torch.testing.assert_close(plain(**batch).embeddings, adapted, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_and_backward(tmp_path):
    model, tok = make_head(tmp_path, pooling="mean")
    model.train()
    model.gradient_checkpointing_enable()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    model(**batch).embeddings.sum().backward()
    assert model.backbone.embeddings.word_embeddings.weight.grad is not None
