from __future__ import annotations

import json
import logging

import pytest

from hf_contrastive.faithfulness.annotation import (
    LLMJudgeAnnotator,
    PerturbationAnnotator,
    parse_judge_output,
)

DOC = (
    "Manchester United beat Arsenal 3-1 at Old Trafford on Saturday. Wayne Rooney scored twice in March 2015, "
    "and 75,000 fans watched. Arsene Wenger said the team is not ready."
)
SUMMARY = "Wayne Rooney scored twice as Manchester United beat Arsenal on Saturday in front of 75,000 fans."


def _check_perturbation(ann, summary):
    ((start, end),) = ann.spans
    new = ann.summary
    assert new != summary
    # the span is exactly the changed text: prefix and suffix are untouched
    assert new[start:end] == ann.replacement
    assert new[:start] == summary[:start]
    assert new[end:] == summary[start + len(ann.original) :]
    assert summary[start : start + len(ann.original)] == ann.original


@pytest.mark.parametrize("kind", ["entity", "number", "date", "negation"])
def test_each_perturbation_points_at_the_changed_text(kind):
    summary = SUMMARY if kind != "negation" else "Arsene Wenger said the team is ready."
    for seed in range(5):
        ann = PerturbationAnnotator(kinds=[kind], seed=seed).annotate(DOC, summary)
        assert ann is not None and ann.kind == kind
        _check_perturbation(ann, summary)
        if kind == "entity":
            # FactCC-style: the wrong entity comes from the document, not from the summary
            assert ann.replacement in DOC and ann.replacement.lower() not in summary.lower()
        if kind == "number":
            assert ann.original == "75,000"
        if kind == "date":
            assert ann.original == "Saturday" and ann.replacement != "Saturday"
        if kind == "negation":
            assert ann.replacement == "is not" and ann.original == "is"


def test_negation_removal_and_determinism():
    ann = PerturbationAnnotator(kinds=["negation"]).annotate(DOC, "The team is not ready.")
    assert ann.summary == "The team is ready." and ann.summary[slice(*ann.spans[0])] == "is"
    a = PerturbationAnnotator(seed=3).annotate(DOC, SUMMARY)
    b = PerturbationAnnotator(seed=3).annotate(DOC, SUMMARY)
    assert (a.summary, a.spans) == (b.summary, b.spans)


def test_perturbation_skips_with_a_reason():
    ann = PerturbationAnnotator(kinds=["number"])
    assert ann.annotate("no digits here", "nothing to change") is None
    assert "number" in ann.last_reason
    out = ann.annotate_many(
        [
            {"document": DOC, "summary": SUMMARY},
            {"document": "x", "summary": "y z"},
            {"document": "x", "summary": ""},
        ]
    )
    assert len(out) == 1 and out[0].reference == SUMMARY
    assert [i for i, _ in ann.skipped] == [1, 2]
    with pytest.raises(ValueError, match="subset"):
        PerturbationAnnotator(kinds=["paraphrase"])


def test_judge_output_parsing():
    summary = "The mayor of Paris opened a bridge in 2019 in Paris."
    spans, notes = parse_judge_output(
        '```json\n{"hallucinated_spans": ["2019", "Paris", "Paris"]}\n```', summary
    )
    assert [summary[s:e] for s, e in spans] == ["Paris", "2019", "Paris"]
    assert spans[0][0] == summary.index("Paris") and spans[2][0] == summary.rindex("Paris")
    spans, notes = parse_judge_output('Sure! [{"text": "mayor"}, {"start": 0, "end": 3}, "dragon"]', summary)
    assert [summary[s:e] for s, e in spans] == ["The", "mayor"]
    assert notes and "dragon" in notes[0]
    assert parse_judge_output('{"hallucinated_spans": []}', summary) == ([], [])
    # overlapping quotes are merged
    spans, _ = parse_judge_output('{"spans": ["mayor of Paris", "Paris opened"]}', summary)
    assert [summary[s:e] for s, e in spans] == ["mayor of Paris opened"]


@pytest.mark.parametrize(
    "output",
    [
        '{"hallucinated_spans": ["2019"',  # truncated JSON
        "The summary is faithful.",  # no JSON at all
        '{"verdict": "bad"}',  # JSON without spans
        "{'hallucinated_spans': ['2019']}",  # python repr, not JSON
    ],
)
def test_llm_judge_skips_malformed_output_with_a_logged_reason(output, caplog):
    judge = LLMJudgeAnnotator(lambda prompt: output)
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.faithfulness.annotation"):
        rows = judge.annotate_many([{"document": "d", "summary": "The mayor opened a bridge in 2019."}])
    assert rows == []
    assert len(judge.skipped) == 1 and judge.skipped[0][1]
    assert any("Skipping" in r.message or "JSON" in r.message for r in caplog.records)


def test_llm_judge_maps_spans_and_never_crashes_the_run():
    prompts = []

    def fake(prompt):
        prompts.append(prompt)
        if "boom" in prompt:
            raise RuntimeError("server down")
        return json.dumps({"hallucinated_spans": ["2019"]})

    judge = LLMJudgeAnnotator(fake)
    rows = judge.annotate_many(
        [
            {"document": "A bridge opened in 2018.", "summary": "A bridge opened in 2019."},
            {"document": "boom", "summary": "boom"},
        ]
    )
    assert len(rows) == 1 and rows[0].span_texts() == ["2019"]
    assert "A bridge opened in 2018." in prompts[0] and "A bridge opened in 2019." in prompts[0]
    assert judge.skipped and "server down" in judge.skipped[0][1]
    with pytest.raises(ValueError, match="placeholders"):
        LLMJudgeAnnotator(fake, prompt_template="no placeholders")


def test_llm_judge_with_a_transformers_model():
    from faithfulness.helpers import tiny_causal_lm, word_tokenizer

    tok = word_tokenizer()
    judge = LLMJudgeAnnotator(tiny_causal_lm(len(tok)), tokenizer=tok, max_new_tokens=4)
    # a random model writes no JSON: skipped, not raised
    assert judge.annotate("dog runs in park", "dog runs") is None
    assert judge.last_reason
    with pytest.raises(ValueError, match="tokenizer"):
        LLMJudgeAnnotator(tiny_causal_lm(len(tok)))
