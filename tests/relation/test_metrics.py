"""SemEval-2010 official scores, micro-F1 without Other and episode accuracy against hand-computed
confusion matrices (direction errors included)."""

from __future__ import annotations

import pytest

from hf_contrastive.relation.scoring import (
    episode_accuracy,
    relation_micro_f1,
    relation_scores,
    semeval2010_official_scores,
)

CE12, CE21 = "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"
CW12, CW21 = "Component-Whole(e1,e2)", "Component-Whole(e2,e1)"
# (gold, pred): two right-relation/wrong-direction errors (rows 2 and 9), one wrong relation (row 7),
# a missed relation (row 4) and two spurious ones (rows 5 and 10).
PAIRS = [
    (CE12, CE12),
    (CE12, CE21),
    (CE21, CE21),
    (CE12, "Other"),
    ("Other", CE12),
    (CW12, CW12),
    (CW21, CE12),
    ("Other", "Other"),
    (CW12, CW21),
    ("Other", CW21),
]
GOLD = [g for g, _ in PAIRS]
PRED = [p for _, p in PAIRS]


def f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


def test_official_score_direction_aware_by_hand():
    s = semeval2010_official_scores(GOLD, PRED)
    # (9+1)-way with direction: Cause-Effect: 4 gold, 2 exactly right, 1 wrong direction (row 2),
    # 4 other predictions of Cause-Effect (rows 1, 3, 5, 7) -> P = 2 / (4 + 1), R = 2 / 4.
    p_ce, r_ce = 2 / 5, 2 / 4
    # Component-Whole: 3 gold, 1 right, 1 wrong direction (row 9), predicted by rows 6 and 10
    # -> P = 1 / (2 + 1), R = 1 / 3.
    p_cw, r_cw = 1 / 3, 1 / 3
    official = s["directed_10way"]
    assert official["per_label"]["Cause-Effect"]["wrong_direction"] == 1
    assert official["per_label"]["Cause-Effect"]["precision"] == pytest.approx(p_ce)
    assert official["per_label"]["Component-Whole"]["recall"] == pytest.approx(r_cw)
    assert s["official_macro_f1"] == pytest.approx((f1(p_ce, r_ce) + f1(p_cw, r_cw)) / 2)
    assert official["macro_precision"] == pytest.approx((p_ce + p_cw) / 2)
    assert official["macro_recall"] == pytest.approx((r_ce + r_cw) / 2)
    # micro over the two relations: 3 right of 5 + 3 predictions and of 7 gold.
    assert official["micro_precision"] == pytest.approx(3 / 8)
    assert official["micro_recall"] == pytest.approx(3 / 7)


def test_undirected_and_19way_by_hand():
    s = semeval2010_official_scores(GOLD, PRED)
    und = s["undirected_10way"]
    # Ignoring direction rows 2 and 9 become right: CE 3 right of 5 predicted / 4 gold; CW 2 of 3 / 3.
    assert und["macro_f1"] == pytest.approx((f1(3 / 5, 3 / 4) + f1(2 / 3, 2 / 3)) / 2)
    d19 = s["directed_19way"]
    # CE12: right row 1, predicted rows 1,5,7, gold rows 1,2,4; CE21: right 3, predicted 2,3, gold 3;
    # CW12: right 6, predicted 6, gold 6,9; CW21: none right, predicted 9,10, gold 7.
    expected = (f1(1 / 3, 1 / 3) + f1(1 / 2, 1) + f1(1, 1 / 2) + 0.0) / 4
    assert d19["macro_f1"] == pytest.approx(expected)
    # Direction errors cost the official score more than the undirected one.
    assert s["official_macro_f1"] < und["macro_f1"]


def test_perfect_and_all_other():
    s = semeval2010_official_scores(GOLD, GOLD)
    assert s["official_macro_f1"] == pytest.approx(1.0)
    s = semeval2010_official_scores(GOLD, ["Other"] * len(GOLD))
    assert s["official_macro_f1"] == 0.0
    assert s["directed_10way"]["micro_f1"] == 0.0


def test_micro_f1_excluding_other():
    m = relation_micro_f1(GOLD, PRED, "Other")
    # exact right and not Other: rows 1, 3, 6; predictions other than Other: 8; gold other than Other: 7.
    assert m["precision"] == pytest.approx(3 / 8)
    assert m["recall"] == pytest.approx(3 / 7)
    assert m["f1"] == pytest.approx(f1(3 / 8, 3 / 7))
    r = relation_scores(GOLD, PRED, "Other")
    assert r["micro_f1"] == pytest.approx(m["f1"])
    assert r["accuracy"] == pytest.approx(4 / 10)
    assert "official_macro_f1" in r
    assert "official_macro_f1" not in relation_scores(["P17", "P31"], ["P17", "P17"], None)


def test_episode_accuracy():
    out = episode_accuracy([[0, 1, 2], [0, 1]], [[0, 1, 0], [1, 1]])
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["episode_mean"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="one prediction list per episode"):
        episode_accuracy([[0]], [])
    with pytest.raises(ValueError, match="same length"):
        relation_micro_f1(["a"], ["a", "b"])
