"""LLM knowledge: each bad output dropped with its reason, the cache avoids regeneration."""

from __future__ import annotations

import json

import pytest

from hf_contrastive.relation.data import RelationExample
from hf_contrastive.relation.knowledge import (
    SEMEVAL_RELATION_DESCRIPTIONS,
    KnowledgeGenerator,
    ValidationReport,
    normalize_text,
)

SCHEMA = ["Cause-Effect(e1,e2)", "Product-Producer(e2,e1)"]
TRAIN = [RelationExample("The factory makes cars .".split(), (1, 2), (3, 4), label="Product-Producer(e2,e1)")]


def test_each_bad_synthetic_output_dropped_with_reason():
    outputs = [
        "Relation: Cause-Effect(e1,e2)\nSentence: The <e1>fire</e1> caused <e2>smoke</e2>.",  # ok
        "",  # empty_output
        "Sentence: The fire caused <e2>smoke</e2>.",  # missing_marker (no <e1>)
        "Sentence: The <e1>big <e2>fire</e2></e1> spread.",  # overlapping_entities
        "Relation: Friend-Of(e1,e2)\nSentence: The <e1>a</e1> likes <e2>b</e2>.",  # label_not_in_schema
        "Relation: Product-Producer(e2,e1)\nSentence: The <e1>factory</e1> makes <e2>cars</e2>.",  # duplicate_of_training
        "Sentence: the <e1>fire</e1> caused <e2>smoke</e2>",  # duplicate_of_generated
        "Sentence: The <e1>earthquake</e1> caused a huge <e2>tsunami</e2>.",  # copy_of_prompt_example
        "Sentence: The <e1>smoke</e1> came out of the <e2>chimney</e2 today.",  # missing_marker (broken tag)
        "Sentence: The <e1>team</e1> has a <e2>team</e2>.",  # identical_entities
    ]
    labels = ["Cause-Effect(e1,e2)"] * len(outputs)
    kept, report = KnowledgeGenerator.validate_synthetic(
        outputs,
        labels,
        SCHEMA,
        TRAIN,
        prompt_examples=["The <e1>earthquake</e1> caused a huge <e2>tsunami</e2>."],
    )
    assert [e.text for e in kept] == ["The fire caused smoke ."]
    assert (
        kept[0].label == "Cause-Effect(e1,e2)"
        and kept[0].subject_text == "fire"
        and kept[0].object_text == "smoke"
    )
    assert report.kept == 1
    assert dict(report.dropped) == {
        "empty_output": 1,
        "missing_marker": 2,
        "overlapping_entities": 1,
        "identical_entities": 1,
        "label_not_in_schema": 1,
        "duplicate_of_training": 1,
        "duplicate_of_generated": 1,
        "copy_of_prompt_example": 1,
    }


def test_explanation_checks():
    ex = RelationExample("The factory makes cars .".split(), (1, 2), (3, 4), label="Product-Producer(e2,e1)")
    assert KnowledgeGenerator.check_explanation(ex, "The factory produces the cars it sells.") is None
    assert KnowledgeGenerator.check_explanation(ex, "") == "empty_output"
    assert KnowledgeGenerator.check_explanation(ex, "cars, factory.") == "too_short"
    assert (
        KnowledgeGenerator.check_explanation(ex, "The factory builds many things every day.")
        == "entity_not_mentioned"
    )


