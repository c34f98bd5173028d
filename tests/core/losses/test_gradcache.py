"""GradCache: the cached gradients equal the uncached loss's, for every kind of in-batch loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from datasets import Dataset
from distributed_run import run_two_processes
from tiny_models import WORDS, adam_weight_tolerance, bert_config, bert_tokenizer, summation_tolerance

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.core.losses import (
    CoSENTLoss,
    EmbeddingRegressionLoss,
    GradCache,
    InfoNCELoss,
    UnsupervisedSimCSELoss,
)
from hf_contrastive.core.losses.gradcache import split_features
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder


def sentences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(2, 10, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


# Cached and uncached passes sum the same terms in another order (per mini-batch vs whole batch, and the
# kernels pick their own blocking), so float32 results move by a few eps times the magnitudes involved on
# one machine and by more on another. The equality tests run in float64 and allow a bound derived from the
# magnitudes (`summation_tolerance`), far below any real mistake (a wrong gradient is off by > 1e-4).
DTYPE = torch.float64


def encoder(tok, dropout=0.1, seed=0, dtype=DTYPE):
    torch.manual_seed(seed)
    cfg = bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = dropout
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=cfg)).to(dtype)
    model.tokenizer = tok
    return model.train()


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def grad_tolerance(ref, feats):
    """Each weight's gradient sums one term per token of the batch: depth = tokens, scale = largest gradient."""
    dtype = next(iter(ref.values())).dtype
    scale = max(float(v.abs().max()) for v in ref.values())
    return summation_tolerance(dtype, scale, depth=feats["attention_mask"].numel())


def assert_grads_close(got, ref, feats):
    gap, allowed = max_diff(got, ref), grad_tolerance(ref, feats)
    assert gap <= allowed, f"max gradient gap {gap:.3g} > allowed {allowed:.3g}"


def assert_loss_close(got, want, feats):
    allowed = summation_tolerance(
        want.dtype, max(1.0, abs(float(want))), depth=feats["attention_mask"].numel()
    )
    assert abs(float(got) - float(want)) <= allowed, (float(got), float(want), allowed)


B = 6
# (loss, number of role blocks, extra loss inputs)
LOSSES = {
    "infonce_hard_negatives": (lambda: InfoNCELoss(hard_negative_weight=0.5, symmetric=True), 3),
    "infonce_learnable_scale": (lambda: InfoNCELoss(learnable_scale=True), 2),
    "simcse_unsup": (lambda: UnsupervisedSimCSELoss(), 2),
    "cosent": (lambda: CoSENTLoss(), 2),
    "regression": (lambda: EmbeddingRegressionLoss(), 2),
}


def batch(tok, blocks, seed=0):
    rows = []
    for b in range(blocks):
        rows += sentences(B, seed + b)
    return dict(tok(rows, padding=True, return_tensors="pt"))


def inputs_for(name, blocks):
    scores = torch.linspace(0.0, 1.0, B)

    def split(emb):
        parts = emb.split(B)
        if name == "cosent":
            return (parts[0], parts[1], scores), {}
        if name == "regression":
            return (parts[0], parts[1]), {"scores": scores}
        if blocks == 3:
            return (parts[0], parts[1], parts[2][:, None]), {}
        return (parts[0], parts[1]), {}

    return split


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("split", [{"mini_batch_size": 4}, {"token_budget": 40}])
def test_gradients_equal_uncached_loss_with_dropout(tok, name, split):
    make, blocks = LOSSES[name]
    feats = batch(tok, blocks)
    loss_inputs = inputs_for(name, blocks)

    # Reference: the uncached loss, embedding the same mini-batches with graph, same seed.
    ref_model, ref_loss = encoder(tok), make()
    torch.manual_seed(123)
    chunks = split_features(feats, **split)
    assert len(chunks) > 1
    emb = torch.cat([ref_model(**c).embeddings for _, c in chunks])
    order = torch.cat([rows for rows, _ in chunks])
    emb = emb[torch.argsort(order)]
    args, kwargs = loss_inputs(emb)
    expected = ref_loss(*args, **kwargs).loss
    expected.backward()
    after_ref = torch.rand(1)

    model, loss = encoder(tok), make()
    cached = GradCache(loss, **split)
    torch.manual_seed(123)
    out = cached.backward(lambda f: model(**f).embeddings, feats, loss_inputs)
    assert torch.rand(1) == after_ref  # the random stream continues as after one forward
    assert out.loss.dtype == torch.float64
    assert_loss_close(out.loss, expected.detach(), feats)
    assert_grads_close(grads(model), grads(ref_model), feats)
    if any(p.requires_grad for p in loss.parameters()):
        want = ref_loss.log_scale.grad
        allowed = summation_tolerance(want.dtype, max(1.0, float(want.abs().max())), depth=4 * B * B)
        assert float((loss.log_scale.grad - want).abs().max()) <= allowed

    # Control: without replaying the random state the masks differ, and so do the gradients.
    model2 = encoder(tok)
    torch.manual_seed(123)
    cached2 = GradCache(make(), **split)
    cached2.backward(
        lambda f: model2(**f).embeddings,
        feats,
        loss_inputs,
        encode_no_grad=lambda f: (torch.rand(1), model2(**f).embeddings)[1],
    )
    assert max_diff(grads(model2), grads(ref_model)) > 1e-4


