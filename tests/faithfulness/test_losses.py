"""SpanUnlikelihoodLoss (faithfulness/losses.py) against the paper's formulas, token by token in float64."""

from __future__ import annotations

import math

import pytest
import torch

import hf_contrastive.faithfulness as faithfulness
import hf_contrastive.faithfulness.trainer as faithfulness_trainer
from hf_contrastive.faithfulness.losses import (
    OBJECTIVES,
    SPAN_WEIGHTINGS,
    SpanUnlikelihoodLoss,
    span_objective,
)

EPS64 = torch.finfo(torch.float64).eps
FLOOR = math.log(1e-5)


def hand_terms(logp, valid, span, objective, eps, n_items, floor=FLOOR, clamp=1e-5):
    """(faithful sum, span sum, number of span tokens, sum of span log p), by the paper's formulas."""
    faithful = span_sum = span_lp = 0.0
    n_span = 0
    for b in range(len(logp)):
        for t in range(len(logp[b])):
            if not valid[b][t]:
                continue
            lp = logp[b][t]
            if not span[b][t]:
                faithful += -lp
                continue
            n_span += 1
            span_lp += lp
            if objective == "unlikelihood":
                span_sum += -math.log(max(-math.expm1(lp), clamp))
            elif objective == "gradient_ascent":
                span_sum += max(lp, floor)
    return faithful / n_items, span_sum / n_items, n_span, span_lp


def batch():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 8, generator=g, dtype=torch.float64) * 5
    logp[0, 3] = -60.0  # under the gradient-ascent floor
    logp[1, 4] = -1e-12  # p -> 1: 1 - p is clamped
    valid = torch.ones(3, 8, dtype=torch.bool)
    valid[:, :2] = False  # the prompt
    valid[2, 6:] = False  # padding
    span = torch.zeros(3, 8, dtype=torch.long)
    span[0, 2:5] = 1
    span[1, 4:6] = 1
    span[2, 5:8] = 1  # two of these are padding: they must not count
    return logp.requires_grad_(True), valid, span


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_and_components_equal_the_formula(objective, num_items):
    logp, valid, span = batch()
    eps = 0.7
    out = SpanUnlikelihoodLoss(objective=objective, eps=eps)(logp, valid, span, num_items=num_items)
    n = num_items if num_items is not None else int(valid.sum())
    faithful, span_term, n_span, span_lp = hand_terms(
        logp.tolist(), valid.tolist(), span.tolist(), objective, eps, n
    )
    want = faithful + (eps * span_term if objective != "nll" else 0.0)
    # |terms| <= 60 (the floor is log 1e-5 ~ -11.5, the clamp gives <= 11.5), at most 24 of them
    bound = 16 * 24 * EPS64 * 60
    assert out.loss.dtype == torch.float64
    assert float(out.loss.detach()) == pytest.approx(want, abs=bound)
    assert float(out.components["faithful_nll"]) == pytest.approx(faithful, abs=bound)
    assert float(out.components["span_term"]) == pytest.approx(span_term, abs=bound)
    assert int(out.components["num_span_tokens"]) == n_span == 6
    assert float(out.components["span_log_prob"]) == pytest.approx(span_lp / n_span, abs=bound)
    out.loss.backward()
    if objective == "gradient_ascent":
        assert logp.grad[0, 3] == 0  # under the floor: no gradient
        assert logp.grad[0, 2] == pytest.approx(eps / n, abs=EPS64)  # d/dlogp of +eps * log p / N
    if objective == "unlikelihood":
        assert float(out.components["span_term"]) > 0
    if objective == "nll":
        assert float(out.components["span_term"]) == 0.0 and logp.grad[0, 2] == 0


def test_without_span_tokens_no_span_log_prob_is_reported():
    logp, valid, _ = batch()
    out = SpanUnlikelihoodLoss()(logp, valid, torch.zeros(3, 8))
    assert "span_log_prob" not in out.components and int(out.components["num_span_tokens"]) == 0
    terms = span_objective(logp, valid, torch.zeros(3, 8))
    assert math.isnan(float(terms["span_log_prob"]))
    assert float(terms["loss"].detach()) == float(out.loss.detach()) == float(out.components["faithful_nll"])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_span_objective_is_the_class(objective):
    logp, valid, span = batch()
    kwargs = dict(eps=0.3, log_prob_floor=-7.0, unlikelihood_clamp=1e-4)
    out = SpanUnlikelihoodLoss(objective, **kwargs)(logp, valid, span, num_items=11)
    terms = span_objective(logp, valid, span, objective, num_items=11, **kwargs)
    assert torch.equal(terms["loss"], out.loss)
    for key, value in out.components.items():
        assert torch.equal(terms[key], value), key


