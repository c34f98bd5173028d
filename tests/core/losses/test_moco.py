"""Momentum contrast: EMA key encoder, queue(s) of past keys, CCP options, exact resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.core.losses import MomentumContrastLoss
from hf_contrastive.core.momentum import MomentumEncoder
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder


def sentences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def encoder(tmp_path, seed=0):
    torch.manual_seed(seed)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    return model


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        loss="moco",
        per_device_train_batch_size=4,
        queue_size=12,
        momentum=0.9,
        max_steps=6,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    base.update(kw)
    return ContrastiveConfig(**base)


def test_ema_update_by_hand():
    torch.manual_seed(0)
    q = torch.nn.Linear(3, 2)
    key = MomentumEncoder(q, momentum=0.75)
    before = key.encoder.weight.detach().clone()
    with torch.no_grad():
        q.weight.add_(1.0)
    key.update(q)
    torch.testing.assert_close(key.encoder.weight, 0.75 * before + 0.25 * q.weight.detach())
    assert int(key.num_updates) == 1 and not key.encoder.weight.requires_grad
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        MomentumEncoder(q, momentum=1.0)


def test_loss_and_queues_by_hand():
    torch.manual_seed(0)
    loss = MomentumContrastLoss(dim=4, queue_size=5, temperature=0.1, num_queues=2, seed=3)
    queue = loss.queue.clone()
    q, k = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    ids = torch.tensor([1, 0, 1])
    out = loss(q, k, ids)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    ref = 0.0
    for i in range(3):  # each query against its key and the queue of its own language
        logits = torch.cat([(qn[i] * kn[i]).sum()[None], queue[ids[i]] @ qn[i]]) / 0.1
        ref = ref - torch.log_softmax(logits, 0)[0] / 3
    torch.testing.assert_close(out.loss, ref)
    out.loss.backward()
    assert q.grad is not None
    # enqueue: keys go to their language's queue, oldest first, wrapping around
    loss.enqueue(k, ids)
    torch.testing.assert_close(loss.queue[1, :2], kn[[0, 2]])
    torch.testing.assert_close(loss.queue[0, :1], kn[[1]])
    torch.testing.assert_close(loss.queue[0, 1:], queue[0, 1:])
    assert loss.queue_ptr.tolist() == [1, 2]
    more = torch.randn(5, 4)
    loss.enqueue(more, torch.ones(5, dtype=torch.long))
    assert loss.queue_ptr.tolist() == [1, 2]  # 2 + 5 wraps to 2
    torch.testing.assert_close(loss.queue[1, [2, 3, 4, 0, 1]], F.normalize(more, dim=-1))
    with pytest.raises(ValueError, match="pass queue_ids"):
        loss(q, k)
    with pytest.raises(ValueError, match=r"queue_ids must lie in \[0, 2\)"):
        loss(q, k, torch.tensor([0, 2, 1]))


def test_query_batch_norm_is_asymmetric():
    loss = MomentumContrastLoss(dim=4, queue_size=4, query_batch_norm=True)
    assert sum(p.numel() for p in loss.parameters()) == 8  # BN weight + bias, query side only
    q, k = torch.randn(6, 4) * 5 + 3, torch.randn(6, 4)
    loss.train()
    out = loss(q, k)
    qn = F.normalize(F.batch_norm(q, None, None, training=True), dim=-1)
    logits = torch.cat([(qn * F.normalize(k, dim=-1)).sum(1, keepdim=True), qn @ loss.queue[0].T], 1) * 20
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)))


def test_trainer_moves_key_encoder_and_fills_queue(tmp_path):
    ds = Dataset.from_dict({"anchor": sentences(24, 1), "positive": sentences(24, 2)})
    model = encoder(tmp_path)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = ContrastiveTrainer(model=model, args=config(tmp_path), train_dataset=ds)
    assert isinstance(trainer.loss_fn, MomentumContrastLoss)
    initial_queue = trainer.loss_fn.queue.clone()
    trainer.train()
    assert int(trainer.key_encoder.num_updates) == 5  # before steps 1..5 (none before the first)
    assert int(trainer.loss_fn.queue_ptr[0]) == (6 * 4) % 12
    assert not torch.equal(trainer.loss_fn.queue, initial_queue)
    key = trainer.key_encoder.encoder.state_dict()
    now = model.state_dict()
    name = "backbone.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(key[name], start[name]) and not torch.equal(key[name], now[name])
    logs = [h for h in trainer.state.log_history if "moco" in h]
    assert len(logs) == 6 and all(0.0 <= h["acc"] <= 1.0 for h in logs)


def test_bad_input(tmp_path):
    with pytest.raises(
        ValueError, match=r"queue_size=10 must be a positive multiple of the global batch .*= 4"
    ):
        config(tmp_path, queue_size=10)
    with pytest.raises(ValueError, match="need both language_column and languages"):
        config(tmp_path, language_column="lang")
    with pytest.raises(ValueError, match="does not combine with GradCache"):
        config(tmp_path, gradcache_mini_batch_size=2)
    triples = Dataset.from_dict({"anchor": ["a"] * 4, "positive": ["b"] * 4, "negative": ["c"] * 4})
    with pytest.raises(ValueError, match="takes its negatives from the queue"):
        ContrastiveTrainer(model=encoder(tmp_path), args=config(tmp_path), train_dataset=triples)
    pairs = Dataset.from_dict(
        {"anchor": sentences(8, 3), "positive": sentences(8, 4), "lang": ["en"] * 4 + ["xx"] * 4}
    )
    trainer = ContrastiveTrainer(
        model=encoder(tmp_path),
        args=config(tmp_path, language_column="lang", languages=["en", "de"]),
        train_dataset=pairs,
    )
    with pytest.raises(ValueError, match=r"language 'xx', not among languages=\['en', 'de'\]"):
        trainer.data_collator([pairs[i] for i in range(8)])


class _StopAt:
    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda args, state, control, **kw: self._maybe_stop(state, control)
        raise AttributeError(name)

    def _maybe_stop(self, state, control):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_is_bit_exact(tmp_path):
    """CCP settings (two language queues, query batch norm): model, key encoder, queues, BN all restored."""
    langs = ["en", "de"]
    ds = Dataset.from_dict(
        {
            "anchor": sentences(40, 6),
            "positive": sentences(40, 7),
            "lang": [langs[i % 3 == 0] for i in range(40)],
        }
    )
    kw = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=3,
        language_column="lang",
        languages=langs,
        query_batch_norm=True,
    )

    def state(trainer):
        out = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
        out.update({f"key.{k}": v.clone() for k, v in trainer.key_encoder.state_dict().items()})
        out.update({f"loss.{k}": v.clone() for k, v in trainer.loss_fn.state_dict().items()})
        return out

    full = ContrastiveTrainer(model=encoder(tmp_path), args=config(tmp_path / "a", **kw), train_dataset=ds)
    full.train()
    part = ContrastiveTrainer(model=encoder(tmp_path), args=config(tmp_path / "b", **kw), train_dataset=ds)
    part.add_callback(_StopAt(3))
    part.train()
    resumed = ContrastiveTrainer(
        model=encoder(tmp_path, seed=123), args=config(tmp_path / "b", **kw), train_dataset=ds
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-3"))
    a, b = state(full), state(resumed)
    assert a.keys() == b.keys() and any(k.startswith("loss.bn.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # control: a resume that lost the queue and key encoder would differ
    assert int(b["loss.queue_ptr"].sum()) > 0 and not torch.equal(
        a["key.encoder.backbone.embeddings.word_embeddings.weight"],
        encoder(tmp_path).state_dict()["backbone.embeddings.word_embeddings.weight"],
    )
