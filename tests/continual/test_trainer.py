"""ContinualTrainer on tiny random models: the task loop, the losses in training, exact resume, bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from relation.helpers import LABELS, examples, tiny_classifier
from tiny_models import bert_tokenizer

from hf_contrastive.continual import ContinualConfig, ContinualTrainer, TaskSchedule
from hf_contrastive.relation.data import RelationExample

SCHEDULE = [[LABELS[0]], [LABELS[1], LABELS[2]]]


def rows(copies: int = 2) -> list[RelationExample]:
    out = []
    for c in range(copies):
        for e in examples():
            out.append(RelationExample(e.tokens, e.subject, e.object, label=e.label, id=f"{c}-{e.id}"))
    return out


def config(tmp_path, **kw) -> ContinualConfig:
    base = dict(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        seed=0,
        data_seed=0,
        buffer_size=4,
        nspt_weight=1.0,
        input_label_weight=1.0,
        distillation_weight=1.0,
        projection_dim=8,
        use_cpu=True,
    )
    base.update(kw)
    return ContinualConfig(**base)


def trainer(tmp_path, seed: int = 0, **kw) -> ContinualTrainer:
    model = tiny_classifier(tmp_path, seed=seed)
    return ContinualTrainer(
        model, config(tmp_path, **kw), train_dataset=rows(), eval_dataset=rows(1), schedule=SCHEDULE
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_task_loop_trains_every_term_and_measures_each_task(tmp_path):
    t = trainer(tmp_path)
    seen = []
    original = t.compute_loss

    def spy(model, inputs, **kw):
        loss = original(model, inputs, **kw)
        seen.append((t.task, dict(t.last_components), int(inputs["rehearsal"].sum())))
        return loss

    t.compute_loss = spy
    t.train()
    # Task 0: CE + input-label only; task 1: rehearsal rows, NSPT, distillation from the frozen teacher.
    assert all(set(c) == {"ce", "input_label"} for task, c, _ in seen if task == 0)
    later = [c for task, c, r in seen if task == 1]
    assert later and all({"ce", "distillation", "input_label"} <= set(c) for c in later)
    assert any("nspt" in c for c in later) and sum(r for task, _, r in seen if task == 1) > 0
    results = t.continual_results()
    assert [len(r) for r in results["accuracy_matrix"]] == [1, 2]
    assert 0.0 <= results["final_average_accuracy"] <= 1.0
    on_disk = json.loads((tmp_path / "run" / "continual_results.json").read_text())
    assert on_disk["accuracy_matrix"] == results["accuracy_matrix"]
    for task in (0, 1):
        assert (tmp_path / "run" / f"task-{task}" / "task-end" / "model.safetensors").is_file()
    # After task 0, the buffer holds task 0's class only; after task 1, all three classes share 4 rows.
    assert set(t.buffer.per_class()) == set(LABELS) and len(t.buffer) == 4


def test_one_task_without_replay_is_plain_finetuning(tmp_path):
    """A schedule of one task holding every class, no buffer and no extra term (the joint baseline) trains
    exactly as the relation wing's own fine-tuning trainer does on the same rows."""
    from hf_contrastive.relation import RelationClassificationTrainer, RelationFinetuneConfig

    settings = dict(max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3, seed=0, use_cpu=True)
    model = tiny_classifier(tmp_path / "c", seed=0)
    joint = ContinualTrainer(
        model,
        ContinualConfig(output_dir=str(tmp_path / "c" / "run"), **settings),
        train_dataset=rows(),
        schedule=[LABELS],
    )
    joint.train()
    assert joint.teacher is None and len(joint.buffer) == 0
    plain_model = tiny_classifier(tmp_path / "p", seed=0)
    plain = RelationClassificationTrainer(
        plain_model,
        RelationFinetuneConfig(output_dir=str(tmp_path / "p" / "run"), **settings),
        train_dataset=rows(),
    )
    plain.train()
    for name, value in weights(plain_model).items():
        torch.testing.assert_close(
            weights(model)[name], value, rtol=0, atol=1e-6 * max(1.0, float(value.abs().max()))
        )


def _truncate(run, task: int, keep_checkpoint: int | None):
    """Make `run` look like a run killed during `task` after `checkpoint-<keep_checkpoint>`."""
    for later in range(task, 2):
        folder = run / f"task-{later}"
        if not folder.exists():
            continue
        for child in folder.iterdir():
            if child.name == "task-end" or (
                child.name.startswith("checkpoint-")
                and (
                    keep_checkpoint is None or later > task or int(child.name.split("-")[1]) > keep_checkpoint
                )
            ):
                shutil.rmtree(child)
    (run / "continual_results.json").unlink()


