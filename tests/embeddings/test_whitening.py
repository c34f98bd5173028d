"""Shuffled group whitening and WhitenedCSE: the whitening itself, its gradient, the loss, the head settings,
the trainer (with and without GradCache) and the recipe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer, summation_tolerance
from transformers import AutoModel

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.core.losses import GradCache
from hf_contrastive.core.recipes import build_args
from hf_contrastive.embeddings.recipes import ContrastiveMethod
from hf_contrastive.embeddings.whitening import (
    ShuffledGroupWhitening,
    WhitenedCSELoss,
    group_whiten,
    zca_whitening_matrix,
)
from hf_contrastive.recipes import RECIPE_TASKS, load_recipe

F64 = torch.float64


def correlated(rows, width, seed=0):
    """Rows with correlated channels of different scales (float64)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g, dtype=F64) * torch.linspace(0.2, 3.0, width, dtype=F64)
    return torch.randn(rows, width, generator=g, dtype=F64) @ mixing + 0.7


def reference_whiten(x, group_size, eps, permutation):
    """Group ZCA written out channel by channel: group k holds the channels permutation[k*g:(k+1)*g]."""
    rows, width = x.shape
    centred = x - x.mean(dim=0)
    out = torch.empty_like(x)
    for k in range(width // group_size):
        idx = permutation[k * group_size : (k + 1) * group_size]
        block = centred[:, idx]
        lam, vec = torch.linalg.eigh(block.T @ block / rows)
        out[:, idx] = block @ (vec @ torch.diag((lam + eps) ** -0.5) @ vec.T)
    return out


def sentences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(
            WORDS[i]
            for i in torch.randint(len(WORDS), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g)
        )
        for _ in range(n)
    ]


def encoder(tmp_path, seed=0, dropout=0.1, **head):
    torch.manual_seed(seed)
    tok = bert_tokenizer(tmp_path / "vocab")
    cfg = bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = dropout
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=cfg, **head))
    model.tokenizer = tok
    return model


def args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=12,
        max_steps=3,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
        loss="whitenedcse",
    )
    base.update(kw)
    return ContrastiveConfig(**base)


# -- the whitening ---------------------------------------------------------------------------------------------
def test_gradient_through_the_whitening_matches_finite_differences():
    x = correlated(10, 6).requires_grad_(True)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    assert torch.autograd.gradcheck(lambda t: group_whiten(t, 3, 1e-3, perm), (x,))
    assert torch.autograd.gradcheck(lambda t: group_whiten(t, 6, 1e-3), (x,))  # one group: the whole matrix
    # Equal eigenvalues (where the eigenvector gradient divides by zero): finite, and the hand derivative
    # of W = (c + eps)^(-1/2) I, which is -(c + eps)^(-3/2) / 2 times the symmetric part of the upstream grad.
    c, eps = 0.8, 1e-3
    cov = (c * torch.eye(4, dtype=F64)).requires_grad_(True)
    upstream = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    (zca_whitening_matrix(cov, eps) * upstream).sum().backward()
    expected = -0.5 * (c + eps) ** -1.5 * 0.5 * (upstream + upstream.T)
    assert torch.allclose(cov.grad, expected, rtol=0, atol=summation_tolerance(F64, 1.0, 16))


def test_whitened_groups_have_identity_covariance_up_to_eps():
    rows, width, g, eps = 40, 12, 4, 1e-4
    x = correlated(rows, width, seed=2)
    perm = torch.randperm(width, generator=torch.Generator().manual_seed(3))
    y = group_whiten(x, g, eps, perm)
    centred_in, centred_out = x - x.mean(0), y - y.mean(0)
    assert centred_out.mean(0).abs().max() < summation_tolerance(F64, 10.0, rows)
    for k in range(width // g):
        idx = perm[k * g : (k + 1) * g]
        lam = torch.linalg.eigvalsh(centred_in[:, idx].T @ centred_in[:, idx] / rows)
        cov_out = centred_out[:, idx].T @ centred_out[:, idx] / rows
        # exactly U diag(l / (l + eps)) U^T: off the identity by at most eps / (l_min + eps) in any entry
        rounding = summation_tolerance(F64, float((lam.max() + eps) / (lam.min() + eps)), rows)
        gap = float((cov_out - torch.eye(g, dtype=F64)).abs().max())
        assert gap <= float(eps / (lam.min() + eps)) + rounding
        assert float(lam.min()) > 100 * eps  # (so the bound is a tight check, not a loose one)
    # channels of different groups stay correlated: the whitening is per group
    full = centred_out.T @ centred_out / rows
    assert float((full - torch.eye(width, dtype=F64)).abs().max()) > 0.05


def test_zca_matrix_is_the_symmetric_inverse_square_root_closest_to_identity():
    x = correlated(30, 5, seed=4)
    centred = x - x.mean(0)
    cov, eps = centred.T @ centred / 30, 1e-6
    w = zca_whitening_matrix(cov, eps)
    tol = summation_tolerance(F64, float(torch.linalg.cond(cov)), 30)
    assert torch.allclose(w, w.T, rtol=0, atol=tol)  # ZCA: symmetric
    assert torch.linalg.eigvalsh(w).min() > 0  # positive definite
    assert torch.allclose(w @ (cov + eps * torch.eye(5, dtype=F64)) @ w, torch.eye(5, dtype=F64), atol=tol)
    # Any whitening is W Q with Q orthogonal; ZCA moves the (whitened) data least from where it was.
    zca_shift = float((centred @ w - centred).norm())
    for seed in range(5):
        q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(seed)))
        assert zca_shift < float((centred @ w @ q - centred).norm())


