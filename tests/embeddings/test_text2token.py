"""Text2Token on tiny random models: tf-idf and model-derived targets, the KL loss, the vocabulary projection,
training (full and LoRA), the recipe task and bad input."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from tiny_models import TEXTS, bert_config, save_tiny_bert, summation_tolerance, tiny_causal_lm, tiny_llama

from hf_contrastive.core.losses.registry import available_losses
from hf_contrastive.embeddings import (
    ContrastiveConfig,
    ContrastiveTrainer,
    SentenceEncoder,
    SentenceEncoderConfig,
)
from hf_contrastive.embeddings.sts import load_sts_benchmark
from hf_contrastive.embeddings.text2token import (
    Text2TokenConfig,
    Text2TokenLoss,
    Text2TokenTrainer,
    TokenTarget,
    VocabularyProjection,
    mix_targets,
    model_derived_targets,
    tfidf_targets,
    token_target_dataset,
)
from hf_contrastive.embeddings.text2token.recipes import RECIPE_TASK, _sts_evaluator
from hf_contrastive.recipes import load_recipe, register_recipe_task, run_recipe

REPO = Path(__file__).resolve().parents[2]


def tiny_bert_encoder(tok, seed=0, **head):
    torch.manual_seed(seed)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok)), **head))
    model.tokenizer = tok
    return model


def tiny_llama_encoder(tok, seed=0, pooling="last_token"):
    backbone = tiny_llama(seed)
    backbone.config.tie_word_embeddings = True  # as SmolLM2: the input embeddings are the LM head
    model = SentenceEncoder(
        SentenceEncoderConfig(backbone_config=backbone.config, pooling=pooling), backbone=backbone
    )
    model.tokenizer = tok
    return model


def args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        max_steps=4,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    base.update(kw)
    return Text2TokenConfig(**base)


# -- stage 1: tf-idf targets ----------------------------------------------------------------------------------------
HAND_TEXTS = ["dog runs in park", "the dog sleeps", "cat sleeps on sofa . cat"]


def hand_tfidf(docs, sublinear=False, drop=(), max_df=1.0, top_k=None):
    """tf-idf over whitespace words (the tiny vocabulary holds whole words), written out from the definition."""
    docs = [[w for w in d.split() if w != "." and w not in drop] for d in docs]
    n = len(docs)
    df = Counter(w for d in docs for w in set(d))
    out = []
    for d in docs:
        scores = {}
        for w, c in Counter(d).items():
            if df[w] / n > max_df:
                continue
            tf = 1 + math.log(c) if sublinear else c
            scores[w] = tf * (math.log((1 + n) / (1 + df[w])) + 1)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], d.index(kv[0])))[:top_k]
        total = sum(s for _, s in ranked)
        out.append({w: s / total for w, s in ranked})
    return out


@pytest.mark.parametrize(
    "kw, hand",
    [
        ({}, {}),
        ({"sublinear_tf": True}, {"sublinear": True}),
        ({"stop_words": ["the", "in", "on"]}, {"drop": ("the", "in", "on")}),
        ({"max_df": 0.5}, {"max_df": 0.5}),
        ({"top_k": 2}, {"top_k": 2}),
    ],
)
def test_tfidf_targets_match_the_hand_computation(bert_tok, kw, hand):
    targets = tfidf_targets(HAND_TEXTS, bert_tok, **kw)
    expected = hand_tfidf(HAND_TEXTS, **hand)
    for target, want in zip(targets, expected):
        words = bert_tok.convert_ids_to_tokens(target.ids)
        assert words == list(want)  # same tokens, by decreasing weight (ties: first occurrence)
        for word, weight in zip(words, target.weights):
            assert weight == pytest.approx(want[word], rel=1e-12, abs=0)
        assert math.fsum(target.weights) == pytest.approx(1.0, abs=1e-12)


def test_tfidf_targets_leave_out_special_tokens_and_punctuation(bert_tok):
    (target,) = tfidf_targets(["[CLS] dog . runs [SEP]"], bert_tok)
    assert set(bert_tok.convert_ids_to_tokens(target.ids)) == {"dog", "runs"}
    # with everything kept, the special tokens and the full stop come back
    (kept,) = tfidf_targets(
        ["[CLS] dog . runs [SEP]"], bert_tok, exclude_special_tokens=False, require_alphanumeric=False
    )
    assert set(bert_tok.convert_ids_to_tokens(kept.ids)) == {"[CLS]", "dog", ".", "runs", "[SEP]"}


def test_english_stop_words_are_left_out(bert_tok):
    (target,) = tfidf_targets(["the dog is in the park"], bert_tok, stop_words="english")
    assert bert_tok.convert_ids_to_tokens(target.ids) == ["dog", "park"]


# -- the loss -------------------------------------------------------------------------------------------------------
def dense(ids, weights, vocab):
    t = torch.zeros(ids.shape[0], vocab, dtype=torch.float64)
    return t.scatter_add(1, ids, weights.to(torch.float64))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_kl_matches_the_formula_in_float64(temperature):
    g = torch.Generator().manual_seed(0)
    rows, hidden, vocab = 4, 6, 11
    pooled = torch.randn(rows, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, hidden, generator=g, dtype=torch.float64)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64)
    ids = torch.tensor([[1, 3, 0], [2, 0, 0], [10, 4, 7], [5, 6, 0]])
    weights = torch.tensor(
        [[0.5, 0.3, 0.2], [1.0, 0, 0], [0.1, 0.6, 0.3], [0.25, 0.75, 0]], dtype=torch.float64
    )

    out = Text2TokenLoss(temperature=temperature)(pooled, weight, ids, weights, projection_bias=bias)

    expected = []
    for i in range(rows):
        z = [(float(pooled[i].detach() @ weight[v]) + float(bias[v])) / temperature for v in range(vocab)]
        top = max(z)
        log_norm = top + math.log(sum(math.exp(x - top) for x in z))
        kl = sum(
            t * (math.log(t) - (z[v] - log_norm))
            for v, t in zip(ids[i].tolist(), weights[i].tolist())
            if t > 0
        )
        expected.append(kl)
    want = sum(expected) / rows
    tol = summation_tolerance(torch.float64, scale=max(abs(x) for x in expected) + 10, depth=vocab)
    assert abs(float(out.loss) - want) <= tol
    assert float(out.components["kl"]) == float(out.loss)

    # d loss / d logits = (softmax - t) / (rows * temperature): the gradient of a KL to a fixed target
    out.loss.backward()
    with torch.no_grad():
        p = torch.softmax((pooled @ weight.T + bias) / temperature, dim=-1)
        grad = (p - dense(ids, weights, vocab)) @ weight / (rows * temperature)
    torch.testing.assert_close(
        pooled.grad, grad, rtol=0, atol=summation_tolerance(torch.float64, 10.0, vocab)
    )


def test_loss_is_zero_when_the_prediction_is_the_target():
    # one-hot logits scaled up: softmax -> the target exactly in float64, KL -> 0
    weight = torch.eye(5, dtype=torch.float64)
    pooled = torch.tensor([[0.0, 800.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    out = Text2TokenLoss()(pooled, weight, torch.tensor([[1]]), torch.tensor([[1.0]], dtype=torch.float64))
    assert float(out.loss) == pytest.approx(0.0, abs=1e-12)
    assert float(out.components["target_mass"]) == pytest.approx(1.0, abs=1e-12)


def test_text2token_is_a_registered_loss_of_its_own_layout(tmp_path, bert_tok):
    assert "text2token" in available_losses("token_targets")
    encoder = tiny_bert_encoder(bert_tok)
    config = ContrastiveConfig(output_dir=str(tmp_path), loss="text2token", report_to="none")
    with pytest.raises(ValueError, match="token_targets"):
        ContrastiveTrainer(model=encoder, args=config, train_dataset=Dataset.from_dict({"text": TEXTS}))


# -- the vocabulary projection --------------------------------------------------------------------------------------
def test_tied_projection_is_the_input_embedding_matrix(bert_tok):
    encoder = tiny_bert_encoder(bert_tok)
    embedding = encoder.get_input_embeddings().weight
    weight, bias = VocabularyProjection().weights_for(encoder)
    assert weight is embedding and bias is None
    pooled = torch.randn(2, embedding.shape[1])
    torch.testing.assert_close(VocabularyProjection()(pooled, encoder), pooled @ embedding.T, rtol=0, atol=0)


@pytest.mark.parametrize("detach", [False, True])
def test_tied_projection_gets_the_output_side_gradient_unless_detached(bert_tok, detach):
    encoder = tiny_bert_encoder(bert_tok).eval()
    batch = bert_tok(["dog runs"], return_tensors="pt")
    target = bert_tok.convert_tokens_to_ids(
        "sofa"
    )  # not an input token: only the output side reaches its row
    weight, _ = VocabularyProjection().weights_for(encoder)
    out = Text2TokenLoss(detach_projection=detach)(
        encoder(**batch).pooled, weight, torch.tensor([[target]]), torch.tensor([[1.0]])
    )
    out.loss.backward()
    row_grad = encoder.get_input_embeddings().weight.grad[target]
    assert bool((row_grad == 0).all()) == detach


def test_lm_head_projection_is_a_frozen_copy(word_tok):
    lm = tiny_causal_lm(len(word_tok))
    projection = VocabularyProjection.from_lm_head(lm)
    assert not projection.tied
    torch.testing.assert_close(projection.weight, lm.lm_head.weight.detach(), rtol=0, atol=0)
    assert projection.weight.data_ptr() != lm.lm_head.weight.data_ptr()
    assert not projection.weight.requires_grad


def test_tied_projection_on_an_untied_backbone_warns(word_tok, caplog):
    backbone = tiny_llama()
    assert backbone.config.tie_word_embeddings is False
    encoder = SentenceEncoder(SentenceEncoderConfig(backbone_config=backbone.config), backbone=backbone)
    with caplog.at_level(logging.WARNING):
        VocabularyProjection().check_encoder(encoder)
    assert "untied LM head" in caplog.text


# -- stage 2: model-derived targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["pooled", "token_states"])
def test_model_derived_targets_are_the_top_k_of_the_models_distribution(bert_tok, source):
    encoder = tiny_bert_encoder(bert_tok).eval()
    k = 5
    targets = model_derived_targets(encoder, TEXTS, source=source, top_k=k, temperature=0.5)
    specials = set(bert_tok.all_special_ids)
    weight = encoder.get_input_embeddings().weight.detach().double()
    mask = torch.zeros(weight.shape[0], dtype=torch.bool)
    mask[sorted(specials)] = True
    for text, target in zip(TEXTS, targets):
        assert len(target.ids) == k == len(set(target.ids))
        assert not specials & set(target.ids)
        assert math.fsum(target.weights) == pytest.approx(1.0, abs=k * 1e-6)
        assert target.weights == sorted(target.weights, reverse=True)
        with torch.no_grad():
            out = encoder(**bert_tok([text], return_tensors="pt"))
        if source == "pooled":
            probs = ((out.pooled.double() @ weight.T) / 0.5).masked_fill(mask, -math.inf).softmax(-1)[0]
        else:
            probs = ((out.last_hidden_state[0].double() @ weight.T) / 0.5).masked_fill(mask, -math.inf)
            probs = probs.softmax(-1).mean(0)
        top = probs.topk(k)
        assert target.ids == top.indices.tolist()
        want = (top.values / top.values.sum()).tolist()
        assert target.weights == pytest.approx(want, abs=1e-5)  # float32 softmax against float64


def test_mix_targets_blends_row_by_row():
    a = [TokenTarget([1, 2], [0.75, 0.25])]
    b = [TokenTarget([2, 3], [0.5, 0.5])]
    (mixed,) = mix_targets(a, b, 0.5)
    assert mixed.ids == [1, 2, 3]
    assert mixed.weights == pytest.approx([0.375, 0.375, 0.25], abs=1e-15)


# -- training -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path, bert_tok):
    encoder = tiny_bert_encoder(bert_tok)
    data = token_target_dataset(TEXTS, tfidf_targets(TEXTS, bert_tok), vocab_size=len(bert_tok))
    trainer = Text2TokenTrainer(
        model=encoder,
        args=args(tmp_path, max_steps=12, learning_rate=1e-2, per_device_train_batch_size=6),
        train_dataset=data,
    )
    before = trainer.evaluate(eval_dataset=data)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(eval_dataset=data)["eval_loss"]
    # a random model's KL is about 2.5 nats here; twelve full-batch steps must remove a good part of it
    assert after < 0.6 * before, (before, after)
    logged = [h for h in trainer.state.log_history if "kl" in h]
    assert logged and {"target_entropy", "cross_entropy", "target_mass"} <= set(logged[0])


@pytest.mark.slow
def test_lora_on_tiny_llama_trains_only_the_adapter(tmp_path, word_tok):
    encoder = tiny_llama_encoder(word_tok)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    data = token_target_dataset(TEXTS, tfidf_targets(TEXTS, word_tok), vocab_size=90)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    trainer = Text2TokenTrainer(
        model=encoder, args=args(tmp_path, learning_rate=1e-2), train_dataset=data, peft_config=lora
    )
    trainer.train()
    peft_model = trainer.model
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    moved = [n for n, p in peft_model.named_parameters() if "lora_B" in n and bool((p != 0).any())]
    assert moved, "the LoRA B matrices start at zero and must have been trained"
    base_state = peft_model.get_base_model().state_dict()
    for name, value in before.items():
        key = name.replace("q_proj.weight", "q_proj.base_layer.weight").replace(
            "v_proj.weight", "v_proj.base_layer.weight"
        )
        assert torch.equal(base_state[key], value), name  # the embedding matrix (the projection) included

    folder = tmp_path / "final"
    merged = trainer.save_encoder(str(folder))
    reloaded = SentenceEncoder.from_pretrained(str(folder)).eval()
    batch = word_tok(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).embeddings, merged.eval()(**batch).embeddings)
        # merging changed the model: the adapter was not a no-op
        assert not torch.allclose(
            merged(**batch).embeddings, tiny_llama_encoder(word_tok).eval()(**batch).embeddings
        )


# -- the recipe task ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_recipe_runs_both_stages_and_saves_an_encoder_with_its_card(tmp_path):
    register_recipe_task(RECIPE_TASK, replace=True)
    folder = tmp_path / "bert"
    save_tiny_bert(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    recipe = {
        "task": "text2token",
        "model": {"name_or_path": str(folder), "pooling": "mean"},
        "data": {"train": {"type": "text", "path": str(corpus)}},
        "method": {"stages": ["data_driven", "model_derived"], "model_top_k": 4, "data_mix": 0.25},
        "args": {
            "output_dir": str(tmp_path / "run"),
            "per_device_train_batch_size": 3,
            "num_train_epochs": 1,
            "report_to": "none",
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    results = run_recipe(recipe)
    assert results["rows"] == {"stage1": len(TEXTS), "stage2": len(TEXTS)}
    final = Path(results["output"])
    assert SentenceEncoder.from_pretrained(str(final)).config.pooling == "mean"
    card = (final / "README.md").read_text(encoding="utf-8")
    assert "an2025text2token" in card
    assert (
        "stage 1: data-driven (tf-idf); stage 2: model-derived (top 4, pooled) mixed with 0.25 data-driven"
        in card
    )


@pytest.mark.parametrize("name", ["text2token.yaml", "text2token-smollm2.yaml"])
def test_packaged_recipes_load(name):
    register_recipe_task(RECIPE_TASK, replace=True)
    recipe = load_recipe(REPO / "trainers" / name)
    assert recipe["task"] == "text2token"
    assert recipe["method"]["stages"] == ["data_driven", "model_derived"]
    assert ("lora" in recipe) == ("smollm2" in name)


def test_eval_sts_pairs_must_be_a_count_of_at_least_two():
    with pytest.raises(ValueError, match="eval_sts_pairs must be an integer >= 2"):
        _sts_evaluator({"eval_sts": "dev", "eval_sts_pairs": 1})


@pytest.mark.integration
def test_eval_sts_pairs_takes_evenly_spaced_pairs(shared_data):
    full = load_sts_benchmark("dev")
    evaluator = _sts_evaluator({"eval_sts": "dev", "eval_sts_pairs": 100})
    step = len(full) // 100
    assert len(evaluator) == 100
    assert evaluator.s1 == [x.sentence1 for x in full[::step][:100]]
    assert list(evaluator.gold) == [x.score for x in full[::step][:100]]


# -- bad input ------------------------------------------------------------------------------------------------------
def test_empty_texts_are_refused(bert_tok):
    with pytest.raises(ValueError, match="empty or blank text"):
        tfidf_targets(["dog runs", "   "], bert_tok)
    with pytest.raises(ValueError, match="no texts"):
        tfidf_targets([], bert_tok)
    with pytest.raises(ValueError, match="empty or blank text"):
        model_derived_targets(tiny_bert_encoder(bert_tok), [""])


def test_a_text_without_meaningful_tokens_is_refused_or_dropped_and_counted(bert_tok, caplog):
    with pytest.raises(ValueError, match="no token left"):
        tfidf_targets(["dog runs", ". ."], bert_tok)
    targets = tfidf_targets(["dog runs", ". ."], bert_tok, allow_empty=True)
    assert targets[1] == TokenTarget([], [])
    with caplog.at_level(logging.WARNING):
        data = token_target_dataset(["dog runs", ". ."], targets)
    assert data["text"] == ["dog runs"] and "dropped 1 of 2" in caplog.text


def test_mismatched_lengths_are_refused(tmp_path, bert_tok):
    targets = tfidf_targets(TEXTS, bert_tok)
    with pytest.raises(ValueError, match="6 texts but 5 targets"):
        token_target_dataset(TEXTS, targets[:5])
    data = Dataset.from_dict({"text": ["dog runs"], "target_ids": [[5, 6]], "target_weights": [[1.0]]})
    with pytest.raises(ValueError, match="2 target ids but 1 target weights"):
        Text2TokenTrainer(model=tiny_bert_encoder(bert_tok), args=args(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match="shape"):
        Text2TokenLoss()(
            torch.randn(2, 4), torch.randn(9, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2)
        )


def test_target_ids_outside_the_vocabulary_are_refused(tmp_path, bert_tok):
    vocab = len(bert_tok)
    data = Dataset.from_dict(
        {"text": ["dog runs"], "target_ids": [[3, vocab]], "target_weights": [[0.5, 0.5]]}
    )
    with pytest.raises(ValueError, match=rf"outside the vocabulary; expected ids in \[0, {vocab}\)"):
        Text2TokenTrainer(model=tiny_bert_encoder(bert_tok), args=args(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Text2TokenLoss()(torch.randn(1, 4), torch.randn(9, 4), torch.tensor([[9]]), torch.tensor([[1.0]]))


@pytest.mark.parametrize(
    "ids, weights, match",
    [
        ([[1, 1]], [[0.5, 0.5]], "repeats target id"),
        ([[1, 2]], [[0.5, 0.6]], "sum to 1.1"),
        ([[1, 2]], [[1.5, -0.5]], "finite weights >= 0"),
        ([[]], [[]], "no target tokens"),
    ],
)
def test_malformed_targets_are_refused(tmp_path, bert_tok, ids, weights, match):
    data = Dataset.from_dict({"text": ["dog runs"], "target_ids": ids, "target_weights": weights})
    with pytest.raises(ValueError, match=match):
        Text2TokenTrainer(model=tiny_bert_encoder(bert_tok), args=args(tmp_path), train_dataset=data)


def test_loss_refuses_repeated_ids_and_rows_that_are_not_distributions():
    pooled, weight = torch.randn(1, 4), torch.randn(9, 4)
    with pytest.raises(ValueError, match="repeats a target id"):
        Text2TokenLoss()(pooled, weight, torch.tensor([[2, 2]]), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="sum to 0"):
        Text2TokenLoss()(pooled, weight, torch.tensor([[2, 3]]), torch.tensor([[0.0, 0.0]]))


def test_missing_columns_and_wrong_settings_are_refused(tmp_path, bert_tok):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['target_ids', 'target_weights'\]"):
        Text2TokenTrainer(
            model=tiny_bert_encoder(bert_tok),
            args=args(tmp_path),
            train_dataset=Dataset.from_dict({"text": TEXTS}),
        )
    with pytest.raises(ValueError, match="trains loss=.text2token. only"):
        Text2TokenConfig(output_dir=str(tmp_path), loss="infonce")
    with pytest.raises(ValueError, match="GradCache"):
        Text2TokenConfig(output_dir=str(tmp_path), gradcache_mini_batch_size=2)
    with pytest.raises(ValueError, match="top_k"):
        model_derived_targets(tiny_bert_encoder(bert_tok), TEXTS, top_k=0)


def test_columns_named_otherwise_are_read_through_the_config(tmp_path, bert_tok):
    targets = tfidf_targets(TEXTS, bert_tok)
    data = Dataset.from_dict(
        {
            "sentence": TEXTS,
            "ids": [t.ids for t in targets],
            "w": [t.weights for t in targets],
            "label": list(range(len(TEXTS))),
        }
    )
    config = args(
        tmp_path, text_column="sentence", target_ids_column="ids", target_weights_column="w", max_steps=1
    )
    trainer = Text2TokenTrainer(model=tiny_bert_encoder(bert_tok), args=config, train_dataset=data)
    assert trainer.train_dataset.column_names == ["text", "target_ids", "target_weights"]
    trainer.train()


# -- the real packaged model ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_minilm_tied_projection_and_targets_on_wiki(minilm_path, shared_data):
    encoder = SentenceEncoder.from_pretrained(str(minilm_path))
    tok = encoder.tokenizer
    lines = (shared_data / "corpus" / "wiki1m_first11914.txt").read_text(encoding="utf-8").splitlines()[:16]
    weight, _ = VocabularyProjection().weights_for(encoder)
    assert tuple(weight.shape) == (30522, 384) and weight is encoder.get_input_embeddings().weight
    targets = tfidf_targets(lines, tok, stop_words="english", allow_empty=True)
    specials = set(tok.all_special_ids)
    for target in targets:
        assert not specials & set(target.ids) and all(0 <= t < 30522 for t in target.ids)
    data = token_target_dataset(lines, targets, vocab_size=30522)
    batch = tok(data["text"][:4], padding=True, truncation=True, max_length=32, return_tensors="pt")
    ids = torch.zeros(4, max(len(t) for t in data["target_ids"][:4]), dtype=torch.long)
    ws = torch.zeros(ids.shape)
    for i, (a, b) in enumerate(zip(data["target_ids"][:4], data["target_weights"][:4])):
        ids[i, : len(a)], ws[i, : len(b)] = torch.tensor(a), torch.tensor(b)
    with torch.no_grad():
        out = Text2TokenLoss()(encoder(**batch).pooled, weight, ids, ws)
    # a loss above zero and below KL to a uniform guess over the whole vocabulary (ln 30522 ~ 10.3)
    assert 0 < float(out.loss) < math.log(30522)
