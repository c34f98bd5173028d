"""Loading foreign checkpoints: each must give the original library's embeddings."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TEXTS, save_tiny_bert
from transformers import BertModel

from hf_contrastive import SentenceEncoder

COS_MIN = 0.99999


def assert_same_embeddings(a, b):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min().item() >= COS_MIN, cos
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "pooler", "avg_first_last", "avg_top2"])
def test_plain_backbone_folder_with_pooling_argument(tmp_path, pooling):
    bert, tok = save_tiny_bert(tmp_path / "bert")
    model = SentenceEncoder.from_pretrained(tmp_path / "bert", pooling=pooling)
    assert model.config.pooling == pooling and model.card_info.base_model is None
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    out = bert(**batch, output_hidden_states=True)
    m = batch["attention_mask"].unsqueeze(-1).float()
    ref = {
        "mean": (out.last_hidden_state * m).sum(1) / m.sum(1),
        "cls": out.last_hidden_state[:, 0],
        "max": out.last_hidden_state.masked_fill(m == 0, float("-inf")).max(1).values,
        "pooler": out.pooler_output,
        "avg_first_last": (((out.hidden_states[1] + out.hidden_states[-1]) / 2) * m).sum(1) / m.sum(1),
        "avg_top2": (((out.hidden_states[-2] + out.hidden_states[-1]) / 2) * m).sum(1) / m.sum(1),
    }[pooling]
    assert_same_embeddings(model.encode(TEXTS), ref)


def _write_sentence_transformers(folder, bert_folder, pooling_mode, dense=None, normalize=True):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = [Transformer(str(bert_folder), max_seq_length=20)]
    modules.append(Pooling(32, pooling_mode=pooling_mode))
    if dense is not None:
        torch.manual_seed(3)
        modules.append(Dense(32, dense[0], activation_function=dense[1]))
    if normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(folder))
    return st


@pytest.mark.parametrize(
    ("pooling_mode", "dense", "normalize"),
    [
        ("mean", None, True),
        ("cls", None, False),
        ("max", None, True),
        ("weightedmean", None, False),
        ("lasttoken", None, False),
        ("mean_sqrt_len_tokens", None, False),
        ("mean", (16, torch.nn.Tanh()), True),
        ("cls", (24, torch.nn.Identity()), False),
    ],
)
def test_sentence_transformers_folder_matches_sentence_transformers(tmp_path, pooling_mode, dense, normalize):
    pytest.importorskip("sentence_transformers")
    save_tiny_bert(tmp_path / "bert")
    st = _write_sentence_transformers(tmp_path / "st", tmp_path / "bert", pooling_mode, dense, normalize)
    model = SentenceEncoder.from_pretrained(tmp_path / "st")
    assert model.config.max_seq_length == 20
    assert model.config.normalize is normalize
    assert (model.config.projection_dim is not None) == (dense is not None)
    texts = TEXTS + ["dog " * 40]  # longer than max_seq_length: truncation must match too
    assert_same_embeddings(
        model.encode(texts, batch_size=3), st.encode(texts, batch_size=3, convert_to_tensor=True)
    )


def test_sentence_transformers_unsupported_modules(tmp_path):
    save_tiny_bert(tmp_path / "st")
    (tmp_path / "st" / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_LSTM", "type": "sentence_transformers.models.LSTM"},
            ]
        )
    )
    with pytest.raises(ValueError, match="Unsupported sentence-transformers modules.*LSTM"):
        SentenceEncoder.from_pretrained(tmp_path / "st")


def test_sentence_transformers_multi_pooling_refused(tmp_path):
    save_tiny_bert(tmp_path / "st")
    (tmp_path / "st" / "1_Pooling").mkdir()
    (tmp_path / "st" / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}
        )
    )
    (tmp_path / "st" / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    with pytest.raises(ValueError, match="exactly one"):
        SentenceEncoder.from_pretrained(tmp_path / "st")


def _simcse_reference(bert: BertModel, dense_w, dense_b, batch, use_mlp: bool):
    # SimCSE (Gao et al. 2021) cls pooler: CLS state of the last layer, then Linear + Tanh.
    cls = bert(**batch).last_hidden_state[:, 0]
    return torch.tanh(cls @ dense_w.T + dense_b) if use_mlp else cls


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_simcse_training_checkpoint(tmp_path, fmt):
    bert, tok = save_tiny_bert(tmp_path / "ref")
    folder = tmp_path / "simcse"
    folder.mkdir()
    torch.manual_seed(7)
    dense_w, dense_b = torch.randn(32, 32) * 0.1, torch.randn(32) * 0.1
    # The layout SimCSE's BertForCL saves: backbone under "bert.", the MLP under "mlp.dense.".
    state = {f"bert.{k}": v.clone().contiguous() for k, v in bert.state_dict().items()}
    state["mlp.dense.weight"], state["mlp.dense.bias"] = dense_w, dense_b
    cfg = bert.config.to_dict()
    cfg["architectures"] = ["BertForCL"]
    (folder / "config.json").write_text(json.dumps(cfg))
    tok.save_pretrained(folder)
    if fmt == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")

    model = SentenceEncoder.from_pretrained(folder)
    assert model.config.pooling == "cls" and model.config.projection_dim == 32
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert_same_embeddings(model.encode(TEXTS), _simcse_reference(bert, dense_w, dense_b, batch, True))

    unsup = SentenceEncoder.from_pretrained(folder, mlp_only_train=True)  # unsupervised SimCSE evaluation
    assert_same_embeddings(unsup.encode(TEXTS), _simcse_reference(bert, dense_w, dense_b, batch, False))

    unsup.save_pretrained(tmp_path / "ours")
    again = SentenceEncoder.from_pretrained(tmp_path / "ours")
    assert again.config.mlp_only_train is True
    assert_same_embeddings(again.encode(TEXTS), unsup.encode(TEXTS))


def test_missing_folder_and_remote_code_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        SentenceEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        SentenceEncoder.from_pretrained("./relative/missing/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a model folder"):
        SentenceEncoder.from_pretrained(empty)
    save_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match="remote code"):
        SentenceEncoder.from_pretrained(tmp_path / "bert", trust_remote_code=True)


def test_offline_hub_id_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="fetching it from the Hub failed"):
        SentenceEncoder.from_pretrained("hf-contrastive-tests/does-not-exist")
