"""ContrastiveTrainer on tiny random encoders: loss wiring, resume, LoRA, evaluation, cards, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import HfApi
from tiny_models import TEXTS, WORDS, bert_config, bert_tokenizer, summation_tolerance

from hf_contrastive import (
    ContrastiveConfig,
    ContrastiveTrainer,
    CoSENTLoss,
    InfoNCELoss,
    SentenceEncoder,
    SentenceEncoderConfig,
    STSEvaluator,
    UnsupervisedSimCSELoss,
)


def encoder(tmp_path, seed=0, **head):
    torch.manual_seed(seed)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok)), **head))
    model.tokenizer = tok
    return model


def sentences(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(
            WORDS[i]
            for i in torch.randint(
                len(WORDS), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g
            ).tolist()
        )
        for _ in range(n)
    ]


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=4,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    base.update(kw)
    return ContrastiveConfig(**base)


def batch_tokens(batch):
    """Tokens of a collated batch (all role columns): the depth of the sums behind its loss."""
    return sum(int(v.numel()) for k, v in batch.items() if k.endswith("attention_mask"))


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_loss(got, ref, depth):
    """Same loss computed with other paddings / groupings: equal up to a summation-order bound (float64)."""
    assert got.dtype == ref.dtype == torch.float64
    allowed = summation_tolerance(torch.float64, max(1.0, abs(float(ref))), depth)
    assert abs(float(got) - float(ref)) <= allowed, (float(got), float(ref), allowed)


def test_pairs_loss_equals_infonce_on_separately_encoded_roles(tmp_path):
    model = encoder(tmp_path).to(torch.float64)  # float64: the two paths pad and group rows differently
    a, p, n = sentences(8, 1), sentences(8, 2), sentences(8, 3)
    ds = Dataset.from_dict({"anchor": a, "positive": p, "negative": n})
    trainer = ContrastiveTrainer(model=model, args=config(tmp_path), train_dataset=ds)
    assert isinstance(trainer.loss_fn, InfoNCELoss)
    batch = trainer.data_collator([ds[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
        tok = model.tokenizer
        emb = [model(**tok(col[:4], padding=True, return_tensors="pt")).embeddings for col in (a, p, n)]
        # reference: hand-written InfoNCE, tau 0.05, candidates = all positives + all negatives
        cand = torch.nn.functional.normalize(torch.cat([emb[1], emb[2]]), dim=-1)
        logits = torch.nn.functional.normalize(emb[0], dim=-1) @ cand.T / 0.05
        ref = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert_same_loss(got, ref, depth=batch_tokens(batch))


def test_unsupervised_uses_one_doubled_forward(tmp_path):
    model = encoder(tmp_path, pooling="cls", projection_dim=32, mlp_only_train=True).to(torch.float64)
    ds = Dataset.from_dict({"text": sentences(12)})
    trainer = ContrastiveTrainer(model=model, args=config(tmp_path), train_dataset=ds)
    assert isinstance(trainer.loss_fn, UnsupervisedSimCSELoss)
    batch = trainer.data_collator([ds[i] for i in range(4)])
    calls = []
    handle = model.backbone.register_forward_hook(lambda m, i, o: calls.append(o.last_hidden_state.shape[0]))
    model.train()
    loss = trainer.compute_loss(model, batch)
    handle.remove()
    assert calls == [8]  # one forward of 2B rows
    assert loss.item() > 0.0  # dropout makes the two views differ
    model.eval()  # without dropout the views coincide: the loss is that of identical positives
    with torch.no_grad():
        z = model(**batch).embeddings
        z = torch.nn.functional.normalize(z, dim=-1)
        ref = torch.nn.functional.cross_entropy(z @ z.T / 0.05, torch.arange(4))
        assert_same_loss(trainer.compute_loss(model, batch), ref, depth=2 * batch_tokens(batch))


def test_scored_pairs_use_cosent_and_training_lowers_loss(tmp_path):
    s1, s2 = sentences(32, 4), sentences(32, 5)
    scores = [float(i % 6) for i in range(32)]
    ds = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(
        model=model, args=config(tmp_path, max_steps=30, per_device_train_batch_size=8), train_dataset=ds
    )
    assert isinstance(trainer.loss_fn, CoSENTLoss)
    batch = trainer.data_collator([ds[i] for i in range(32)])
    model.eval()
    with torch.no_grad():
        before = trainer.compute_loss(model, dict(batch)).item()
    trainer.train()
    model.eval()
    with torch.no_grad():
        after = trainer.compute_loss(model, dict(batch)).item()
    assert after < before - 0.5
    assert any("cosent" in log for log in trainer.state.log_history)


def test_resume_reproduces_uninterrupted_weights(tmp_path):
    ds = Dataset.from_dict({"anchor": sentences(40, 6), "positive": sentences(40, 7)})
    kw = dict(max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)
    full = encoder(tmp_path)
    ContrastiveTrainer(model=full, args=config(tmp_path / "a", **kw), train_dataset=ds).train()

    # interrupted run: stop after the step-3 checkpoint, then a fresh process resumes
    part = encoder(tmp_path)
    t = ContrastiveTrainer(model=part, args=config(tmp_path / "b", **kw), train_dataset=ds)
    t.add_callback(_StopAt(3))
    t.train()
    assert t.state.global_step == 3
    assert (tmp_path / "b" / "out" / "checkpoint-3").is_dir()
    assert not (tmp_path / "b" / "out" / "checkpoint-6").exists()
    a, p = params(full), params(part)
    # steps 4-6 change the weights, so matching the full run below is something only a real resume achieves
    assert max((a[k] - p[k]).abs().max().item() for k in a) > 0.0
    resumed = encoder(tmp_path, seed=123)  # different init: everything must come from the checkpoint
    r = ContrastiveTrainer(model=resumed, args=config(tmp_path / "b", **kw), train_dataset=ds)
    r.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-3"))
    assert r.state.global_step == 6
    # same process, same kernels, same order of operations: the resumed weights are bit-identical
    b = params(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


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


def test_lora_training_and_merged_save(tmp_path):
    from peft import LoraConfig

    ds = Dataset.from_dict({"anchor": sentences(16, 8), "positive": sentences(16, 9)})
    model = encoder(tmp_path)
    frozen = params(model)
    trainer = ContrastiveTrainer(
        model=model,
        args=config(tmp_path),
        train_dataset=ds,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]),
    )
    trainer.train()
    enc = trainer.save_encoder(str(tmp_path / "final"))
    assert type(enc) is SentenceEncoder
    base_now = params(trainer.model.get_base_model())
    compared = 0
    for k, v in base_now.items():  # LoRA leaves the base weights alone
        if "lora_" in k:
            continue
        original = k.replace(".base_layer", "")
        assert torch.equal(frozen[original], v), k
        compared += 1
    assert compared == len(frozen)
    reloaded = SentenceEncoder.from_pretrained(tmp_path / "final")
    texts = TEXTS[:3]
    got, want = reloaded.encode(texts), trainer.model.eval().encode(texts)
    # merged W + BA against W x + B (A x) in float32: each layer sums `hidden` products in another order
    cfg = reloaded.config.backbone_config
    allowed = summation_tolerance(
        torch.float32, float(want.abs().max()), depth=cfg.hidden_size * cfg.num_hidden_layers
    )
    gap = float((torch.as_tensor(got) - torch.as_tensor(want)).abs().max())
    assert gap <= allowed, f"reloaded embeddings differ by {gap:.3g} > {allowed:.3g}"
    card = (tmp_path / "final" / "README.md").read_text()
    assert "InfoNCELoss" in card and "LoRA" in card and "```bibtex" in card


def test_evaluate_reports_sts_and_card_records_it(tmp_path, monkeypatch):
    ds = Dataset.from_dict({"anchor": sentences(16, 10), "positive": sentences(16, 11)})
    sts = STSEvaluator(
        [(a, b, float(i % 5)) for i, (a, b) in enumerate(zip(sentences(20, 12), sentences(20, 13)))],
        dataset_name="tiny STS",
        dataset_type="tiny/sts",
        split="test",
    )
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(
        model=model,
        args=config(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=ds,
        sts_evaluator=sts,
    )
    trainer.train()
    evals = [log for log in trainer.state.log_history if "eval_sts_spearman" in log]
    assert len(evals) == 2 and all(-1 <= e["eval_sts_spearman"] <= 1 for e in evals)

    uploads = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda api, repo_id, **kw: type("U", (), {"repo_id": repo_id})()
    )
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda api, repo_id, operations, **kw: uploads.update(
            {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        ),
    )
    trainer.push_to_hub("someone/tiny-simcse")
    card = uploads["README.md"].decode()
    assert "tiny/sts" in card and "spearman_cosine" in card and "InfoNCELoss" in card
    assert "model.safetensors" in uploads


def test_bad_input(tmp_path):
    from peft import LoraConfig

    pairs = Dataset.from_dict({"anchor": sentences(8), "positive": sentences(8, 1)})
    with pytest.raises(ValueError, match="Batch size 1 with in-batch negatives"):
        ContrastiveTrainer(
            model=encoder(tmp_path), args=config(tmp_path, per_device_train_batch_size=1), train_dataset=pairs
        )
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        config(tmp_path, temperature=0.0)
    with pytest.raises(ValueError, match="no positive column"):
        ContrastiveTrainer(
            model=encoder(tmp_path),
            args=config(tmp_path),
            train_dataset=Dataset.from_dict({"anchor": ["a"], "negative": ["b"]}),
        )
    with pytest.raises(ValueError, match=r"target module\(s\) \['q_proj'\] do not exist.*query"):
        ContrastiveTrainer(
            model=encoder(tmp_path),
            args=config(tmp_path),
            train_dataset=pairs,
            peft_config=LoraConfig(target_modules=["q_proj"]),
        )
    with pytest.raises(ValueError, match="needs a scored_pairs dataset"):
        ContrastiveTrainer(model=encoder(tmp_path), args=config(tmp_path, loss="cosent"), train_dataset=pairs)
    with pytest.raises(ValueError, match="loss must be one of"):
        config(tmp_path, loss="triplet")


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    ds = Dataset.from_dict({"anchor": sentences(40, 14), "positive": sentences(40, 15)})
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(
        model=model, args=config(tmp_path, max_steps=8, save_strategy="steps", save_steps=2), train_dataset=ds
    )

    class Poison:
        def __getattr__(self, name):
            if name == "on_step_end":
                return self.on_step_end
            if name.startswith("on_"):
                return lambda *a, **k: None
            raise AttributeError(name)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 3:
                with torch.no_grad():
                    model.backbone.embeddings.word_embeddings.weight.fill_(math.nan)

    trainer.add_callback(Poison())
    with pytest.raises(FloatingPointError, match=r"step 3.*last good checkpoint is .*checkpoint-2"):
        trainer.train()
    good = SentenceEncoder.from_pretrained(tmp_path / "out" / "checkpoint-2")
    assert torch.isfinite(good.encode(TEXTS[:2])).all()


def test_retrieval_evaluator_runs_through_trainer_evaluate(tmp_path):
    from transformers import EarlyStoppingCallback

    from hf_contrastive.retrieval.evaluation import RetrievalEvaluator, evaluate_retrieval

    docs = sentences(12, 20)
    queries = {f"q{i}": q for i, q in enumerate(sentences(4, 21))}
    corpus = {f"d{i}": {"title": "", "text": d} for i, d in enumerate(docs)}
    qrels = {f"q{i}": {f"d{2 * i}": 1} for i in range(4)}
    ev = RetrievalEvaluator(corpus, queries, qrels, name="tiny", batch_size=8)
    ds = Dataset.from_dict({"anchor": sentences(16, 10), "positive": sentences(16, 11)})
    model = encoder(tmp_path)
    stopper = EarlyStoppingCallback(early_stopping_patience=100)
    trainer = ContrastiveTrainer(
        model=model,
        args=config(
            tmp_path,
            eval_strategy="steps",
            eval_steps=2,
            metric_for_best_model="eval_tiny_ndcg@10",
            save_strategy="steps",
            save_steps=2,
        ),
        train_dataset=ds,
        evaluators=[ev],
        callbacks=[stopper],
    )
    trainer.train()
    # No eval_dataset and no STS evaluator: the retrieval figures alone drive evaluation and best-model tracking.
    evals = [log for log in trainer.state.log_history if "eval_tiny_ndcg@10" in log]
    assert len(evals) == 2
    assert trainer.state.best_metric == max(e["eval_tiny_ndcg@10"] for e in evals)
    metrics = trainer.evaluate()
    direct = evaluate_retrieval(model, corpus, queries, qrels, batch_size=8)
    assert metrics["eval_tiny_ndcg@10"] == pytest.approx(direct["ndcg@10"], abs=1e-9)
    assert metrics["eval_tiny_recall@100"] == pytest.approx(direct["recall@100"], abs=1e-9)
    with pytest.raises(TypeError, match="callables"):
        ContrastiveTrainer(model=model, args=config(tmp_path), train_dataset=ds, evaluators=["ndcg"])
