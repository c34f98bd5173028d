"""RelationProcessor: same marked inputs as the collator for every scheme, entity positions on the markers,
truncation that keeps both entities, save/load round trips (alone and with the model), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import bert_tokenizer
from transformers import AutoProcessor

from hf_contrastive import RelationProcessor as FaceRelationProcessor
from hf_contrastive.core.boundary import position_limit
from hf_contrastive.relation import RelationProcessor
from hf_contrastive.relation.data import RelationDataCollator, RelationExample
from hf_contrastive.relation.modeling import RelationClassifier
from hf_contrastive.relation.mslm import MaskedSpanLMCollator

from .helpers import LABELS, examples, tiny_classifier

SCHEMES = ["entity_marker", "typed_entity_marker", "typed_entity_marker_punct"]
OPENS = {
    "entity_marker": ("[E1]", "[E2]"),
    "typed_entity_marker": ("[S:ENTITY]", "[O:ENTITY]"),
    "typed_entity_marker_punct": ("@", "#"),
}
CLOSES = {
    "entity_marker": ("[/E1]", "[/E2]"),
    "typed_entity_marker": ("[/S:ENTITY]", "[/O:ENTITY]"),
    "typed_entity_marker_punct": ("@", "#"),
}
# The first tiny example ("the dog runs in the big green park", subject "dog", object "big green"), marked.
MARKED_FIRST = {
    "entity_marker": "[CLS] the [E1] dog [/E1] runs in the [E2] big green [/E2] park [SEP]",
    "typed_entity_marker": (
        "[CLS] the [S:ENTITY] dog [/S:ENTITY] runs in the [O:ENTITY] big green [/O:ENTITY] park [SEP]"
    ),
    "typed_entity_marker_punct": "[CLS] the @ * entity * dog @ runs in the # ^ entity ^ big green # park [SEP]",
}


def _processor(tmp_path, scheme: str = "typed_entity_marker", **kwargs) -> RelationProcessor:
    tok = bert_tokenizer(tmp_path / "vocab")
    if scheme == "typed_entity_marker_punct":
        tok.add_tokens(["@", "#", "*", "^", "entity", "per", "org"])  # the tiny vocabulary lacks them
    processor = RelationProcessor(tok, marker_scheme=scheme, **kwargs)
    processor.add_marker_tokens()
    return processor


def _tokens(processor: RelationProcessor, ids: torch.Tensor) -> list[str]:
    return processor.tokenizer.convert_ids_to_tokens(ids.tolist())


def _assert_same(a, b) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def _object_first() -> RelationExample:
    return RelationExample("dog runs in park today".split(), (3, 4), (0, 1), label="Other", id="of")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_inputs_as_collator(tmp_path, scheme):
    processor = _processor(tmp_path, scheme)
    rows = [*examples(), _object_first()]
    collate = RelationDataCollator(
        processor.tokenizer, marker_scheme=scheme, label2id={lab: i for i, lab in enumerate(LABELS)}
    )
    expected = collate(rows)
    out = processor(rows)
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "entity_positions"}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert out[key].dtype == torch.long
        assert torch.equal(out[key], expected[key]), key
    assert out["entity_positions"].shape == (len(rows), 2)
    assert torch.equal(out["entity_positions"], expected["entity_positions"][:, [0, 2]])
    assert torch.equal(
        processor(rows, return_end_markers=True)["entity_positions"], expected["entity_positions"]
    )
    # A fixed rendering of the first example, so both paths are held to the marking of the schemes.
    first = _tokens(processor, out["input_ids"][0][out["attention_mask"][0].bool()])
    assert " ".join(first) == MARKED_FIRST[scheme]
    # The collator built around this very processor gives the same batch.
    _assert_same(RelationDataCollator(processor=processor, label2id=collate.label2id)(rows), expected)


def test_input_forms_agree(tmp_path):
    processor = _processor(tmp_path, entity_types=["PER"])
    rows = examples()[:3]
    rows[1].subject_type = "PER"
    expected = processor(rows)
    _assert_same(processor([r.to_dict() for r in rows]), expected)
    _assert_same(processor([(r.tokens, r.subject, r.object, r.subject_type) for r in rows]), expected)
    batch = processor(
        [r.tokens for r in rows],
        [r.subject for r in rows],
        [r.object for r in rows],
        subject_type=[r.subject_type for r in rows],
    )
    _assert_same(batch, expected)
    one = processor(rows[1].tokens, rows[1].subject, rows[1].object, "PER")
    width = int(one["attention_mask"].sum())
    assert torch.equal(one["input_ids"][0], expected["input_ids"][1, :width])
    assert _tokens(processor, one["input_ids"][0])[int(one["entity_positions"][0, 0])] == "[S:PER]"
    _assert_same(processor(rows[0]), processor([rows[0]]))
    # Padding and tensor types.
    lists = processor(rows, padding=False, return_tensors=None)
    assert [len(x) for x in lists["input_ids"]] == expected["attention_mask"].sum(1).tolist()
    assert processor(rows, padding="max_length", max_length=20)["input_ids"].shape == (3, 20)
    as_np = processor(rows, return_tensors="np")
    assert isinstance(as_np["input_ids"], np.ndarray)
    assert (as_np["input_ids"] == expected["input_ids"].numpy()).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_entity_positions_point_at_markers(tmp_path, scheme):
    processor = _processor(tmp_path, scheme)
    rows = [*examples(), _object_first()]
    out = processor(rows, return_end_markers=True)
    for row, ids, pos in zip(rows, out["input_ids"], out["entity_positions"]):
        toks = _tokens(processor, ids)
        s0, s1, o0, o1 = pos.tolist()
        assert (toks[s0], toks[o0]) == OPENS[scheme]
        assert (toks[s1], toks[o1]) == CLOSES[scheme]
        # The entity words sit between their own markers (after the type words of the punctuation scheme).
        inner = 3 if scheme == "typed_entity_marker_punct" else 0
        assert toks[s0 + 1 + inner : s1] == [w.lower() for w in row.tokens[row.subject[0] : row.subject[1]]]
        assert toks[o0 + 1 + inner : o1] == [w.lower() for w in row.tokens[row.object[0] : row.object[1]]]
    # Object before subject: the positions keep the subject first.
    s0, o0 = processor(_object_first())["entity_positions"][0].tolist()
    assert o0 < s0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_truncation_keeps_both_entities(tmp_path, scheme):
    processor = _processor(tmp_path, scheme, max_length=16)
    words = ["park"] * 60 + ["dog", "runs", "cat"] + ["park"] * 60
    long = RelationExample(words, (60, 61), (62, 63), id="long")
    at_end = RelationExample(["park"] * 100 + ["dog", "cat"], (101, 102), (100, 101), id="end")
    out = processor([long, at_end], return_end_markers=True)
    assert out["input_ids"].shape == (2, 16) and bool(out["attention_mask"].all())
    for ids, pos, (subj, obj) in zip(
        out["input_ids"], out["entity_positions"], [("dog", "cat"), ("cat", "dog")]
    ):
        toks = _tokens(processor, ids)
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
        s0, s1, o0, o1 = pos.tolist()
        assert (toks[s0], toks[o0]) == OPENS[scheme] and (toks[s1], toks[o1]) == CLOSES[scheme]
        assert toks[s1 - 1] == subj and toks[o1 - 1] == obj
    # The same window as the collator cuts; a call-level budget overrides the processor's.
    enc = RelationDataCollator(processor=processor).encode(long)
    assert out["input_ids"][0].tolist() == enc["input_ids"]
    assert processor(long, max_length=24)["input_ids"].shape == (1, 24)
    far = RelationExample(words, (0, 1), (120, 121), id="far")
    with pytest.raises(ValueError, match="raise max_length"):
        processor(far)


def test_save_load_round_trip(tmp_path):
    processor = _processor(tmp_path, entity_types=["PER", "ORG"], max_length=20)
    rows = [*examples(), RelationExample(["park"] * 40 + ["dog", "cat"], (40, 41), (41, 42), "Other", "ORG")]
    rows[0].subject_type, rows[0].object_type = "PER", "ORG"
    expected = processor(rows)
    processor.save_pretrained(tmp_path / "saved")
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    settings = json.loads((tmp_path / "saved" / "processor_config.json").read_text())
    assert settings["marker_scheme"] == "typed_entity_marker" and settings["entity_types"] == ["PER", "ORG"]
    assert settings["max_length"] == 20 and settings["processor_class"] == "RelationProcessor"
    for again in (
        RelationProcessor.from_pretrained(tmp_path / "saved"),
        RelationProcessor.from_pretrained(tmp_path / "saved", tokenizer=processor.tokenizer),
        AutoProcessor.from_pretrained(tmp_path / "saved"),
    ):
        assert isinstance(again, RelationProcessor)
        assert (again.marker_scheme, again.entity_types, again.max_length) == (
            "typed_entity_marker",
            ["PER", "ORG"],
            20,
        )
        assert again.marker_token_ids == processor.marker_token_ids
        assert again.add_marker_tokens() == []
        _assert_same(again(rows), expected)
    assert RelationProcessor.from_pretrained(tmp_path / "saved", max_length=64).max_length == 64
    assert FaceRelationProcessor is RelationProcessor


def test_add_marker_tokens_is_idempotent(tmp_path):
    tok = bert_tokenizer(tmp_path)
    size = len(tok)
    processor = RelationProcessor(tok, marker_scheme="typed_entity_marker", entity_types=["PER"])
    with pytest.raises(ValueError, match="lacks the marker tokens"):
        processor(examples())
    assert processor.missing_marker_tokens() == processor.marker_tokens
    added = processor.add_marker_tokens()
    assert added == [
        "[S:PER]",
        "[/S:PER]",
        "[O:PER]",
        "[/O:PER]",
        "[S:ENTITY]",
        "[/S:ENTITY]",
        "[O:ENTITY]",
        "[/O:ENTITY]",
    ]
    assert len(tok) == size + 8
    assert processor.add_marker_tokens() == [] and len(tok) == size + 8
    assert processor.marker_token_ids == {m: tok.convert_tokens_to_ids(m) for m in added}
    assert tok.tokenize("dog [S:PER] cat") == ["dog", "[S:PER]", "cat"]
    punct = RelationProcessor(bert_tokenizer(tmp_path / "p"), marker_scheme="typed_entity_marker_punct")
    assert punct.marker_tokens == [] and punct.add_marker_tokens() == []


def test_model_exposes_and_restores_its_processor(tmp_path):
    model = tiny_classifier(tmp_path).eval()
    processor = model.processor
    assert isinstance(processor, RelationProcessor) and processor.tokenizer is model.tokenizer
    # The budget is the config's, cut to the backbone's positions (the tiny backbone has 64).
    budget = min(model.config.max_seq_length, position_limit(model.config))
    assert (processor.marker_scheme, processor.max_length) == ("typed_entity_marker", budget)
    assert model.processor is processor  # built once
    rows = examples()
    collated = model.collator()(rows)
    direct = processor(rows, return_end_markers=True)
    for key in direct:
        assert torch.equal(direct[key], collated[key]), key
    # Logits from the processor's [B, 2] positions equal those from the collator's [B, 4] ones.
    torch.testing.assert_close(model(**processor(rows)).logits, model(**collated).logits)

    model.processor = RelationProcessor.from_config(model.tokenizer, model.config, max_length=24)
    long = RelationExample(["park"] * 40 + ["dog", "cat"], (40, 41), (41, 42), id="long")
    expected = model.processor([*rows, long])
    assert expected["input_ids"].shape[1] == 24
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "processor_config.json").read_text())["max_length"] == 24
    again = RelationClassifier.from_pretrained(tmp_path / "saved").eval()
    assert again.processor.max_length == 24 and again.tokenizer is again.processor.tokenizer
    _assert_same(again.processor([*rows, long]), expected)
    torch.testing.assert_close(again(**again.processor(rows)).logits, model(**model.processor(rows)).logits)
    # Without processor_config.json the processor comes from the config and the tokenizer.
    (tmp_path / "saved" / "processor_config.json").unlink()
    plain = RelationClassifier.from_pretrained(tmp_path / "saved")
    assert plain.processor.max_length == budget
    _assert_same(plain.processor(rows), processor(rows))
    # A processor that marks differently from the config is refused.
    with pytest.raises(ValueError, match="differ from the model config"):
        model.processor = RelationProcessor(model.tokenizer, marker_scheme="entity_marker")
    with pytest.raises(ValueError, match="differ from the model config"):
        model.collator(RelationProcessor(model.tokenizer, marker_scheme="entity_marker"))


def test_masked_span_collator_marks_through_the_processor(tmp_path):
    processor = _processor(tmp_path)
    a = MaskedSpanLMCollator(processor.tokenizer, seed=3, processor=processor)(examples())
    b = MaskedSpanLMCollator(processor.tokenizer, seed=3)(examples())
    _assert_same(a, b)
    assert a["entity_positions"].shape == (6, 4)
    assert (
        MaskedSpanLMCollator(processor.tokenizer, processor=processor).relation_collator.processor
        is processor
    )
    with pytest.raises(ValueError, match="not both"):
        MaskedSpanLMCollator(
            processor.tokenizer,
            processor=processor,
            relation_collator=RelationDataCollator(processor=processor),
        )


def test_bad_input(tmp_path):
    processor = _processor(tmp_path)
    words = "a cat sleeps on sofa".split()
    with pytest.raises(ValueError, match="overlap.*must be disjoint"):
        processor(words, (1, 3), (2, 4))
    with pytest.raises(
        ValueError, match=r"outside the sentence of 5 words.*expected word indices 0 <= start < end <= 5"
    ):
        processor(words, (1, 2), (4, 9))
    with pytest.raises(ValueError, match=r"expected word indices 0 <= start < end <= 5"):
        processor([{"tokens": words, "subject": [3, 3], "object": [0, 1]}])
    with pytest.raises(ValueError, match=r"must be a \(start, end\) pair of word indices"):
        processor(words, (1,), (3, 4))
    with pytest.raises(ValueError, match=r"must be a \(start, end\) pair of word indices"):
        processor([{"tokens": words, "subject": "x", "object": [3, 4]}])
    with pytest.raises(
        ValueError, match=r"Unknown marker scheme 'brackets'; expected one of \('entity_marker'"
    ):
        RelationProcessor(processor.tokenizer, marker_scheme="brackets")
    with pytest.raises(ValueError, match="max_length must be an integer of at least 8"):
        RelationProcessor(processor.tokenizer, max_length=4)
    with pytest.raises(ValueError, match="entity_types must be a list"):
        RelationProcessor(processor.tokenizer, entity_types="PER")
    with pytest.raises(ValueError, match="both subject_span and object_span"):
        processor(words, (1, 2))
    with pytest.raises(ValueError, match="needs subject_span and object_span"):
        processor(words)
    with pytest.raises(ValueError, match="subject_span has 1 entries for a batch of 2 sentences; expected 2"):
        processor([words, words], [(0, 1)], [(3, 4), (3, 4)])
    with pytest.raises(ValueError, match="not among the configured entity types"):
        processor(words, (1, 2), (4, 5), "PER")
    with pytest.raises(
        ValueError, match="padding must be True, False, 'longest', 'max_length' or 'do_not_pad'"
    ):
        processor(words, (1, 2), (4, 5), padding="shortest")
    with pytest.raises(ValueError, match="do not stack into a tensor without padding"):
        processor(examples(), padding=False)
    with pytest.raises(ValueError, match="return_tensors must be 'pt', 'np' or None"):
        processor(examples(), return_tensors="tf")
    with pytest.raises(ValueError, match="got no examples"):
        processor([])
    with pytest.raises(TypeError, match="Expected a RelationExample, a dict"):
        processor([42])
    with pytest.raises(TypeError, match="needs a tokenizer"):
        RelationProcessor(None)
    with pytest.raises(ValueError, match="differ from the processor's"):
        RelationDataCollator(processor=processor, marker_scheme="entity_marker")