def test_channel_order_is_restored_per_channel():
    rows, width, g, eps = 16, 8, 4, 1e-5
    x = correlated(rows, width, seed=5)
    for seed in range(3):
        perm = torch.randperm(width, generator=torch.Generator().manual_seed(seed))
        got = group_whiten(x, g, eps, perm)
        ref = reference_whiten(x, g, eps, perm)
        for c in range(width):  # channel c of the output is the whitened channel c, for every grouping
            assert torch.allclose(got[:, c], ref[:, c], rtol=0, atol=summation_tolerance(F64, 10.0, rows)), c
    # Uncorrelated channels (exactly diagonal sample covariance): whitening any grouping is standardising each
    # channel, so every permutation gives the same output, channel by channel.
    basis, _ = torch.linalg.qr(
        torch.cat([torch.ones(rows, 1, dtype=F64), torch.randn(rows, width, dtype=F64)], 1)
    )
    scales = torch.arange(1.0, width + 1, dtype=F64)
    x = basis[:, 1:] * scales + 3.0  # zero-mean orthogonal columns, then a shift
    standardised = (x - x.mean(0)) / ((x - x.mean(0)).pow(2).mean(0) + eps).sqrt()
    for seed in range(3):
        perm = torch.randperm(width, generator=torch.Generator().manual_seed(10 + seed))
        assert torch.allclose(group_whiten(x, g, eps, perm), standardised, rtol=0, atol=1e-12)


def test_each_call_and_each_view_draws_its_own_permutation():
    x = correlated(20, 8, seed=6)
    module = ShuffledGroupWhitening(4, eps=1e-5)
    torch.manual_seed(0)
    first, second = module(x), module(x)
    assert (first - second).abs().max() > 1e-3  # another grouping, another whitening
    torch.manual_seed(0)
    assert torch.equal(module(x), first)  # replayed by the seed
    fixed = ShuffledGroupWhitening(4, eps=1e-5, shuffle=False)
    assert torch.equal(fixed(x), fixed(x))
    assert torch.equal(fixed(x), group_whiten(x, 4, 1e-5, torch.arange(8)))


def test_loss_is_the_sum_of_ce_terms_on_whitened_views():
    batch, width, g, eps, tau = 10, 8, 4, 1e-5, 0.05
    views = [correlated(batch, width, seed=s) for s in (7, 8, 9)]
    loss_fn = WhitenedCSELoss(group_size=g, eps=eps, temperature=tau)
    torch.manual_seed(123)
    out = loss_fn(*views)
    torch.manual_seed(123)  # the loss draws one permutation per view, in view order
    perms = [torch.randperm(width) for _ in views]
    assert len({tuple(p.tolist()) for p in perms}) == 3  # the three views are whitened differently

    def ce(a, b):
        a = reference_whiten(a[0], g, eps, a[1])
        b = reference_whiten(b[0], g, eps, b[1])
        logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
        return -(logits.diag() - logits.logsumexp(dim=1)).mean()

    pairs = list(zip(views, perms))
    expected = ce(pairs[0], pairs[1]) + ce(pairs[0], pairs[2])
    tol = summation_tolerance(F64, float(expected) + 1 / tau, batch * width)
    assert abs(float(out.loss) - float(expected)) <= tol
    assert abs(float(out.components["infonce_1_2"]) - float(ce(pairs[0], pairs[1]))) <= tol
    assert float(loss_fn(*views, permutations=perms).loss) == pytest.approx(float(out.loss), abs=tol)
    # gradients reach every view, through the whitening
    leaves = [v.clone().requires_grad_(True) for v in views]
    loss_fn(*leaves, permutations=perms).loss.backward()
    assert all(float(v.grad.abs().sum()) > 0 for v in leaves)
    assert loss_fn.config_dict()["num_views"] == 3 and "zhuo2023" in loss_fn.citation