def test_float32_inputs_are_computed_in_float32_and_bf16_upcast():
    logp, valid, span = batch()
    for dtype in (torch.float32, torch.bfloat16):
        out = SpanUnlikelihoodLoss()(logp.detach().to(dtype), valid, span)
        assert out.loss.dtype == torch.float32


def test_validation_config_and_exports(tmp_path):
    with pytest.raises(ValueError, match="Unknown objective 'dpo'"):
        SpanUnlikelihoodLoss("dpo")
    with pytest.raises(ValueError, match="`eps` must be >= 0"):
        SpanUnlikelihoodLoss(eps=-1.0)
    with pytest.raises(ValueError, match="`unlikelihood_clamp` must be > 0"):
        SpanUnlikelihoodLoss(unlikelihood_clamp=0.0)
    with pytest.raises(ValueError, match="must have the same shape"):
        SpanUnlikelihoodLoss()(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 2))
    loss = SpanUnlikelihoodLoss("gradient_ascent", eps=0.5)
    assert loss.config_dict() == {
        "objective": "gradient_ascent",
        "eps": 0.5,
        "log_prob_floor": FLOOR,
        "unlikelihood_clamp": 1e-5,
        "span_weighting": "uniform",
        "span_weight_max": 1e4,
    }
    with pytest.raises(ValueError, match="Unknown span_weighting 'rank'"):
        SpanUnlikelihoodLoss(span_weighting="rank")
    with pytest.raises(ValueError, match="`span_weight_max` must be >= 1"):
        SpanUnlikelihoodLoss(span_weighting="inverse_prob", span_weight_max=0.5)
    assert faithfulness.SpanUnlikelihoodLoss is SpanUnlikelihoodLoss
    for name in ("OBJECTIVES", "span_objective", "safe_log1m_exp"):
        assert name in faithfulness_trainer.__all__ and hasattr(faithfulness_trainer, name)


def hand_weight(logp, valid, span, b, t, weighting, max_weight):
    """w_t by its definition: 1, 1/k on the k-th token of a run of span tokens, or min(1/p, max)."""
    if weighting == "uniform":
        return 1.0
    if weighting == "inverse_prob":
        return min(1.0 / math.exp(logp[b][t]), max_weight)
    k = 1
    while t - k >= 0 and span[b][t - k] and valid[b][t - k]:
        k += 1
    return 1.0 / k


@pytest.mark.parametrize("weighting", SPAN_WEIGHTINGS)
@pytest.mark.parametrize("objective", ["unlikelihood", "gradient_ascent"])
def test_span_weighting_equals_the_weighted_formula(weighting, objective):
    logp, valid, span = batch()
    span[0, 6] = 1  # a second run in row 0: its first token gets position weight 1 again
    eps, max_weight, n = 0.7, 30.0, 17
    out = SpanUnlikelihoodLoss(objective, eps, span_weighting=weighting, span_weight_max=max_weight)(
        logp, valid, span, num_items=n
    )
    lp, v, sp = logp.tolist(), valid.tolist(), span.tolist()
    faithful = span_sum = 0.0
    grads = torch.zeros_like(logp)
    for b in range(3):
        for t in range(8):
            if not v[b][t]:
                continue
            if not sp[b][t]:
                faithful -= lp[b][t]
                grads[b, t] = -1.0 / n
                continue
            w = hand_weight(lp, v, sp, b, t, weighting, max_weight)
            if objective == "unlikelihood":
                span_sum -= w * math.log(max(-math.expm1(lp[b][t]), 1e-5))
                p = math.exp(lp[b][t])
                # d/dlogp of -w log(1 - p) = w p / (1 - p) while 1 - p is above the clamp
                grads[b, t] = eps * w * p / (1 - p) / n if 1 - p > 1e-5 else 0.0
            else:
                span_sum += w * max(lp[b][t], FLOOR)
                grads[b, t] = eps * w / n if lp[b][t] > FLOOR else 0.0
    want = (faithful + eps * span_sum) / n
    # |w * term| <= 1e4 * 12 over at most 24 tokens
    bound = 16 * 24 * EPS64 * 30 * 60
    assert float(out.loss.detach()) == pytest.approx(want, abs=bound)
    out.loss.backward()
    # the weights are constants: the gradient is w_t times the unweighted one
    assert torch.allclose(logp.grad, grads, rtol=1e-9, atol=bound)