def test_cache_avoids_regeneration(tmp_path):
    calls = []

    def fake(prompt: str) -> str:
        calls.append(prompt)
        return f"Sentence: The <e1>wind</e1> caused <e2>waves {len(calls)}</e2>."

    rel = {"Cause-Effect(e1,e2)": SEMEVAL_RELATION_DESCRIPTIONS["Cause-Effect(e1,e2)"]}
    gen = KnowledgeGenerator(fake, cache_dir=tmp_path, model_name="fake", temperature=0.7)
    kept, report = gen.synthesize(rel, per_relation=3, schema=SCHEMA, prefill=None)
    assert len(calls) == 3 and report.generated == 3 and report.cached == 0 and len(kept) == 3
    again = KnowledgeGenerator(fake, cache_dir=tmp_path, model_name="fake", temperature=0.7)
    kept2, report2 = again.synthesize(rel, per_relation=3, schema=SCHEMA, prefill=None)
    assert len(calls) == 3  # nothing regenerated
    assert report2.cached == 3 and [e.text for e in kept2] == [e.text for e in kept]
    # Another setting, model or prompt is another key.
    KnowledgeGenerator(fake, cache_dir=tmp_path, model_name="fake", temperature=0.9).synthesize(
        rel, per_relation=1, schema=SCHEMA, prefill=None
    )
    assert len(calls) == 4
    KnowledgeGenerator(fake, cache_dir=tmp_path, model_name="other", temperature=0.7).synthesize(
        rel, per_relation=1, schema=SCHEMA, prefill=None
    )
    assert len(calls) == 5
    # With a prefill the callable continues the started answer.
    completion = KnowledgeGenerator(
        lambda p: "storm</e1> caused <e2>floods</e2>.", cache_dir=tmp_path, model_name="c"
    )
    for _ in range(2):  # the second pass reads the cache, which holds the whole answer
        kept, _ = completion.synthesize(rel, per_relation=1, schema=SCHEMA)
        assert kept[0].text == "The storm caused floods ." and kept[0].label == "Cause-Effect(e1,e2)"
    # Explanations go through the same cache.
    ex = [
        RelationExample("The wind made waves .".split(), (1, 2), (3, 4), label="Cause-Effect(e1,e2)", id="a")
    ]
    explain = KnowledgeGenerator(
        lambda p: (calls.append(p), "The wind pushes water into waves.")[1],
        cache_dir=tmp_path,
        model_name="x",
    )
    kept, rep = explain.explain(ex)
    kept, rep = explain.explain(ex)
    assert rep.cached == 1 and kept[0].explanation == "The wind pushes water into waves."


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="callable"):
        KnowledgeGenerator(42)
    gen = KnowledgeGenerator(lambda p: "", cache_dir=None)
    with pytest.raises(ValueError, match="not in the schema"):
        gen.synthesize({"Friend-Of": "x"}, schema=SCHEMA)
    with pytest.raises(ValueError, match="Unknown drop reason"):
        ValidationReport().drop("bad")
    assert normalize_text("The <e1>Fire</e1>, caused smoke!") == "the fire caused smoke"


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_generates_and_caches(smollm2_gguf, tmp_path):
    from hf_contrastive.core.smollm2 import smollm2_folder

    folder = smollm2_folder()
    label = "Cause-Effect(e1,e2)"
    rel = {label: SEMEVAL_RELATION_DESCRIPTIONS[label]}
    gen = KnowledgeGenerator(str(folder), cache_dir=tmp_path, max_new_tokens=16, batch_size=2)
    kept, report = gen.synthesize(rel, per_relation=2, schema=SCHEMA)
    assert report.total == 2 and report.generated == 2 and report.cached == 0
    # the model really wrote something: each cached answer is the started one plus a non-empty continuation
    started = f"Relation: {label}\nSentence: The <e1>"
    prompt = gen.synthesis_prompt(label, rel[label]) + "\x00" + started
    cached = [
        json.loads((tmp_path / f"{gen.cache_key(prompt, s)}.json").read_text())["output"] for s in (0, 1)
    ]
    assert len(list(tmp_path.glob("*.json"))) == 2
    for output in cached:
        assert output.startswith(started) and output[len(started) :].strip(), output
    # kept and dropped are exactly what validating those two answers gives
    demos = [d.split("Example:", 1)[1] for d in rel.values() if "Example:" in d]
    want, want_report = KnowledgeGenerator.validate_synthetic(
        cached, [label, label], SCHEMA, prompt_examples=demos
    )
    assert [e.text for e in kept] == [e.text for e in want]
    assert report.kept == want_report.kept and report.dropped == want_report.dropped
    # a second pass reads the cache: nothing generated, the same examples kept
    again, report = gen.synthesize(rel, per_relation=2, schema=SCHEMA)
    assert report.cached == 2 and report.generated == 0
    assert [e.text for e in again] == [e.text for e in kept]