def test_equals_one_full_batch_forward_without_dropout(tok):
    feats = batch(tok, 3)
    ref_model = encoder(tok, dropout=0.0)
    emb = ref_model(**feats).embeddings.split(B)
    InfoNCELoss(hard_negative_weight=0.3)(emb[0], emb[1], emb[2][:, None]).loss.backward()
    for split in ({"mini_batch_size": 1}, {"mini_batch_size": 5}, {"token_budget": 25}):
        model = encoder(tok, dropout=0.0)
        GradCache(InfoNCELoss(hard_negative_weight=0.3), **split).backward(
            lambda f, m=model: m(**f).embeddings, feats, roles=3
        )
        assert_grads_close(grads(model), grads(ref_model), feats)


def test_split_features_by_count_and_budget(tok):
    feats = batch(tok, 2)
    lengths = feats["attention_mask"].sum(1)
    by_count = split_features(feats, mini_batch_size=5)
    assert [len(r) for r, _ in by_count] == [5, 5, 2]
    for rows, chunk in by_count:  # trimmed to their own longest row, same tokens
        assert chunk["input_ids"].shape[1] == int(lengths[rows].max())
        assert torch.equal(chunk["input_ids"], feats["input_ids"][rows, : chunk["input_ids"].shape[1]])
    budget = 30
    by_budget = split_features(feats, token_budget=budget)
    rows = torch.cat([r for r, _ in by_budget])
    assert sorted(rows.tolist()) == list(range(2 * B))
    for r, chunk in by_budget:
        assert chunk["input_ids"].numel() <= budget
        assert r.tolist() == sorted(r.tolist())  # role order kept inside a mini-batch
    with pytest.raises(ValueError, match="token_budget=3 is smaller than the longest row"):
        split_features(feats, token_budget=3)


def test_bad_input(tok, tmp_path):
    with pytest.raises(ValueError, match="exactly one of mini_batch_size and token_budget"):
        GradCache(InfoNCELoss())
    with pytest.raises(ValueError, match="exactly one of mini_batch_size and token_budget"):
        GradCache(InfoNCELoss(), mini_batch_size=2, token_budget=10)
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        GradCache(InfoNCELoss(), mini_batch_size=0)
    with pytest.raises(TypeError, match="nn.Module"):
        GradCache(lambda a, b: a, mini_batch_size=2)
    with pytest.raises(ValueError, match=r"gradcache_mini_batch_size=16 is larger than the batch .*=8"):
        ContrastiveConfig(
            output_dir=str(tmp_path), per_device_train_batch_size=8, gradcache_mini_batch_size=16
        )
    with pytest.raises(ValueError, match="not both"):
        ContrastiveConfig(output_dir=str(tmp_path), gradcache_mini_batch_size=4, gradcache_token_budget=64)


