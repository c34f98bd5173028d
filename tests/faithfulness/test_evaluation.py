from __future__ import annotations

import math

import pytest
import torch

from faithfulness.helpers import INSTRUCTION, ROWS, tiny_causal_lm, word_tokenizer
from hf_contrastive.faithfulness.evaluation import (
    SpanMatchJudge,
    annotator_judge,
    evaluate_faithfulness,
    generate_summaries,
    hallucination_rate,
    span_log_probs,
    summary_perplexity,
    wilson_interval,
)
from hf_contrastive.faithfulness.spans import SpanExample, SpanFeatureBuilder


def _setup():
    tok = word_tokenizer()
    return tiny_causal_lm(len(tok)), SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)


def _manual(model, builder, text_of):
    """Per-token log p of each summary (one unpadded forward per row) and its span mask."""
    out = []
    for r in ROWS:
        ex = SpanExample.from_row(r)
        ex = text_of(ex)
        feats = builder(ex)
        ids = torch.tensor([feats["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        for t in range(1, len(feats["input_ids"])):
            if feats["labels"][t] != -100:
                out.append((logp[t - 1, feats["labels"][t]].item(), feats["unfaithful_mask"][t]))
    return out


def test_span_log_probs_match_unpadded_forwards():
    model, builder = _setup()
    got = span_log_probs(model, builder, ROWS, batch_size=2)  # left-padded batches
    ref = _manual(model, builder, lambda ex: ex)
    span = [lp for lp, m in ref if m]
    rest = [lp for lp, m in ref if not m]
    assert got["n_span_tokens"] == len(span) == 3
    assert got["unfaithful_span_logprob"] == pytest.approx(sum(span) / len(span), abs=1e-5)
    assert got["faithful_token_logprob"] == pytest.approx(sum(rest) / len(rest), abs=1e-5)


def test_reference_perplexity_and_bundle():
    model, builder = _setup()
    ref = _manual(model, builder, lambda ex: SpanExample(ex.document, ex.reference, []))
    want = math.exp(-sum(lp for lp, _ in ref) / len(ref))
    assert summary_perplexity(model, builder, ROWS, batch_size=3) == pytest.approx(want, rel=1e-5)
    both = evaluate_faithfulness(model, builder, ROWS)
    assert both["reference_perplexity"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="reference"):
        summary_perplexity(model, builder, [{"document": "a", "summary": "b"}])


def test_generation_and_hallucination_rate():
    model, builder = _setup()
    texts = generate_summaries(model, builder, [r["document"] for r in ROWS], max_new_tokens=5, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # greedy and left-padded: same output alone and in a batch
    alone = generate_summaries(model, builder, [ROWS[1]["document"]], max_new_tokens=5)
    assert alone[0] == texts[1]
    rate = hallucination_rate(
        ["the woman plays guitar in London.", "a man is eating food", "dog runs"],
        ROWS,
        judge=SpanMatchJudge(),
    )
    assert rate["flags"] == [True, False, False] and rate["hallucination_rate"] == pytest.approx(1 / 3)
    # word boundaries: "was nothing" does not contain the span "was not"
    assert not SpanMatchJudge()("", "a man was nothing", SpanExample.from_row(ROWS[1]))
    with pytest.raises(ValueError, match="generated"):
        hallucination_rate(["x"], ROWS)


def test_pluggable_judge_and_skips():
    from hf_contrastive.faithfulness.annotation import LLMJudgeAnnotator

    answers = iter(['{"hallucinated_spans": ["london"]}', "not json", '{"hallucinated_spans": []}'])
    judge = annotator_judge(LLMJudgeAnnotator(lambda prompt: next(answers)))
    rate = hallucination_rate(["in london", "x y", "dog runs"], ROWS, judge=judge)
    assert rate["flags"] == [True, None, False]
    assert rate["n_skipped"] == 1 and rate["hallucination_rate"] == pytest.approx(0.5)


def test_wilson_interval_against_the_closed_form():
    # k = 3 of n = 20, z = 2: p = 0.15, centre = (0.15 + 0.1) / 1.2, half = 2 * sqrt(0.006375 + 0.0025) / 1.2
    lo, hi = wilson_interval(3, 20, z=2.0)
    half = 2 * math.sqrt(0.15 * 0.85 / 20 + 4 / 1600) / 1.2
    assert lo == pytest.approx(0.25 / 1.2 - half, abs=1e-12) and hi == pytest.approx(
        0.25 / 1.2 + half, abs=1e-12
    )
    lo, hi = wilson_interval(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 0.08  # not empty at k = 0 (rule of three: ~3/50)
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)
    rate = hallucination_rate(["in london", "x", "y"], ROWS)
    assert rate["ci95"] == wilson_interval(1, 3)
