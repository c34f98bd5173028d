"""Rerankers on tiny random models: losses by hand, LLM scoring vs the full LM, trainer objectives,
LoRA, save/load round trips, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer
from transformers import AutoConfig, AutoModel, BertTokenizerFast, LlamaConfig, LlamaForCausalLM

from hf_contrastive.retrieval.rerankers import (
    CrossEncoderReranker,
    CrossEncoderRerankerConfig,
    LLMYesNoReranker,
    RerankerConfig,
    RerankerTrainer,
    evaluate_reranking,
    listwise_infonce_loss,
    load_reranker,
    pointwise_bce_loss,
    yes_no_sft_loss,
)


def cross_encoder(tmp_path, seed=0):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(seed)
    model = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(tok)).to_dict(), max_seq_length=48)
    )
    model.tokenizer = tok
    return model


def llm_reranker(seed=0, **kw):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", ":", *sorted(set(WORDS)), "."]
    vocab = list(dict.fromkeys(vocab))
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
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
    lm = LlamaForCausalLM(cfg).eval()
    template = "query : {query} . document : {document} . yes or no :"
    return LLMYesNoReranker.from_backbone(
        lm, tokenizer=tok, yes_token="yes", no_token="no", prompt_template=template, max_seq_length=40, **kw
    )


GROUPS = Dataset.from_dict(
    {
        "anchor": ["dog runs", "cat sleeps", "it rains today", "woman plays guitar"],
        "positive": ["dog runs in park", "cat sleeps on sofa", "rains today", "the woman plays loud music"],
        "negative_1": ["car drives fast", "red house", "sun shines bright", "bread piece"],
        "negative_2": ["quick brown fox", "big green house", "lazy dog", "children are playing outside"],
    }
)


def test_losses_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5))) / 3
    assert float(pointwise_bce_loss(logits, labels)) == pytest.approx(want, rel=1e-6)
    want_w = -(2 * math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5))) / 3
    assert float(pointwise_bce_loss(logits, labels, pos_weight=2.0)) == pytest.approx(want_w, rel=1e-6)
    groups = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 1.0]])
    lse = lambda row: math.log(sum(math.exp(x / 0.5) for x in row))  # noqa: E731
    want = ((lse([2.0, -1.0, 0.5]) - 2.0 / 0.5) + (lse([0.0, 1.0, 1.0]) - 0.0)) / 2
    assert float(listwise_infonce_loss(groups, temperature=0.5)) == pytest.approx(want, rel=1e-6)
    yes_no = torch.tensor([[0.3, 1.2], [2.0, -0.5]])  # (no, yes)
    want = (
        -(1.2 - math.log(math.exp(0.3) + math.exp(1.2))) - (2.0 - math.log(math.exp(2.0) + math.exp(-0.5)))
    ) / 2
    assert float(yes_no_sft_loss(yes_no, torch.tensor([1, 0]))) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="at least one negative"):
        listwise_infonce_loss(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="temperature"):
        listwise_infonce_loss(groups, temperature=0.0)


def test_cross_encoder_predict_rerank_and_round_trip(tmp_path):
    model = cross_encoder(tmp_path).eval()
    pairs = [("dog runs", "dog runs in park"), ("cat", "car drives fast on the road"), ("rain", "it rains")]
    feats = model.tokenize_pairs([q for q, _ in pairs], [d for _, d in pairs])
    with torch.no_grad():
        logits = model(**feats).logits
    assert logits.shape == (3,)
    scores = model.predict(pairs, batch_size=2)
    assert torch.allclose(scores, torch.sigmoid(logits), atol=1e-6)
    assert torch.allclose(model.predict(pairs, activation=False), logits, atol=1e-6)
    ranked = model.rerank("dog runs", ["car", "dog runs in park", "cat"])
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    model.save_pretrained(tmp_path / "saved")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "saved"), CrossEncoderRerankerConfig)
    auto = AutoModel.from_pretrained(tmp_path / "saved")
    assert isinstance(auto, CrossEncoderReranker) and auto.config.max_seq_length == 48
    again = load_reranker(tmp_path / "saved")
    assert torch.allclose(again.predict(pairs), scores, atol=1e-6)
    with pytest.raises(TypeError, match="pairs"):
        model.predict(["not a pair"])
    # Mean pooling: the head reads the masked mean of the pair's token states.
    mean = cross_encoder(tmp_path)
    mean.config.pooling = "mean"
    mean.eval()
    with torch.no_grad():
        states = mean.backbone(**feats).last_hidden_state
        m = feats["attention_mask"].unsqueeze(-1).float()
        want = mean.head((states * m).sum(1) / m.sum(1))
        assert torch.allclose(mean(**feats).logits, want, atol=1e-6)
    mean.save_pretrained(tmp_path / "mean")
    assert load_reranker(tmp_path / "mean").config.pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        CrossEncoderRerankerConfig(backbone_config=bert_config().to_dict(), pooling="max")


def test_llm_scores_equal_full_lm_logits_with_left_padding():
    model = llm_reranker().eval()
    queries, docs = ["dog runs", "cat"], ["dog runs in the big green park today", "red car"]
    feats = model.tokenize_pairs(queries, docs)
    assert feats["attention_mask"][:, -1].all() and not feats["attention_mask"][1, 0]
    with torch.no_grad():
        out = model(**feats)
        for i in range(2):
            # Reference: the unpadded prompt through the plain causal LM, next-token logits.
            ids = feats["input_ids"][i][feats["attention_mask"][i].bool()][None]
            full = model.lm(input_ids=ids).logits[0, -1]
            want = full[[model.config.no_token_id, model.config.yes_token_id]]
            assert torch.allclose(out.yes_no_logits[i], want, atol=1e-5)
            assert float(out.logits[i]) == pytest.approx(float(want[1] - want[0]), abs=1e-5)
    # The document is cut, never the answer suffix.
    long = model.tokenize_pairs(["dog"], [" ".join(["park"] * 200)])
    assert long["input_ids"].shape[1] == 40
    suffix = model.tokenizer.encode(" . yes or no :", add_special_tokens=False)
    assert long["input_ids"][0, -len(suffix) :].tolist() == suffix
    cl = llm_reranker(objective="cl")
    assert cl.config.resolved_score_mode == "yes"


@pytest.mark.parametrize("objective", ["sft", "cl"])
def test_llm_trainer_objectives_match_formulas(tmp_path, objective):
    model = llm_reranker()
    args = RerankerConfig(
        output_dir=str(tmp_path / "out"),
        objective=objective,
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = RerankerTrainer(model=model, args=args, train_dataset=GROUPS)
    batch = trainer.data_collator([GROUPS[0], GROUPS[1]])
    assert batch["input_ids"].shape[0] == 6 and int(batch["group_size"]) == 3
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        yes_no = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).yes_no_logits
    if objective == "sft":
        labels = torch.tensor([1, 0, 0, 1, 0, 0])
        want = -torch.log_softmax(yes_no, -1)[torch.arange(6), labels].mean()
    else:
        yes = yes_no[:, 1].view(2, 3)
        want = -torch.log_softmax(yes, -1)[:, 0].mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    before = [p.clone() for p in model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_llm_lora_train_merge_save_reload(tmp_path):
    from peft import LoraConfig

    model = llm_reranker()
    args = RerankerConfig(
        output_dir=str(tmp_path / "out"),
        objective="sft",
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=5e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = RerankerTrainer(model=model, args=args, train_dataset=GROUPS, peft_config=lora)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    pairs = [("dog runs", "dog runs in park"), ("cat", "red car")]
    with torch.no_grad():
        live = trainer.model.predict(pairs)
    merged = trainer.save_reranker(str(tmp_path / "merged"))
    assert isinstance(merged, LLMYesNoReranker)
    again = load_reranker(tmp_path / "merged")
    assert torch.allclose(again.predict(pairs), live, atol=1e-5)


def test_cross_encoder_trainer_pointwise_and_listwise_and_eval(tmp_path):
    model = cross_encoder(tmp_path)
    for objective in ("pointwise", "listwise"):
        args = RerankerConfig(
            output_dir=str(tmp_path / objective),
            objective=objective,
            per_device_train_batch_size=2,
            max_steps=2,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = RerankerTrainer(model=model, args=args, train_dataset=GROUPS)
        trainer.train()
        assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    # Labelled pairs train pointwise only.
    pairs = Dataset.from_dict({"query": ["dog", "dog"], "document": ["dog runs", "red car"], "label": [1, 0]})
    args = RerankerConfig(output_dir=str(tmp_path / "p"), max_steps=1, report_to="none", save_strategy="no")
    RerankerTrainer(model=model, args=args, train_dataset=pairs).train()
    with pytest.raises(ValueError, match="listwise"):
        RerankerTrainer(
            model=model,
            args=RerankerConfig(output_dir=str(tmp_path / "x"), objective="cl", report_to="none"),
            train_dataset=pairs,
        )
    with pytest.raises(ValueError, match="No negatives"):
        RerankerTrainer(model=model, args=args, train_dataset=GROUPS.select_columns(["anchor", "positive"]))
    with pytest.raises(ValueError, match="objective"):
        RerankerConfig(output_dir=str(tmp_path / "x"), objective="pairwise")
    # Reranking a retriever's results: a reranker that knows the answer lifts nDCG to 1.
    corpus = {"1": {"title": "", "text": "dog runs in park"}, "2": {"title": "", "text": "red car"}}
    queries, qrels = {"q": "dog"}, {"q": {"1": 1}}

    class Oracle:
        def predict(self, pairs, batch_size=32, show_progress_bar=False):
            return torch.tensor([1.0 if "dog" in d else 0.0 for _, d in pairs])

    m = evaluate_reranking(Oracle(), {"q": [("2", 0.9), ("1", 0.1)]}, corpus, queries, qrels, k_values=(1, 2))
    assert m["ndcg@1"] == 1.0 and m["mrr@2"] == 1.0


def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(tmp_path):
    """2 accumulation steps of 2 groups = 1 step of 4 groups (the loss is a batch mean; float64, no dropout)."""
    grads = {}
    for name, per_device, accumulation in (("one", 4, 1), ("two", 2, 2)):
        tok = bert_tokenizer(tmp_path / "vocab")
        cfg = bert_config(len(tok))
        cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
        torch.manual_seed(0)
        model = CrossEncoderReranker(
            CrossEncoderRerankerConfig(backbone_config=cfg.to_dict(), max_seq_length=48, head_dropout=0.0)
        ).double()
        model.tokenizer = tok
        args = RerankerConfig(
            output_dir=str(tmp_path / name),
            objective="listwise",
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        RerankerTrainer(model=model, args=args, train_dataset=GROUPS).train()
        grads[name] = {k: before[k] - v.detach() for k, v in model.named_parameters()}
    scale = max(float(v.abs().max()) for v in grads["one"].values())
    assert scale > 0
    diff = max(float((grads["one"][k] - grads["two"][k]).abs().max()) for k in grads["one"])
    assert diff <= 8 * 4096 * torch.finfo(torch.float64).eps * max(1.0, scale), diff
