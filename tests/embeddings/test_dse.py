"""Distilled Sentence Embedding on tiny random models: pooling and head against hand computations, the loss
formula, the teacher-logits cache (round trip, refused keys, atomic writes), save/load, the fast candidate
scoring, a short DSETrainer run and the `dse` recipe."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from card_checks import check_card, run_snippets
from datasets import ClassLabel, Dataset
from tiny_models import TEXTS, WORDS, bert_config, save_tiny_bert, summation_tolerance
from transformers import AutoModel, BertForSequenceClassification, BertModel

from hf_contrastive.core.boundary import CorruptFileError
from hf_contrastive.core.recipes import read_method
from hf_contrastive.embeddings import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.embeddings.dse import (
    DistilledPairScorer,
    DSEConfig,
    DSELoss,
    DSETrainer,
    DSETrainingArguments,
    TeacherCacheMismatchError,
    cached_teacher_logits,
    compute_teacher_logits,
    evaluate_pair_scores,
    load_teacher,
    load_teacher_cache,
    model_fingerprint,
    pair_features,
    teacher_cache_key,
)
from hf_contrastive.embeddings.dse import cache as cache_module
from hf_contrastive.embeddings.dse.recipes import RECIPE_TASK, DSEMethod
from hf_contrastive.recipes import RECIPE_TASKS, load_recipe, register_recipe_task, run_recipe
from hf_contrastive.retrieval.rerankers import CrossEncoderReranker, CrossEncoderRerankerConfig

LAYERS = 5  # one more than the 4 pooled layers, so that "the top 4" is not "all of them"


def scorer(tok, seed=0, **kw) -> DistilledPairScorer:
    torch.manual_seed(seed)
    settings = {"classifier_hidden_size": 16, "max_seq_length": 32, **kw}
    model = DistilledPairScorer(DSEConfig(backbone_config=bert_config(len(tok), layers=LAYERS), **settings))
    model.tokenizer = tok
    return model.eval()


def sentences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(2, 8, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=g).tolist()))
    return out


def seq_teacher(tok, seed=1, num_labels=1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = bert_config(len(tok))
    cfg.num_labels = num_labels
    return BertForSequenceClassification(cfg).eval()


# -- the student's computation --------------------------------------------------------------------------


def test_top4_mean_pooling_equals_a_hand_computation(bert_tok):
    model = scorer(bert_tok).double()
    texts = ["a man is eating food .", "dog runs", "the woman plays guitar in the big green park"]
    got = model.encode(texts)  # one padded batch
    assert got.shape == (3, 4 * 32) and got.dtype == torch.float64
    for i, text in enumerate(texts):
        ids = bert_tok(text, return_tensors="pt")  # alone: no padding at all
        with torch.no_grad():
            states = model.backbone(**ids, output_hidden_states=True).hidden_states
        assert len(states) == LAYERS + 1
        n = ids["input_ids"].shape[1]
        parts = []
        for layer in (LAYERS - 3, LAYERS - 2, LAYERS - 1, LAYERS):  # the top 4, lowest first
            total = torch.zeros(32, dtype=torch.float64)
            for t in range(n):
                total += states[layer][0, t]
            parts.append(total / n)
        expected = torch.cat(parts)
        tol = summation_tolerance(torch.float64, float(expected.abs().max()), depth=64)
        torch.testing.assert_close(got[i], expected, rtol=0, atol=tol)


def test_pair_features_and_head_equal_a_hand_computation(bert_tok):
    model = scorer(bert_tok).double()
    torch.manual_seed(5)
    u, v = torch.randn(3, 128, dtype=torch.float64), torch.randn(3, 128, dtype=torch.float64)
    feats = pair_features(u, v)
    assert torch.equal(feats[:, :128], u) and torch.equal(feats[:, 128:256], v)
    assert torch.equal(feats[:, 256:384], u * v) and torch.equal(feats[:, 384:], (u - v).abs())
    w1, b1 = model.head.dense.weight, model.head.dense.bias
    w2, b2 = model.head.out_proj.weight, model.head.out_proj.bias
    assert w1.shape == (16, 512) and w2.shape == (1, 16)
    expected = []
    for r in range(3):
        f = torch.cat([u[r], v[r], u[r] * v[r], (u[r] - v[r]).abs()])
        hidden = [max(0.0, float(w1[j].detach() @ f + b1[j])) for j in range(16)]
        expected.append(sum(hidden[j] * float(w2[0, j]) for j in range(16)) + float(b2[0]))
    with torch.no_grad():
        got = model.score_embeddings(u, v)
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    # forward on tokenised sides is the head on the two encodings
    a, b = TEXTS[:3], TEXTS[3:6]
    ta, tb = bert_tok(a, padding=True, return_tensors="pt"), bert_tok(b, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids_a=ta["input_ids"],
            attention_mask_a=ta["attention_mask"],
            input_ids_b=tb["input_ids"],
            attention_mask_b=tb["attention_mask"],
        )
    torch.testing.assert_close(out.logits, model.score_pairs(a, b), rtol=0, atol=1e-12)


def test_config_checks_and_label_counts():
    cfg = bert_config(40, layers=LAYERS)
    assert DSEConfig(backbone_config=cfg).num_labels == 1
    assert DSEConfig(backbone_config=cfg, task="classification").num_labels == 2
    assert DSEConfig(backbone_config=cfg, task="classification", num_labels=3).num_labels == 3
    assert DSEConfig(backbone_config=cfg).embedding_dim == 4 * 32
    with pytest.raises(ValueError, match="num_top_layers=6 exceeds the backbone's 5"):
        DSEConfig(backbone_config=cfg, num_top_layers=6)
    with pytest.raises(ValueError, match="num_labels must be 1"):
        DSEConfig(backbone_config=cfg, num_labels=2)
    with pytest.raises(ValueError, match="task must be one of"):
        DSEConfig(backbone_config=cfg, task="ranking")


# -- the objective --------------------------------------------------------------------------------------


def test_dse_loss_equals_the_formula_by_hand():
    student, teacher, gold = [0.2, 0.9, -0.4], [0.5, 0.1, -0.2], [0.3, 1.0, 0.0]
    out = DSELoss(distill_weight=0.5)(
        torch.tensor(student, dtype=torch.float64),
        torch.tensor(teacher, dtype=torch.float64),
        torch.tensor(gold, dtype=torch.float64),
    )
    task = sum((s - g) ** 2 for s, g in zip(student, gold)) / 3
    distill = sum((s - t) ** 2 for s, t in zip(student, teacher)) / 3
    assert math.isclose(float(out.loss), 0.5 * task + 0.5 * distill, rel_tol=1e-12)
    assert math.isclose(float(out.components["task_loss"]), task, rel_tol=1e-12)
    assert math.isclose(float(out.components["distill_loss"]), distill, rel_tol=1e-12)

    logits = [[1.0, -0.5, 0.2], [0.1, 0.3, 2.0]]
    t_logits = [[0.4, 0.0, 0.1], [-1.0, 0.5, 1.5]]
    labels = [0, 2]
    ce = sum(math.log(sum(math.exp(x) for x in row)) - row[y] for row, y in zip(logits, labels)) / 2
    sq = (
        sum(sum((a - b) ** 2 for a, b in zip(r, s)) for r, s in zip(logits, t_logits)) / 2
    )  # summed over classes
    out = DSELoss(distill_weight=0.3, task="classification")(
        torch.tensor(logits, dtype=torch.float64),
        torch.tensor(t_logits, dtype=torch.float64),
        torch.tensor(labels),
    )
    assert math.isclose(float(out.loss), 0.7 * ce + 0.3 * sq, rel_tol=1e-12)
    assert DSELoss().distill_weight == 0.5 and "Barkan" in DSELoss.citation


def test_dse_loss_refuses_bad_inputs():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        DSELoss(distill_weight=1.5)
    with pytest.raises(ValueError, match="teacher's logits have shape"):
        DSELoss()(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        DSELoss()(torch.zeros(2), torch.tensor([0.0, float("nan")]), torch.zeros(2))


# -- fast scoring and loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("task, labels", [("regression", 1), ("classification", 3)])
def test_score_candidates_equals_score_pairs(bert_tok, task, labels):
    model = scorer(bert_tok, task=task, num_labels=labels).double()
    candidates = sentences(37, seed=2)
    query = "a man is eating food ."
    cached = model.encode(candidates, batch_size=8)
    fast = model.score_candidates(query, cached, batch_size=10)
    slow = model.score_pairs([query] * len(candidates), candidates)
    assert fast.shape == slow.shape == ((37,) if labels == 1 else (37, labels))
    tol = summation_tolerance(torch.float64, float(slow.abs().max()) + 1.0, depth=512)
    torch.testing.assert_close(fast, slow, rtol=0, atol=tol)
    torch.testing.assert_close(model.score_candidates(model.encode(query), cached), fast, rtol=0, atol=tol)
    with pytest.raises(ValueError, match=r"shape \[num_candidates, 128\]"):
        model.score_candidates(query, cached[:, :10])


def test_save_and_from_pretrained_round_trip_equal_scores(bert_tok, tmp_path):
    model = scorer(bert_tok, task="classification", num_labels=3, num_top_layers=2, classifier_hidden_size=8)
    folder = tmp_path / "dse"
    model.save_pretrained(folder)
    again = DistilledPairScorer.from_pretrained(folder)
    auto = AutoModel.from_pretrained(folder)
    assert isinstance(auto, DistilledPairScorer)
    for name in ("num_top_layers", "classifier_hidden_size", "task", "num_labels", "max_seq_length"):
        assert getattr(again.config, name) == getattr(model.config, name), name
    a, b = TEXTS, TEXTS[::-1]
    assert torch.equal(again.score_pairs(a, b), model.score_pairs(a, b))
    card = check_card(folder, None, "sentence-similarity")
    assert "Barkan" in card.text and "top 2 layers" in card.text
    ours, plain = run_snippets(folder)
    assert torch.equal(ours["scores"], model.score_pairs(ours["queries"], ours["candidates"]))
    torch.testing.assert_close(
        ours["fast"], model.score_pairs([ours["queries"][0]] * 2, ours["candidates"]), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        plain["logits"], model.score_pairs(TEXTS[:1], ["a man is eating a piece of bread."])
    )


def test_from_backbone_keeps_plain_and_sentence_encoder_weights(tmp_path, bert_tok):
    bert, _ = save_tiny_bert(tmp_path / "bert", seed=3)
    plain = DistilledPairScorer.from_backbone(tmp_path / "bert", num_top_layers=2, max_seq_length=32)
    for name, p in bert.state_dict().items():
        assert torch.equal(plain.backbone.state_dict()[name], p), name
    assert plain.tokenizer is not None and plain.config.num_top_layers == 2
    torch.manual_seed(4)
    enc = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(bert_tok), layers=LAYERS)))
    enc.tokenizer = bert_tok
    enc.save_pretrained(tmp_path / "enc")
    student = DistilledPairScorer.from_backbone(tmp_path / "enc", max_seq_length=32)
    for name, p in enc.backbone.state_dict().items():
        assert torch.equal(student.backbone.state_dict()[name], p), name
    assert student.encode(TEXTS).shape == (len(TEXTS), 4 * 32)


# -- the teacher-logits cache ----------------------------------------------------------------------------


def test_teacher_cache_round_trip_and_refused_keys(bert_tok, tmp_path, monkeypatch):
    teacher = seq_teacher(bert_tok)
    a, b = sentences(9, seed=1), sentences(9, seed=2)
    path = tmp_path / "cache" / "train.safetensors"
    direct = compute_teacher_logits(teacher, a, b, bert_tok, max_length=32, batch_size=4)
    with torch.no_grad():  # one forward of the first pair, by hand
        first = teacher(**bert_tok(a[0], b[0], return_tensors="pt")).logits[0, 0]
    torch.testing.assert_close(direct[0], first, rtol=0, atol=1e-5)
    got = cached_teacher_logits(teacher, a, b, path, bert_tok, max_length=32, batch_size=4)
    assert torch.equal(got, direct) and got.shape == (9,) and path.is_file()

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cache must be read, not recomputed")

    monkeypatch.setattr(cache_module, "compute_teacher_logits", no_recompute)
    assert torch.equal(cached_teacher_logits(teacher, a, b, path, bert_tok, max_length=32), direct)
    # the same weights loaded from elsewhere are the same teacher
    teacher.save_pretrained(tmp_path / "teacher")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert torch.equal(cached_teacher_logits(reloaded, a, b, path, bert_tok, max_length=32), direct)

    with pytest.raises(TeacherCacheMismatchError, match=r"teacher \(cache"):
        cached_teacher_logits(seq_teacher(bert_tok, seed=2), a, b, path, bert_tok, max_length=32)
    with pytest.raises(TeacherCacheMismatchError, match=r"data \(cache: 9 pairs") as err:
        cached_teacher_logits(teacher, a, [*b[:-1], "cat sleeps"], path, bert_tok, max_length=32)
    assert "teacher (" not in str(err.value)
    with pytest.raises(TeacherCacheMismatchError, match=r"data \(cache: 9 pairs.*now: 8 pairs"):
        cached_teacher_logits(teacher, a[:8], b[:8], path, bert_tok, max_length=32)
    with pytest.raises(TeacherCacheMismatchError, match=r"max_length \(cache: 32, now: 16\)"):
        cached_teacher_logits(teacher, a, b, path, bert_tok, max_length=16)
    with pytest.raises(TeacherCacheMismatchError, match="data .*\n?.*"):
        cached_teacher_logits(teacher, b, a, path, bert_tok, max_length=32)  # same texts, other order


def test_teacher_cache_writes_are_atomic_and_corrupt_files_named(bert_tok, tmp_path, monkeypatch):
    teacher = seq_teacher(bert_tok)
    a, b = sentences(5, seed=3), sentences(5, seed=4)
    tmp_path = tmp_path / "caches"
    path = tmp_path / "t.safetensors"
    cached_teacher_logits(teacher, a, b, path, bert_tok, max_length=32)
    before = path.read_bytes()
    key = teacher_cache_key(teacher, a, b, bert_tok, 32)

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        cache_module.save_teacher_cache(path, torch.zeros(5), key)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # no temporary file left
    with pytest.raises(OSError, match="disk full"):
        cached_teacher_logits(teacher, a, b, tmp_path / "new.safetensors", bert_tok, max_length=32)
    assert not (tmp_path / "new.safetensors").exists()

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError, match="bad.safetensors"):
        load_teacher_cache(bad, key)


def test_callable_and_cross_encoder_reranker_teachers(bert_tok, tmp_path):
    a, b = sentences(6, seed=5), sentences(6, seed=6)

    with pytest.raises(ValueError, match="teacher_id"):
        cached_teacher_logits(overlap, a, b, tmp_path / "c.safetensors")
    got = cached_teacher_logits(overlap, a, b, tmp_path / "c.safetensors", teacher_id="overlap/v1")
    np.testing.assert_allclose(got.numpy(), overlap(a, b), rtol=0, atol=1e-7)
    with pytest.raises(TeacherCacheMismatchError, match="overlap/v2"):
        cached_teacher_logits(overlap, a, b, tmp_path / "c.safetensors", teacher_id="overlap/v2")

    torch.manual_seed(0)
    reranker = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(bert_tok)), max_seq_length=32)
    ).eval()
    reranker.tokenizer = bert_tok
    logits = cached_teacher_logits(reranker, a, b, tmp_path / "r.safetensors")
    raw = reranker.predict(list(zip(a, b)), activation=False)  # the logits, not the sigmoid
    torch.testing.assert_close(logits, raw, rtol=0, atol=1e-6)
    assert teacher_cache_key(reranker, a, b).max_length == 32
    with pytest.raises(ValueError, match="truncates pairs at its own 32 tokens"):
        cached_teacher_logits(reranker, a, b, tmp_path / "r.safetensors", max_length=16)


def test_load_teacher_reads_rerankers_and_classifiers_and_refuses_other_heads(bert_tok, tmp_path):
    torch.manual_seed(0)
    reranker = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(bert_tok)), max_seq_length=32)
    )
    reranker.tokenizer = bert_tok
    reranker.save_pretrained(tmp_path / "reranker")
    loaded, tok = load_teacher(tmp_path / "reranker")
    assert isinstance(loaded, CrossEncoderReranker) and loaded.tokenizer is not None
    assert model_fingerprint(loaded) == model_fingerprint(reranker)
    classifier = seq_teacher(bert_tok)
    classifier.save_pretrained(tmp_path / "classifier")
    bert_tok.save_pretrained(tmp_path / "classifier")
    loaded, tok = load_teacher(tmp_path / "classifier")
    assert isinstance(loaded, BertForSequenceClassification) and tok is not None
    assert model_fingerprint(loaded) == model_fingerprint(classifier)
    scorer(bert_tok).save_pretrained(tmp_path / "student")
    with pytest.raises(ValueError, match="does not score pairs"):
        load_teacher(tmp_path / "student")


# -- training ----------------------------------------------------------------------------------------------


def train_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=30,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        logging_steps=5,
        disable_tqdm=True,
        seed=0,
        warmup_steps=0,
    )
    return DSETrainingArguments(**{**base, **kw})


def overlap(xs, ys):
    """A stand-in teacher: the number of words two sentences share."""
    return [float(len(set(x.split()) & set(y.split()))) for x, y in zip(xs, ys)]


def scored_pairs(n=32, seed=0):
    a = sentences(n, seed=seed)
    b = [x if i % 3 == 0 else y for i, (x, y) in enumerate(zip(a, sentences(n, seed=seed + 100)))]
    return Dataset.from_dict({"sentence1": a, "sentence2": b, "score": [0.5 * s for s in overlap(a, b)]})


def dataset_loss(trainer, data):
    model, loss_fn = trainer.model.eval(), trainer.loss_fn
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    labels, teacher = batch.pop("labels"), batch.pop("teacher_logits")
    with torch.no_grad():
        return float(loss_fn(model(**batch).logits, teacher, labels).loss)


@pytest.mark.slow
def test_dse_trainer_run_lowers_the_loss_and_saves(bert_tok, tmp_path):
    data = scored_pairs()
    cache = tmp_path / "teacher.safetensors"
    trainer = DSETrainer(
        model=scorer(bert_tok),
        args=train_args(tmp_path, dataset_name="org/pairs"),
        train_dataset=data,
        eval_dataset=data,
        teacher=overlap,
        teacher_cache=cache,
        teacher_id="overlap/v1",
    )
    assert cache.is_file()
    with_logits = trainer.train_dataset
    assert with_logits["teacher_logits"] == overlap(data["sentence1"], data["sentence2"])
    before = dataset_loss(trainer, with_logits)
    trainer.train()
    after = dataset_loss(trainer, with_logits)
    assert after < 0.75 * before, (before, after)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and {"task_loss", "distill_loss"} <= set(logged[0])
    figures = trainer.evaluate()
    assert set(figures) == {"eval_spearman", "eval_pearson"} and figures["eval_spearman"] > 0.5
    folder = tmp_path / "final"
    trainer.save_scorer(folder)
    card = check_card(folder, None)
    assert "a = 0.5" in card.text and "org/pairs" in card.text
    loaded = DistilledPairScorer.from_pretrained(folder)
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    # same weights; trained parameters may sit in memory so that float32 kernels round the last bit differently
    expected = trainer.model.score_pairs(TEXTS, TEXTS)
    tol = summation_tolerance(torch.float32, float(expected.abs().max()) + 1.0, depth=512)
    torch.testing.assert_close(loaded.score_pairs(TEXTS, TEXTS), expected, rtol=0, atol=tol)


def test_dse_trainer_refuses_bad_input(bert_tok, tmp_path):
    data = scored_pairs(8)
    args = train_args(tmp_path)
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        DSETrainer(model=scorer(bert_tok), args=args, train_dataset=data)
    with pytest.raises(ValueError, match="teacher_cache="):
        DSETrainer(model=scorer(bert_tok), args=args, train_dataset=data, teacher=seq_teacher(bert_tok))
    with pytest.raises(ValueError, match="one teacher logit per pair"):
        DSETrainer(
            model=scorer(bert_tok),
            args=args,
            train_dataset=data,
            teacher=seq_teacher(bert_tok, num_labels=3),
            teacher_tokenizer=bert_tok,
            teacher_cache=tmp_path / "c3.safetensors",
        )
    classes = Dataset.from_dict(
        {"sentence1": TEXTS[:4], "sentence2": TEXTS[2:6], "label": [0, 1, 1, 0], "teacher_logits": [0.0] * 4}
    ).cast_column("label", ClassLabel(names=["no", "yes"]))
    with pytest.raises(ValueError, match="holds class labels"):
        DSETrainer(model=scorer(bert_tok), args=args, train_dataset=classes)
    out_of_range = Dataset.from_dict(
        {"sentence1": TEXTS[:2], "sentence2": TEXTS[2:4], "label": [0, 3], "teacher_logits": [[0.0, 0.0]] * 2}
    )
    with pytest.raises(ValueError, match="class ids 0..1"):
        DSETrainer(model=scorer(bert_tok, task="classification"), args=args, train_dataset=out_of_range)
    with pytest.raises(ValueError, match="empty train_dataset"):
        DSETrainer(model=scorer(bert_tok), args=args, train_dataset=data.select([]))
    with pytest.raises(ValueError, match=r"distill_weight must be a number in \[0, 1\]"):
        train_args(tmp_path, distill_weight=2.0)


def test_evaluate_pair_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.2], [0.0, 3.0]])
    # guesses 0, 1, 0, 1 against 0, 1, 1, 1: accuracy 3/4; class 1: tp 2, fp 0, fn 1 -> F1 = 4 / 5
    got = evaluate_pair_scores(logits, [0, 1, 1, 1], task="classification")
    assert got == {"accuracy": 0.75, "f1": 0.8}
    assert math.isclose(evaluate_pair_scores([0.1, 0.2, 0.3], [1.0, 3.0, 2.0])["spearman"], 0.5)


# -- the recipe task ---------------------------------------------------------------------------------------


@pytest.fixture
def dse_task():
    before = RECIPE_TASKS.get("dse")
    register_recipe_task(RECIPE_TASK, replace=True)
    yield RECIPE_TASK
    if before is None:
        RECIPE_TASKS.pop("dse", None)
    else:
        RECIPE_TASKS["dse"] = before


def test_packaged_dse_recipe_resolves(dse_task):
    recipe = load_recipe("dse")
    method = read_method(DSEMethod, recipe["method"])
    assert (
        method.distill_weight == 0.5 and method.num_top_layers == 4 and method.classifier_hidden_size == 512
    )
    assert recipe["data"]["train"] == {"type": "stsb", "split": "train", "normalise": True}
    assert "${" not in str(recipe)


@pytest.mark.slow
def test_dse_recipe_fine_tunes_a_teacher_and_distils(dse_task, tmp_path, bert_tok):
    save_tiny_bert(tmp_path / "bert", seed=0)
    BertModel(bert_config(len(bert_tok), layers=LAYERS)).save_pretrained(tmp_path / "student")
    bert_tok.save_pretrained(tmp_path / "student")
    scored_pairs(24, seed=1).to_json(tmp_path / "train.jsonl")
    scored_pairs(12, seed=2).to_json(tmp_path / "dev.jsonl")
    source = {"type": "files", "format": "json"}
    recipe = {
        "task": "dse",
        "model": {"name_or_path": str(tmp_path / "student"), "max_seq_length": 32},
        "data": {
            "train": {**source, "path": str(tmp_path / "train.jsonl")},
            "train_rows": 16,
            "eval": {**source, "path": str(tmp_path / "dev.jsonl")},
            "teacher_backbone": str(tmp_path / "bert"),
        },
        "method": {
            "classifier_hidden_size": 16,
            "teacher_epochs": 1,
            "teacher_batch_size": 8,
            "teacher_max_length": 32,
        },
        "args": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 3,
            "per_device_train_batch_size": 8,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    results = run_recipe(recipe)
    assert set(results["teacher"]) == set(results["student"]) == {"eval"}
    assert set(results["student"]["eval"]) == {"spearman", "pearson"}
    assert sorted(os.listdir(tmp_path / "run" / "teacher-cache")) == ["eval.safetensors", "train.safetensors"]
    assert load_teacher_cache(tmp_path / "run" / "teacher-cache" / "train.safetensors").shape == (16,)
    loaded = DistilledPairScorer.from_pretrained(results["output"])
    assert loaded.config.classifier_hidden_size == 16 and loaded.card_info.eval_results
    again = run_recipe({**recipe, "data": {**recipe["data"], "teacher": results["teacher_folder"]}})
    assert again["teacher"] == results["teacher"]  # the same teacher, read back from its caches