# -- the head ----------------------------------------------------------------------------------------------------
def test_inference_whitens_only_when_asked(tmp_path, bert_tok):
    plain = encoder(tmp_path, whitening_group_size=8).eval()
    asked = encoder(tmp_path, whitening_group_size=8, whitening_at_inference=True).eval()
    asked.load_state_dict(plain.state_dict())
    feats = bert_tok(sentences(12, 1), padding=True, return_tensors="pt")
    with torch.no_grad():
        raw = plain(**feats).embeddings
        white = asked(**feats).embeddings
        bare = encoder(tmp_path).eval()
        bare.load_state_dict(plain.state_dict())
        assert torch.equal(raw, bare(**feats).embeddings)  # a group size alone changes nothing at inference
    # consecutive groups of 8 of the 32 channels, no shuffling (the whitening itself is checked in float64 above)
    assert torch.equal(white, group_whiten(raw, 8, plain.config.whitening_eps))
    assert not torch.allclose(white, raw, atol=1e-2)
    asked.train()  # in training the loss whitens, not forward
    plain.train()
    torch.manual_seed(0)
    a = asked(**feats).embeddings
    torch.manual_seed(0)
    assert torch.equal(a, plain(**feats).embeddings)
    with pytest.raises(ValueError, match="at least 9 rows"):
        asked.eval()(**bert_tok(sentences(8, 2), padding=True, return_tensors="pt"))


def test_settings_round_trip_and_reach_the_card(tmp_path, bert_tok):
    model = encoder(
        tmp_path,
        pooling="cls",
        projection_dim=16,
        mlp_only_train=True,
        whitening_group_size=8,
        whitening_eps=3e-4,
        whitening_at_inference=True,
    ).eval()
    model.save_pretrained(tmp_path / "saved")
    for loaded in (
        SentenceEncoder.from_pretrained(tmp_path / "saved"),
        AutoModel.from_pretrained(tmp_path / "saved"),
    ):
        cfg = loaded.config
        assert (cfg.whitening_group_size, cfg.whitening_eps, cfg.whitening_at_inference) == (8, 3e-4, True)
        assert isinstance(loaded.whitening, ShuffledGroupWhitening) and not loaded.whitening.shuffle
        feats = bert_tok(sentences(10, 3), padding=True, return_tensors="pt")
        with torch.no_grad():
            assert torch.equal(loaded.eval()(**feats).embeddings, model(**feats).embeddings)
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "| whitening | shuffled group whitening" in card and "groups of 8 channels" in card
    encoder(tmp_path / "other").save_pretrained(tmp_path / "none")
    assert "| whitening |" not in (tmp_path / "none" / "README.md").read_text()


def test_bad_settings_and_inputs_are_refused(tmp_path):
    cfg = bert_config(80)  # hidden size 32
    with pytest.raises(ValueError, match="does not divide the 32 channels of the training embeddings"):
        SentenceEncoderConfig(backbone_config=cfg, whitening_group_size=5)
    with pytest.raises(ValueError, match="does not divide the 24 channels"):
        SentenceEncoderConfig(backbone_config=cfg, projection_dim=24, whitening_group_size=16)
    # projection used in training only: 12 divides the 24 training channels; at inference there are 32
    SentenceEncoderConfig(
        backbone_config=cfg, projection_dim=24, mlp_only_train=True, whitening_group_size=12
    )
    with pytest.raises(ValueError, match="32 channels of the inference embeddings"):
        SentenceEncoderConfig(
            backbone_config=cfg,
            projection_dim=24,
            mlp_only_train=True,
            whitening_group_size=12,
            whitening_at_inference=True,
        )
    with pytest.raises(ValueError, match="needs whitening_group_size"):
        SentenceEncoderConfig(backbone_config=cfg, whitening_at_inference=True)
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="whitening_group_size must be a positive integer"):
            SentenceEncoderConfig(backbone_config=cfg, whitening_group_size=bad)
    with pytest.raises(ValueError, match="whitening_eps must be a finite number > 0"):
        SentenceEncoderConfig(backbone_config=cfg, whitening_group_size=8, whitening_eps=0.0)

    x = correlated(8, 12)
    with pytest.raises(ValueError, match="at least 5 rows"):
        group_whiten(x[:4], 4)
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        group_whiten(x, 5)
    with pytest.raises(ValueError, match="permutation must be"):
        group_whiten(x, 4, permutation=torch.tensor([0] * 12))
    loss_fn = WhitenedCSELoss(group_size=4)
    with pytest.raises(ValueError, match="expected 3 views"):
        loss_fn(x, x)
    with pytest.raises(ValueError, match="non-finite"):
        loss_fn(x, x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="num_views must be an integer >= 2"):
        WhitenedCSELoss(group_size=4, num_views=1)

    ds = Dataset.from_dict({"text": sentences(24)})
    whitened = encoder(tmp_path, whitening_group_size=16)
    with pytest.raises(ValueError, match="needs more than 16 rows per batch"):
        ContrastiveTrainer(
            model=whitened, args=args(tmp_path, per_device_train_batch_size=16), train_dataset=ds
        )
    with pytest.raises(ValueError, match="sets no whitening_group_size"):
        ContrastiveTrainer(model=encoder(tmp_path), args=args(tmp_path), train_dataset=ds)
    with pytest.raises(ValueError, match="num_views must be an integer >= 2"):
        args(tmp_path, num_views=1)
    with pytest.raises(ValueError, match="num_views=3 is not used by UnsupervisedSimCSELoss"):
        ContrastiveTrainer(
            model=encoder(tmp_path), args=args(tmp_path, loss="simcse_unsup", num_views=3), train_dataset=ds
        )