@pytest.mark.parametrize("task, keep", [(1, 1), (1, None)], ids=["mid-task-1", "after-task-0"])
def test_resume_ends_exactly_like_the_uninterrupted_run(tmp_path, task, keep, extra=None):
    extra = extra or {}
    full = trainer(tmp_path / "a", save_strategy="steps", save_steps=1, **extra)
    full.train()
    expected = weights(full.model)
    expected_heads = {k: v.clone() for k, v in full.heads.state_dict().items()}
    expected_buffer = full.buffer.state_dict()
    run = tmp_path / "b" / "run"
    shutil.copytree(tmp_path / "a" / "run", run)
    _truncate(run, task, keep)
    resumed = trainer(tmp_path / "b", seed=7, save_strategy="steps", save_steps=1, **extra)
    resumed.train(resume_from_checkpoint=True)
    got = weights(resumed.model)
    for name, value in expected.items():
        # Same batches, same dropout masks, same optimiser state: equal up to float32 summation order.
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6 * max(1.0, float(value.abs().max())))
    for name, value in expected_heads.items():
        torch.testing.assert_close(resumed.heads.state_dict()[name], value, rtol=0, atol=1e-6)
    assert resumed.buffer.state_dict() == expected_buffer
    assert resumed.continual_results()["accuracy_matrix"] == full.continual_results()["accuracy_matrix"]


def test_encoder_decoder_backbone(tmp_path):
    from transformers import BartConfig, BartForSequenceClassification

    tok = bert_tokenizer(tmp_path / "vocab")
    labels = ["a", "b", "c"]
    cfg = BartConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        decoder_start_token_id=tok.sep_token_id, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={v: k for k, v in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BartForSequenceClassification(cfg)
    texts = [
        "the dog runs",
        "a cat sleeps",
        "it rains today",
        "the sun shines",
        "music loud",
        "car drives fast",
    ]
    data = [dict(tok(s), labels=i % 3) for i, s in enumerate(texts)]
    t = ContinualTrainer(
        model,
        config(tmp_path, buffer_size=2, max_steps=2),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tok,
        schedule=[["a"], ["b", "c"]],
    )
    t.train()
    assert t.heads.nspt[0].in_features == 16  # features: the encoder's mean-pooled last states
    assert [len(r) for r in t.accuracy_matrix] == [1, 2]


# -- bad input ----------------------------------------------------------------------------------------------


def test_bad_input_is_refused_at_the_boundary(tmp_path):
    model = tiny_classifier(tmp_path)
    with pytest.raises(ValueError, match="does not know: \\['Nope'\\]"):
        ContinualTrainer(model, config(tmp_path), train_dataset=rows(), schedule=[[LABELS[0]], ["Nope"]])
    with pytest.raises(ValueError, match="larger than the training data"):
        ContinualTrainer(model, config(tmp_path, buffer_size=13), train_dataset=rows(), schedule=SCHEDULE)
    with pytest.raises(ValueError, match="set buffer_size > 0"):
        config(tmp_path, buffer_size=0)
    t = ContinualTrainer(model, config(tmp_path), train_dataset=rows(), schedule=SCHEDULE)
    other = tiny_classifier(tmp_path / "o")
    other.config.id2label = {0: "x", 1: "y", 2: "z"}
    with pytest.raises(ValueError, match="teacher's label space"):
        t.set_teacher(other)
    with pytest.raises(ValueError, match="No complete checkpoint"):
        t.train(resume_from_checkpoint=True)
    assert not os.path.exists(tmp_path / "run" / "task-0" / "task-end")
    unknown_rows = rows() + [RelationExample(["a", "b"], (0, 1), (1, 2), label="Mystery", id="m")]
    with pytest.raises(ValueError, match="labels the model does not know"):
        ContinualTrainer(model, config(tmp_path), train_dataset=unknown_rows, schedule=SCHEDULE)
    assert TaskSchedule(SCHEDULE).classes == [LABELS[0], LABELS[1], LABELS[2]]


def test_heads_get_their_own_learning_rate(tmp_path):
    t = trainer(tmp_path, head_learning_rate=5e-3)
    optimizer = t.create_optimizer()
    heads = {id(p) for p in t.heads.parameters()}
    (group,) = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} == heads]
    assert group["lr"] == 5e-3 and group["weight_decay"] == 0.0
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups if g is not group)
    with pytest.raises(ValueError, match="head_learning_rate"):
        config(tmp_path, head_learning_rate=0.0)
