"""Mixture-of-experts sentence encoder (Hallee et al. 2024): conversion from a dense encoder, routing by domain,
saving and loading, training with a domain column, and F1 at the best cosine threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from card_checks import check_card, run_snippets
from datasets import Dataset
from tiny_models import TEXTS, WORDS, bert_config, summation_tolerance, tiny_llama
from transformers import AutoModel, DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model

from hf_contrastive import (
    ContrastiveConfig,
    ContrastiveTrainer,
    GradCache,
    SentenceEncoder,
    SentenceEncoderConfig,
)
from hf_contrastive.core.data.collator import length_buckets
from hf_contrastive.embeddings.moe import (
    DomainPair,
    DomainPairEvaluator,
    ExpertRouter,
    MoESentenceEncoder,
    MoESentenceEncoderConfig,
    RoutedLinear,
    best_f1_threshold,
    domain_pair_splits,
    evaluate_domain_pairs,
    f1_at_threshold,
    positive_pairs,
)
from hf_contrastive.embeddings.moe.recipes import MOE_TASK
from hf_contrastive.recipes import load_recipe, register_recipe_task

DOMAINS = ["news", "bio", "law"]


def dense_encoder(tok, seed=0, dropout=0.1, dtype=torch.float32, **head):
    torch.manual_seed(seed)
    cfg = bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = dropout
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=cfg, **head)).to(dtype)
    model.tokenizer = tok
    return model.eval()


def batch(tok, texts=TEXTS):
    return dict(tok(list(texts), padding=True, return_tensors="pt"))


def sentences(n, seed, lo=2, hi=9):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def perturb(model, domain, seed=1, size=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in model.expert_modules(domain):
            linear.weight.add_(
                size * torch.randn(linear.weight.shape, generator=g, dtype=linear.weight.dtype)
            )


# -- conversion: exactly the dense model until trained ------------------------------------------------------


def test_one_expert_equals_the_dense_model_exactly(bert_tok):
    dense = dense_encoder(bert_tok, normalize=True)
    moe = MoESentenceEncoder.from_dense(dense, ["only"])
    assert sum(isinstance(m, RoutedLinear) for m in moe.modules()) == 2 * 2  # two MLP linears x two layers
    feats = batch(bert_tok)
    with torch.no_grad():
        ref = dense(**feats).embeddings
        assert torch.equal(moe(**feats).embeddings, ref)  # a single expert needs no domain
        assert torch.equal(moe(**feats, domain_ids=torch.zeros(len(TEXTS), dtype=torch.long)).embeddings, ref)
    assert torch.equal(moe.encode(TEXTS), dense.encode(TEXTS))
    # training mode: same dropout masks from the same seed, same embeddings
    dense.train(), moe.train()
    torch.manual_seed(5)
    train_ref = dense(**feats).embeddings
    torch.manual_seed(5)
    assert torch.equal(moe(**feats).embeddings, train_ref)
    # the dense model is left as it was: no expert modules in it
    assert not any(isinstance(m, RoutedLinear) for m in dense.modules())


def test_equal_experts_give_the_dense_output_for_every_domain(bert_tok):
    dense = dense_encoder(bert_tok, dtype=torch.float64)
    moe = MoESentenceEncoder.from_dense(dense, DOMAINS)
    assert moe.config.num_experts == 3 and moe.config.domain2id == {"news": 0, "bio": 1, "law": 2}
    feats = batch(bert_tok)
    with torch.no_grad():
        ref = dense(**feats).embeddings
        for name, index in moe.config.domain2id.items():
            ids = torch.full((len(TEXTS),), index)
            assert torch.equal(moe(**feats, domain_ids=ids).embeddings, ref), name
            assert torch.equal(moe(**feats, domain_ids=name).embeddings, ref), name
        # rows of mixed domains are gathered per expert: the same sums, possibly in another order
        mixed = moe(**feats, domain_ids=torch.tensor([0, 1, 2, 2, 1, 0])).embeddings
    tokens = int(feats["attention_mask"].sum())
    assert float((mixed - ref).abs().max()) <= summation_tolerance(
        torch.float64, float(ref.abs().max()), tokens
    )


def test_perturbing_one_expert_changes_only_its_domain_rows(bert_tok):
    moe = MoESentenceEncoder.from_dense(dense_encoder(bert_tok), DOMAINS)
    feats = batch(bert_tok)
    ids = torch.tensor([0, 1, 2, 1, 0, 2])
    with torch.no_grad():
        before = moe(**feats, domain_ids=ids).embeddings
        perturb(moe, "bio")
        after = moe(**feats, domain_ids=ids).embeddings
    changed = (after - before).abs().amax(dim=1)
    assert torch.equal(after[ids != 1], before[ids != 1])
    assert bool((changed[ids == 1] > 1e-3).all())
    assert len(moe.expert_modules("bio")) == 4 and all(
        m not in moe.expert_modules("news") for m in moe.expert_modules("bio")
    )


def test_routed_linear_matches_row_by_row_reference():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).double()
    router = ExpertRouter(3)
    layer = RoutedLinear(base, 3, router)
    for expert in layer.experts:
        torch.nn.init.normal_(expert.weight)
    x = torch.randn(7, 4, 6, dtype=torch.float64)
    ids = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    with torch.no_grad(), router.routing(ids):
        out = layer(x)
    with torch.no_grad():
        ref = torch.stack([layer.experts[int(d)](x[i]) for i, d in enumerate(ids)])
    assert float((out - ref).abs().max()) <= summation_tolerance(torch.float64, float(ref.abs().max()), 6)
    with router.routing(ids), pytest.raises(ValueError, match="one domain per row"):
        layer(x[:3])
    with pytest.raises(RuntimeError, match="no routing"):
        layer(x)


def test_moe_layers_converts_only_the_named_layers(bert_tok):
    moe = MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["a", "b"], moe_layers=[1])
    layers = moe.backbone.encoder.layer
    assert isinstance(layers[1].intermediate.dense, RoutedLinear)
    assert not isinstance(layers[0].intermediate.dense, RoutedLinear)
    assert "1 of 2" in moe.card_details()["expert_layers"]
    with pytest.raises(ValueError, match=r"moe_layers \[5\] are out of range: the backbone has 2 layers"):
        MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["a", "b"], moe_layers=[0, 5])


def test_distilbert_and_llama_layouts_and_unknown_layouts_refused(bert_tok):
    feats = batch(bert_tok)
    torch.manual_seed(0)
    distil = DistilBertModel(
        DistilBertConfig(vocab_size=len(bert_tok), dim=32, hidden_dim=48, n_layers=2, n_heads=4)
    )
    llama = tiny_llama()
    for backbone, pooling in ((distil, "mean"), (llama, "last_token")):
        dense = SentenceEncoder(
            SentenceEncoderConfig(backbone_config=backbone.config, pooling=pooling), backbone=backbone
        )
        dense.eval()
        moe = MoESentenceEncoder.from_dense(dense, ["a", "b"])
        ids = {k: v for k, v in feats.items() if k != "token_type_ids"}
        with torch.no_grad():
            ref = dense(**ids).embeddings
            assert torch.equal(
                moe(**ids, domain_ids=torch.ones(len(TEXTS), dtype=torch.long)).embeddings, ref
            )
    assert moe.expert_layout.name == "llama" and len(moe.expert_modules("b")) == 3 * 2
    gpt2 = GPT2Model(GPT2Config(vocab_size=80, n_embd=32, n_layer=2, n_head=4))
    dense = SentenceEncoder(
        SentenceEncoderConfig(backbone_config=gpt2.config, pooling="last_token"), backbone=gpt2
    )
    with pytest.raises(ValueError, match="Cannot split the MLPs of a 'gpt2' backbone"):
        MoESentenceEncoder.from_dense(dense, ["a", "b"])
    with pytest.raises(ValueError, match="already a mixture-of-experts"):
        MoESentenceEncoder.from_dense(moe, ["a", "b"])


# -- saving and loading ---------------------------------------------------------------------------------------


def test_from_pretrained_round_trip_with_card(bert_tok, tmp_path):
    moe = MoESentenceEncoder.from_dense(
        dense_encoder(bert_tok, normalize=True, max_seq_length=32), ["news", "bio"], default_domain="bio"
    )
    perturb(moe, "news")
    folder = tmp_path / "moe"
    moe.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "contrastive_moe_sentence_encoder"
    assert config["domain2id"] == {"news": 0, "bio": 1} and config["num_experts"] == 2
    feats = batch(bert_tok)
    ids = torch.tensor([0, 1, 1, 0, 0, 1])
    with torch.no_grad():
        ref = moe(**feats, domain_ids=ids).embeddings
    for loaded in (MoESentenceEncoder.from_pretrained(folder), AutoModel.from_pretrained(folder)):
        assert type(loaded) is MoESentenceEncoder
        assert loaded.config.domain2id == {"news": 0, "bio": 1} and loaded.config.id2domain == {
            0: "news",
            1: "bio",
        }
        assert (
            loaded.config.default_domain == "bio"
            and loaded.config.normalize
            and loaded.config.max_seq_length == 32
        )
        assert loaded.state_dict().keys() == moe.state_dict().keys()
        assert all(torch.equal(v, moe.state_dict()[k]) for k, v in loaded.state_dict().items())
        with torch.no_grad():
            assert torch.equal(loaded(**feats, domain_ids=ids).embeddings, ref)
            assert torch.equal(loaded(**feats).embeddings, moe(**feats, domain_ids="bio").embeddings)
    # head settings may be overridden at load time, the experts' shape may not
    assert MoESentenceEncoder.from_pretrained(folder, normalize=False).config.normalize is False
    with pytest.raises(ValueError, match="shape the saved experts"):
        MoESentenceEncoder.from_pretrained(folder, num_experts=3)
    with pytest.raises(ValueError, match="default_domain 'chem' is not one of the domains"):
        MoESentenceEncoder.from_pretrained(folder, default_domain="chem")
    # the card lists the domains, and its snippets load the folder and embed as the model does
    card = check_card(folder, base_model=None, pipeline_tag="sentence-similarity")
    assert (
        "| `news` | 0 |" in card.text and "| `bio` | 1 |" in card.text and "2 per converted MLP" in card.text
    )
    first, second = run_snippets(folder)
    assert torch.equal(first["embeddings"], moe.encode(first["sentences"], domain="news"))
    assert torch.allclose(second["embeddings"], moe(**second["batch"], domain_ids=0).embeddings)
    # a dense folder is not loaded as a mixture of experts
    dense_folder = tmp_path / "dense"
    dense_encoder(bert_tok).save_pretrained(dense_folder)
    with pytest.raises(ValueError, match=r"holds no mixture-of-experts encoder .*from_dense"):
        MoESentenceEncoder.from_pretrained(dense_folder)


# -- bad input --------------------------------------------------------------------------------------------------


def test_bad_domains_are_refused_with_the_known_domains(bert_tok):
    moe = MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["news", "bio"])
    feats = batch(bert_tok)
    known = r"'news' \(id 0\), 'bio' \(id 1\)"
    with pytest.raises(ValueError, match=rf"domain_ids holds \[2\], outside this model's experts: .*{known}"):
        moe(**feats, domain_ids=torch.tensor([0, 1, 2, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"domain_ids holds \[-1\]"):
        moe(**feats, domain_ids=torch.tensor([0, 1, -1, 0, 0, 0]))
    with pytest.raises(ValueError, match=rf"names no domain: pass domain_ids .*{known}"):
        moe(**feats)
    with pytest.raises(ValueError, match=rf"Unknown domain 'chem': .*{known}"):
        moe.encode(TEXTS, domain="chem")
    with pytest.raises(ValueError, match="expected shape \\(6,\\)"):
        moe(**feats, domain_ids=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer domain ids"):
        moe(**feats, domain_ids=torch.zeros(6))
    with pytest.raises(ValueError, match="Got 2 domains for 6 texts"):
        moe.encode(TEXTS, domain=["news", "bio"])
    with pytest.raises(ValueError, match="own expert, numbered 0..1"):
        MoESentenceEncoderConfig(backbone_config=bert_config(), domain2id={"a": 0, "b": 2})
    with pytest.raises(ValueError, match="num_experts=3 but domain2id names 2"):
        MoESentenceEncoderConfig(backbone_config=bert_config(), num_experts=3, domain2id={"a": 0, "b": 1})
    with pytest.raises(ValueError, match="distinct"):
        MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["a", "a"])
    # a default domain makes calls without one valid; per-text domains route each text
    moe.config.default_domain = "bio"
    assert torch.equal(moe.encode(TEXTS), moe.encode(TEXTS, domain=1))
    perturb(moe, "news")
    mixed = moe.encode(TEXTS, domain=["news", "bio"] * 3)
    assert torch.equal(mixed[0::2], moe.encode(TEXTS[0::2], domain="news"))
    assert torch.equal(mixed[1::2], moe.encode(TEXTS[1::2], domain="bio"))


# -- training with a domain column ------------------------------------------------------------------------------


def trainer_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
        loss="mnrl",
        domain_column="domain",
    )
    base.update(kw)
    return ContrastiveConfig(**base)


@pytest.mark.slow
def test_training_one_domain_leaves_the_other_experts_untouched(bert_tok, tmp_path):
    moe = MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["news", "bio"])
    start = {k: v.clone() for k, v in moe.state_dict().items()}
    ds = Dataset.from_dict(
        {"anchor": sentences(12, 1), "positive": sentences(12, 2), "domain": ["news"] * 12}
    )
    ContrastiveTrainer(model=moe, args=trainer_args(tmp_path), train_dataset=ds).train()
    end = moe.state_dict()
    moved = {k for k in start if not torch.equal(start[k], end[k])}
    assert moved and all(".experts.1." not in k for k in moved)
    assert any(".experts.0." in k for k in moved) and any("attention" in k for k in moved)
    bad = Dataset.from_dict({"anchor": sentences(4, 3), "positive": sentences(4, 4), "domain": ["chem"] * 4})
    trainer = ContrastiveTrainer(model=moe, args=trainer_args(tmp_path), train_dataset=bad)
    with pytest.raises(ValueError, match=r"domain='chem', which is not in the label map \['bio', 'news'\]"):
        trainer.data_collator([bad[i] for i in range(4)])
    with pytest.raises(ValueError, match="domain_column='domain' needs a model whose config has a domain2id"):
        ContrastiveTrainer(model=dense_encoder(bert_tok), args=trainer_args(tmp_path), train_dataset=ds)


@pytest.mark.slow
def test_trainer_loss_and_gradients_route_rows_under_buckets_and_gradcache(bert_tok, tmp_path):
    # float64, no dropout: the plain, length-bucketed and GradCache paths compute the same sums
    moe = MoESentenceEncoder.from_dense(
        dense_encoder(bert_tok, dropout=0.0, dtype=torch.float64), ["news", "bio"]
    )
    perturb(moe, "bio", size=0.5)  # experts differ, so a row sent to the wrong expert changes the loss
    n = 32
    domains = [
        "news" if b else "bio" for b in torch.randint(2, (n,), generator=torch.Generator().manual_seed(3))
    ]
    ds = Dataset.from_dict(
        {"anchor": sentences(n, 4, 12, 30), "positive": sentences(n, 5, 2, 6), "domain": domains}
    )
    trainer = ContrastiveTrainer(
        model=moe, args=trainer_args(tmp_path, per_device_train_batch_size=n), train_dataset=ds
    )
    collated = dict(trainer.data_collator([ds[i] for i in range(n)]))
    ids = torch.tensor([moe.config.domain2id[d] for d in domains])
    assert torch.equal(collated["domain_ids"], torch.cat([ids, ids]))
    assert len(length_buckets(collated)) == 2  # 64 rows of two lengths: two groups, each mixing domains

    # the loss by hand: MNRL (cross-entropy over cosine x 20) on anchors and positives embedded with their domain
    with torch.no_grad():
        a = moe(**batch(bert_tok, ds["anchor"]), domain_ids=ids).embeddings
        p = moe(**batch(bert_tok, ds["positive"]), domain_ids=ids).embeddings
        ref = F.cross_entropy(20.0 * F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T, torch.arange(n))
    depth = int(collated["attention_mask"].sum())
    with torch.no_grad():  # the routing matters: every row through the first expert gives another loss
        unrouted = trainer.compute_loss(moe, {**collated, "domain_ids": torch.zeros(2 * n, dtype=torch.long)})
    assert abs(float(unrouted) - float(ref)) > 1e-3
    grads = []
    for bucketed in (True, False):
        trainer.args.length_bucketed_forward = bucketed
        moe.zero_grad()
        loss = trainer.compute_loss(moe, dict(collated))
        assert abs(float(loss.detach()) - float(ref)) <= summation_tolerance(
            torch.float64, max(1.0, float(ref)), depth
        )
        loss.backward()
        grads.append({k: q.grad.clone() for k, q in moe.named_parameters() if q.grad is not None})
    cached = ContrastiveTrainer(
        model=moe,
        args=trainer_args(tmp_path, per_device_train_batch_size=n, gradcache_mini_batch_size=16),
        train_dataset=ds,
    )
    assert isinstance(cached.loss_fn, GradCache)
    cached.current_gradient_accumulation_steps = 1
    moe.zero_grad()
    cached_loss = cached.training_step(moe, dict(collated))
    grads.append({k: q.grad.clone() for k, q in moe.named_parameters() if q.grad is not None})
    moe.eval()
    assert abs(float(cached_loss) - float(ref)) <= summation_tolerance(
        torch.float64, max(1.0, float(ref)), depth
    )
    assert any(".experts.1." in k for k in grads[0]) and any(".experts.0." in k for k in grads[0])
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for k, g in grads[0].items():
            allowed = summation_tolerance(torch.float64, max(1.0, float(g.abs().max())), depth)
            assert float((other[k] - g).abs().max()) <= allowed, k


# -- F1 at the best threshold ------------------------------------------------------------------------------------


def brute_force_best_f1(scores, labels):
    best = 0.0
    for t in sorted(set(scores.tolist())):
        called = scores >= t
        tp = int((called & (labels == 1)).sum())
        best = max(best, 2 * tp / (int(called.sum()) + int(labels.sum())))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_search_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = np.round(rng.uniform(-1, 1, n), 1)  # rounded: many ties, which must not be split
    labels = (rng.uniform(size=n) < 0.2 + 0.6 * (scores + 1) / 2).astype(int)
    labels[int(rng.integers(n))] = 1
    threshold, f1 = best_f1_threshold(scores, labels)
    assert math.isclose(f1, brute_force_best_f1(scores, labels), rel_tol=0, abs_tol=1e-12)
    assert math.isclose(f1_at_threshold(scores, labels, threshold).f1, f1, rel_tol=0, abs_tol=1e-12)


def test_threshold_figures_by_hand_and_bad_scores():
    scores, labels = [0.9, 0.8, 0.8, 0.3, 0.1], [1, 0, 1, 1, 0]
    threshold, f1 = best_f1_threshold(scores, labels)
    # cuts: {0.9} F1 2/4, {0.9, 0.8, 0.8} 4/6, {.., 0.3} 6/7, all 6/8 -> 0.3 wins, threshold halfway to 0.1
    assert f1 == pytest.approx(6 / 7, abs=1e-15) and threshold == pytest.approx(0.2, abs=1e-15)
    at = f1_at_threshold(scores, labels, 0.5)
    assert (at.precision, at.recall, at.accuracy) == pytest.approx((2 / 3, 2 / 3, 0.6), abs=1e-15)
    with pytest.raises(ValueError, match="at least one pair labelled 1"):
        best_f1_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        best_f1_threshold([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        best_f1_threshold([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="0 \\(no match\\) or 1"):
        best_f1_threshold([0.1, 0.2], [1, 2])


def test_evaluate_domain_pairs_chooses_thresholds_on_dev(bert_tok):
    moe = MoESentenceEncoder.from_dense(dense_encoder(bert_tok), ["news", "bio"])
    perturb(moe, "bio", size=0.5)
    texts = sentences(16, 7)
    rng = np.random.default_rng(0)

    def pairs(offset):
        return [
            DomainPair(
                texts[i],
                texts[(i + offset) % 16],
                int(rng.integers(2)) or int(i % 5 == 0),
                ("news", "bio")[i % 2],
            )
            for i in range(16)
        ]

    dev, test = pairs(1), pairs(3)
    results = evaluate_domain_pairs(moe, dev, test, batch_size=5)
    assert set(results) == {"news", "bio", "all"}

    def cosines(split):
        # each side of each domain embedded in one call, independently of the evaluation's own batching
        out = np.zeros(len(split))
        for domain in ("news", "bio"):
            rows = [i for i, p in enumerate(split) if p.domain == domain]
            a = moe.encode([split[i].sentence1 for i in rows], domain=domain).double()
            b = moe.encode([split[i].sentence2 for i in rows], domain=domain).double()
            out[rows] = F.cosine_similarity(a, b, dim=-1).numpy()
        return out

    dev_s, test_s = cosines(dev), cosines(test)
    for name in ("news", "bio", "all"):
        on_dev = np.array([name in ("all", p.domain) for p in dev])
        on_test = np.array([name in ("all", p.domain) for p in test])
        dev_y, test_y = np.array([p.label for p in dev]), np.array([p.label for p in test])
        threshold, dev_f1 = best_f1_threshold(dev_s[on_dev], dev_y[on_dev])
        expected = f1_at_threshold(test_s[on_test], test_y[on_test], threshold)
        # embeddings of float32 forwards batched differently: compare the thresholds loosely, the counts exactly
        assert results[name].threshold == pytest.approx(threshold, abs=1e-5)
        assert results[name].f1 == pytest.approx(expected.f1, abs=1e-12)
        assert results[name].dev_f1 == pytest.approx(dev_f1, abs=1e-12)
        assert results[name].pairs == int(on_test.sum())
    figures = DomainPairEvaluator(dev, name="dev")(moe)
    assert figures["dev_f1_all"] == pytest.approx(results["all"].dev_f1, abs=1e-12)
    with pytest.raises(ValueError, match=r"no pairs of domain\(s\) \['law'\]"):
        evaluate_domain_pairs(moe, dev, test, domains=["news", "law"])


# -- the benchmark split and the recipe ---------------------------------------------------------------------------


def test_two_domain_split_from_the_benchmark_data(shared_data):
    splits = domain_pair_splits(shared_data)
    counts = {
        split: {d: sum(p.domain == d for p in pairs) for d in ("paraphrase", "sts")}
        for split, pairs in splits.items()
    }
    # the test splits are whole: MRPC's 1725 pairs, STS-B's 1379 less the 507 scored between 2 and 4
    assert counts["test"] == {"paraphrase": 1725, "sts": 872}
    assert 0 < counts["dev"]["paraphrase"] <= 500 and 0 < counts["train"]["paraphrase"] <= 3576
    sts_dev = [p for p in splits["dev"] if p.domain == "sts"]
    assert all(p.label in (0, 1) for p in sts_dev) and sum(p.label for p in sts_dev) > 0
    # no text pair (either order, either domain) is in two splits
    keys = {s: {tuple(sorted((p.sentence1, p.sentence2))) for p in pairs} for s, pairs in splits.items()}
    assert (
        not keys["train"] & keys["dev"]
        and not keys["train"] & keys["test"]
        and not keys["dev"] & keys["test"]
    )
    train = positive_pairs(splits["train"])
    assert len(train) == sum(p.label for p in splits["train"]) and set(train["domain"]) == {
        "paraphrase",
        "sts",
    }


@pytest.mark.slow
def test_moe_recipe_runs_and_refuses_unknown_keys(bert_tok, tmp_path):
    register_recipe_task(MOE_TASK, replace=True)
    recipe = load_recipe("moe-embeddings")
    assert recipe["task"] == "moe" and recipe["model"]["domains"] == ["paraphrase", "sts"]
    assert recipe["args"]["learning_rate"] == 1e-4 and recipe["method"]["loss"] == "mnrl"
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['experts'\] in the model section"):
        load_recipe("moe-embeddings", ["--model.experts", "3"])

    dense = dense_encoder(bert_tok)
    dense.save_pretrained(tmp_path / "dense")
    rows = [
        {"sentence1": a, "sentence2": b, "label": i % 2, "domain": ("news", "bio")[i % 3 == 0]}
        for i, (a, b) in enumerate(zip(sentences(16, 8), sentences(16, 9)))
    ]
    for name, data in (("dev", rows[:8]), ("test", rows[8:])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in data))
    train = [{"anchor": r["sentence1"], "positive": r["sentence2"], "domain": r["domain"]} for r in rows]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in train))
    files = lambda name: {"type": "files", "format": "json", "path": str(tmp_path / f"{name}.jsonl")}  # noqa: E731
    result = MOE_TASK.runner(
        MOE_TASK.check(
            {
                "model": {"name_or_path": str(tmp_path / "dense"), "domains": ["news", "bio"]},
                "data": {"train": files("train"), "eval_dev": files("dev"), "eval_test": files("test")},
                "args": {
                    "output_dir": str(tmp_path / "run"),
                    "max_steps": 2,
                    "per_device_train_batch_size": 4,
                },
            }
        )
    )
    assert set(result["before"]) == set(result["after"]) == {"news", "bio", "all"}
    saved = MoESentenceEncoder.from_pretrained(result["output"])
    assert saved.config.domains == ["news", "bio"]
    assert "F1 at the dev-chosen cosine threshold" in (tmp_path / "run" / "final" / "README.md").read_text()