# -- training ----------------------------------------------------------------------------------------------------
def test_trainer_runs_whitenedcse_with_three_views(tmp_path):
    model = encoder(tmp_path, whitening_group_size=8)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ds = Dataset.from_dict({"text": sentences(26, 4)})  # 12 + 12 + a 2-row tail, merged into the batch before
    trainer = ContrastiveTrainer(model=model, args=args(tmp_path, max_steps=2), train_dataset=ds)
    assert isinstance(trainer.loss_fn, WhitenedCSELoss) and trainer.loss_fn.num_views == 3
    rows = []
    handle = model.backbone.register_forward_hook(lambda m, i, o: rows.append(o.last_hidden_state.shape[0]))
    trainer.train()
    handle.remove()
    assert rows and all(r % 3 == 0 and r // 3 > 8 for r in rows)  # three views of batches of > 8 rows
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert all("infonce_1_2" in h and "infonce_1_3" in h for h in logs)
    assert max(float((model.state_dict()[k] - v).abs().max()) for k, v in start.items()) > 1e-4
    four = ContrastiveTrainer(model=model, args=args(tmp_path, num_views=4), train_dataset=ds)
    assert four.loss_fn.num_views == 4 and four._num_views() == 4


def test_gradcache_gives_the_plain_loss_and_gradients(tmp_path):
    ds = Dataset.from_dict({"text": sentences(12, 5)})
    results = []
    for extra in ({}, {"gradcache_mini_batch_size": 5}):
        model = encoder(tmp_path, dropout=0.0, whitening_group_size=8).to(F64)
        trainer = ContrastiveTrainer(model=model, args=args(tmp_path, **extra), train_dataset=ds)
        batch = trainer.data_collator([ds[i] for i in range(12)])
        trainer.current_gradient_accumulation_steps = 1  # (set by the training loop)
        model.train()
        model.zero_grad()
        torch.manual_seed(7)  # the same channel permutations in both runs
        loss = trainer.training_step(model, batch)
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((trainer, float(loss), grads))
    (plain, loss_plain, g_plain), (cached, loss_cached, g_cached) = results
    assert isinstance(cached.loss_fn, GradCache) and isinstance(cached.loss_fn.loss, WhitenedCSELoss)
    depth = 3 * 12 * 16  # rows x tokens behind each sum
    assert loss_cached == pytest.approx(loss_plain, abs=summation_tolerance(F64, max(1.0, loss_plain), depth))
    assert g_plain.keys() == g_cached.keys() and g_plain
    scale = max(float(g.abs().max()) for g in g_plain.values())
    for name, g in g_plain.items():
        gap = float((g - g_cached[name]).abs().max())
        assert gap <= summation_tolerance(F64, scale, depth), name


# -- the recipe --------------------------------------------------------------------------------------------------
def test_recipe_loads_with_the_paper_settings():
    recipe = load_recipe("whitenedcse")
    assert recipe["task"] == "contrastive"
    method = RECIPE_TASKS["contrastive"].read_method(recipe)
    assert isinstance(method, ContrastiveMethod)
    assert (method.loss, method.temperature, method.num_views) == ("whitenedcse", 0.05, 3)
    config = build_args(ContrastiveConfig, {**recipe["args"], "output_dir": "unused"}, method=method)
    assert (config.loss, config.num_views, config.learning_rate) == ("whitenedcse", 3, 1e-5)
    model = recipe["model"]
    assert model["projection_dim"] % model["whitening_group_size"] == 0
    assert config.per_device_train_batch_size > model["whitening_group_size"]
    assert ContrastiveMethod().num_views is None and ContrastiveConfig(output_dir="unused").num_views is None