def _train(tok, tmp_path, name, **extra):
    ds = Dataset.from_dict(
        {"anchor": sentences(32, 11), "positive": sentences(32, 12), "negative": sentences(32, 13)}
    )
    model = encoder(tok, dropout=0.0)
    args = ContrastiveConfig(
        output_dir=str(tmp_path / name),
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        hard_negative_weight=0.2,
        **extra,
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return trainer, state


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_gradcache_matches_plain_training(tok, tmp_path, accumulation):
    plain, w_plain = _train(tok, tmp_path, "plain", gradient_accumulation_steps=accumulation)
    cached, w_cached = _train(
        tok, tmp_path, "cached", gradient_accumulation_steps=accumulation, gradcache_mini_batch_size=3
    )
    budget, w_budget = _train(
        tok, tmp_path, "budget", gradient_accumulation_steps=accumulation, gradcache_token_budget=40
    )
    assert isinstance(cached.loss_fn, GradCache) and isinstance(cached.loss_fn.loss, InfoNCELoss)
    start = encoder(tok, dropout=0.0).state_dict()
    moved = max(float((w_plain[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3
    # per step: gradients agree to the summation bound; Adam turns a gradient gap into a bounded weight gap
    ref_model = encoder(tok, dropout=0.0)
    feats = dict(
        ref_model.tokenizer(
            sentences(32, 11)[:8] + sentences(32, 12)[:8] + sentences(32, 13)[:8],
            padding=True,
            return_tensors="pt",
        )
    )
    emb = ref_model(**feats).embeddings.split(8)
    InfoNCELoss(hard_negative_weight=0.2)(emb[0], emb[1], emb[2][:, None]).loss.backward()
    grad_gap = grad_tolerance(grads(ref_model), feats)
    args = plain.args
    allowed = adam_weight_tolerance(grad_gap, args.learning_rate, args.max_steps, args.adam_epsilon)
    assert allowed < 1e-2 * moved  # the bound is far below the training's own movement
    for other in (w_cached, w_budget):
        gap = max(float((w_plain[k] - other[k]).abs().max()) for k in start)
        assert gap <= allowed, f"weight gap {gap:.3g} > allowed {allowed:.3g}"
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (plain, cached, budget)]
    assert len(losses[0]) == 3
    loss_gap = summation_tolerance(DTYPE, max(1.0, *losses[0]), depth=feats["attention_mask"].numel())
    assert losses[1] == pytest.approx(losses[0], abs=loss_gap)
    assert losses[2] == pytest.approx(losses[0], abs=loss_gap)
    assert any("acc" in h for h in cached.state.log_history)  # loss components still logged


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
)
def test_two_processes(tmp_path):
    out = tmp_path / "results.json"
    run_two_processes(Path(__file__).with_name("gradcache_worker.py"), out, tmp_path)
    r = json.loads(out.read_text())
    ddp = r["ddp"]
    # GradCache on two processes == one process, uncached, whole batch (cross-device negatives gathered)
    assert ddp["cached_grad_keys"] == ddp["ref_grad_keys"]
    grad_gap = summation_tolerance(torch.float64, ddp["grad_max_abs"], depth=ddp["tokens"])
    assert ddp["cached_grad_max_abs_diff"] <= grad_gap
    assert ddp["cached_loss_abs_diff"] <= summation_tolerance(
        torch.float64, max(1.0, abs(ddp["ref_loss"])), depth=ddp["tokens"]
    )
    # one gradient all-reduce per step, as many as a plain DDP backward
    assert ddp["cached_allreduce_calls"] == ddp["plain_allreduce_calls"] >= 1
    tr = r["trainer"]
    assert tr["world"] == 2 and tr["weights_moved"] > 1e-4
    allowed = adam_weight_tolerance(grad_gap, tr["learning_rate"], tr["optimizer_steps"], tr["adam_epsilon"])
    assert allowed < 1e-2 * tr["weights_moved"]
    assert tr["weights_max_abs_diff"] <= allowed
    # momentum contrast under DDP: every rank enqueues the gathered keys (3 steps x 2 ranks x 4 rows)
    moco = r["moco"]
    assert moco["queue_ptr"] == 3 * 2 * 4  # (queue of 32)
    assert moco["queue_rank_diff"] == 0.0 and moco["key_encoder_rank_diff"] == 0.0
