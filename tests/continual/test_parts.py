"""COCONUT's parts against hand computations: schedule, buffer, losses, metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.continual import (
    InputLabelContrastiveLoss,
    NSPTLoss,
    RehearsalBuffer,
    TaskSchedule,
    continual_metrics,
    distillation_loss,
    herding_order,
    humanize_label,
)

# -- schedule -----------------------------------------------------------------------------------------------


def test_schedule_split_and_seen_classes():
    s = TaskSchedule.split(list("abcdefg"), num_tasks=3, seed=None)
    assert s.tasks == (("a", "b", "c"), ("d", "e"), ("f", "g"))
    assert s.seen_classes(1) == list("abcde") and s.task_of("f") == 2 and s.task_of("z") is None
    base = TaskSchedule.split(list("abcdefg"), num_tasks=3, seed=None, first_task_size=4, exclude=["g"])
    assert base.tasks == (("a", "b", "c", "d"), ("e",), ("f",))
    shuffled = TaskSchedule.split(list("abcdefg"), num_tasks=3, seed=1)
    assert sorted(shuffled.classes) == list("abcdefg") and shuffled == TaskSchedule.split(
        list("abcdefg"), 3, seed=1
    )


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([["a"], ["zebra"]], "does not know: \\['zebra'\\]"),
        ([["a"], ["a", "b"]], "scheduled twice"),
        ([["a"], []], "has no classes"),
        ([], "at least one task"),
        ("ab", "list of lists"),
    ],
)
def test_schedule_bad_input(tasks, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TaskSchedule(tasks, labels=["a", "b", "c"])


def test_humanize_label():
    assert humanize_label("Cause-Effect(e1,e2)") == "cause effect e1 e2"
    assert humanize_label("book_flight") == "book flight" and humanize_label("PlayMusic") == "play music"


# -- buffer -------------------------------------------------------------------------------------------------


def test_class_balanced_shares_and_shrinking_keeps_the_prefix():
    buf = RehearsalBuffer(capacity=7, seed=0)
    buf.update({"a": list(range(0, 10)), "b": list(range(10, 12))})
    # b has 2 rows: it keeps both, a gets the other 5.
    assert buf.per_class() == {"a": 5, "b": 2}
    first_a = list(buf.items["a"])
    buf.update({"c": list(range(20, 30))})
    # 7 over 3 classes: 3 + 2 + 2 (a first in arrival order gets the extra row).
    assert buf.per_class() == {"a": 3, "b": 2, "c": 2}
    assert buf.items["a"] == first_a[:3]
    assert len(buf) == 7 and len(set(buf.indices())) == 7
    with pytest.raises(ValueError, match="already in the buffer"):
        buf.update({"a": [1]})


def test_herding_matches_a_brute_force_greedy():
    torch.manual_seed(0)
    feats = torch.randn(9, 4, dtype=torch.float64)
    f = F.normalize(feats, dim=-1)
    mu = f.mean(0)
    chosen, total = [], torch.zeros(4, dtype=torch.float64)
    for k in range(1, 6):
        best = min(
            (i for i in range(9) if i not in chosen), key=lambda i: float((mu - (total + f[i]) / k).norm())
        )
        chosen.append(best)
        total += f[best]
    assert herding_order(feats, 5) == chosen
    buf = RehearsalBuffer(capacity=3, selection="herding")
    buf.update({"a": [100 + i for i in range(9)]}, features={"a": feats})
    assert buf.items["a"] == [100 + i for i in chosen[:3]]
    with pytest.raises(ValueError, match="needs the features"):
        RehearsalBuffer(capacity=3, selection="herding").update({"a": [1, 2]})


def test_reservoir_and_state_round_trip_continue_identically():
    buf = RehearsalBuffer(capacity=5, class_balanced=False, seed=3)
    buf.update({"a": list(range(20)), "b": list(range(20, 30))})
    assert len(buf) == 5 and buf.rows_seen == 30
    copy = RehearsalBuffer.from_state_dict(json.loads(json.dumps(buf.state_dict())))
    buf.update({"c": list(range(30, 60))})
    copy.update({"c": list(range(30, 60))})
    assert buf.indices() == copy.indices() and buf.state_dict() == copy.state_dict()
    balanced = RehearsalBuffer(capacity=4, seed=1)
    balanced.update({"a": list(range(10))})
    twin = RehearsalBuffer.from_state_dict(json.loads(json.dumps(balanced.state_dict())))
    balanced.update({"b": list(range(10, 20))})
    twin.update({"b": list(range(10, 20))})
    assert balanced.items == twin.items


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"capacity": -1}, "capacity"),
        ({"capacity": 3, "selection": "k-means"}, "selection"),
        ({"capacity": 3, "selection": "herding", "class_balanced": False}, "herding selects per class"),
    ],
)
def test_buffer_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RehearsalBuffer(**kwargs)


# -- losses -------------------------------------------------------------------------------------------------


def _nspt_by_hand(s, t, y, tau):
    s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    total = 0.0
    for i in range(len(y)):
        pos = [p for p in range(len(y)) if y[p] == y[i]]
        neg = [n for n in range(len(y)) if y[n] != y[i]]
        den = sum(math.exp(float(s[i] @ t[p]) / tau) for p in pos) + sum(
            math.exp(float(s[i] @ s[n]) / tau) for n in neg
        )
        total += -sum(float(s[i] @ t[p]) / tau - math.log(den) for p in pos) / len(pos)
    return total / len(y)


def test_nspt_equals_the_formula_and_back_propagates():
    torch.manual_seed(0)
    s = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    out = NSPTLoss(temperature=0.2)(s, t, y)
    assert math.isclose(
        float(out.loss.detach()), _nspt_by_hand(s.detach(), t, y.tolist(), 0.2), rel_tol=1e-12
    )
    out.loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    empty = NSPTLoss()(s[:0], t[:0], y[:0])
    assert float(empty.loss) == 0.0


def test_input_label_and_distillation_equal_their_formulas():
    torch.manual_seed(1)
    z = torch.randn(4, 3, dtype=torch.float64)
    e = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 2])
    out = InputLabelContrastiveLoss(temperature=0.5)(z, e, y)
    zn, en = F.normalize(z, dim=-1), F.normalize(e, dim=-1)
    expected = 0.0
    for i in range(4):
        logits = [float(zn[i] @ en[c]) / 0.5 for c in range(5)]
        expected += -(logits[int(y[i])] - math.log(sum(math.exp(v) for v in logits)))
    assert math.isclose(float(out.loss), expected / 4, rel_tol=1e-12)
    with pytest.raises(ValueError, match="index the 5 label"):
        InputLabelContrastiveLoss()(z, e, torch.tensor([0, 5, 1, 1]))

    s, t = torch.randn(3, 4), torch.randn(3, 4)
    T = 3.0
    kd = distillation_loss(s.double(), t.double(), temperature=T)
    p_t, p_s = torch.softmax(t.double() / T, -1), torch.softmax(s.double() / T, -1)
    by_hand = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * T * T
    assert math.isclose(float(kd), float(by_hand), rel_tol=1e-5)
    assert float(distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


# -- metrics ------------------------------------------------------------------------------------------------


def test_continual_metrics_by_hand():
    m = continual_metrics([[0.9], [0.6, 0.8], [0.5, 0.7, 0.95]])
    assert m["average_accuracy"] == pytest.approx([0.9, 0.7, (0.5 + 0.7 + 0.95) / 3])
    # forgetting: task 0 best 0.9 -> 0.5 (0.4); task 1 best 0.8 -> 0.7 (0.1)
    assert m["forgetting"] == pytest.approx(0.25)
    assert m["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert continual_metrics([[0.5]])["forgetting"] == 0.0
    with pytest.raises(ValueError, match="row 1"):
        continual_metrics([[0.5], [0.1]])
