"""Loaders, entity marking, K-shot sampling, episodes and the collator; bad input raises clearly."""

from __future__ import annotations

import logging
import random

import pytest
from tiny_models import bert_tokenizer

from hf_contrastive.relation.data import (
    SEMEVAL_LABELS,
    RelationDataCollator,
    RelationExample,
    load_fewrel,
    load_semeval2010,
    load_unlabelled_relation_text,
    mark_two_entities,
    mark_words,
    marker_tokens,
    parse_marked_sentence,
    sample_episodes,
    sample_k_shot,
)

from .helpers import LABELS, examples


def test_parse_marked_sentence():
    tokens, e1, e2 = parse_marked_sentence("The <e1>company</e1> fabricates plastic <e2>chairs</e2>.")
    assert tokens == ["The", "company", "fabricates", "plastic", "chairs", "."]
    assert (e1, e2) == ((1, 2), (4, 5))


@pytest.mark.parametrize(
    "text, match",
    [
        ("The <e1>company</e1> fabricates plastic chairs.", "exactly once"),
        ("The <e1>company</e1> makes <e1>x</e1> <e2>chairs</e2>.", "exactly once"),
        ("The <e1>big <e2>company</e2></e1> works.", "overlap"),
        ("The </e1>company<e1> makes <e2>chairs</e2>.", "closes before it opens"),
        ("The <e1></e1> makes <e2>chairs</e2>.", "empty"),
    ],
)
def test_bad_marked_sentences(text, match):
    with pytest.raises(ValueError, match=match):
        parse_marked_sentence(text)


def test_overlapping_spans_and_label_outside_schema(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        RelationExample("a b c d".split(), (0, 2), (1, 3))
    f = tmp_path / "TRAIN_FILE.TXT"
    f.write_text('1\t"The <e1>a</e1> and <e2>b</e2>."\nFriend-Of(e1,e2)\nComment:\n\n')
    with pytest.raises(ValueError, match="not in the schema"):
        load_semeval2010("train", path=f)


def test_k_shot_seeded_and_short_relations(caplog):
    data = examples() * 3
    for i, e in enumerate(data):
        data[i] = RelationExample(**{**e.to_dict(), "id": str(i)})
    a = sample_k_shot(data, 2, seed=1)
    b = sample_k_shot(data, 2, seed=1)
    assert [e.id for e in a] == [e.id for e in b]
    assert all(sum(e.label == lab for e in a) == 2 for lab in {e.label for e in data})
    with caplog.at_level(logging.WARNING):
        c = sample_k_shot(data, 10, seed=0)
    assert len(c) == len(data)  # every label has 6 < 10: all are used
    assert "fewer than k=10: using all of them" in caplog.text
    with pytest.raises(ValueError, match="not in the schema"):
        sample_k_shot(data, 1, labels=["Other"])


def test_episodes_disjoint_and_sized():
    data = {
        r: [RelationExample(["w", "x", str(i)], (0, 1), (1, 2), label=r, id=f"{r}{i}") for i in range(6)]
        for r in "abcdef"
    }
    eps = sample_episodes(data, n_way=3, k_shot=2, n_query=2, n_episodes=5, seed=0)
    assert len(eps) == 5
    for ep in eps:
        assert len(ep.relations) == 3 and all(len(s) == 2 for s in ep.support)
        assert len(ep.query) == 6
        support_ids = {e.id for s in ep.support for e in s}
        assert not support_ids & {e.id for e in ep.query}
        for q, lab in zip(ep.query, ep.query_labels):
            assert q.label == ep.relations[lab]
    with pytest.raises(ValueError, match="fewer than k_shot"):
        sample_episodes(data, 3, 5, n_query=2)


@pytest.mark.parametrize("scheme", ["entity_marker", "typed_entity_marker", "typed_entity_marker_punct"])
def test_collator_marker_positions(tmp_path, scheme):
    tok = bert_tokenizer(tmp_path)
    tok.add_tokens(marker_tokens(scheme), special_tokens=True)
    if scheme == "typed_entity_marker_punct":
        tok.add_tokens(["@", "#", "*", "^", "entity"])  # the tiny vocabulary lacks them
    collate = RelationDataCollator(
        tok, marker_scheme=scheme, label2id={lab: i for i, lab in enumerate(LABELS)}
    )
    batch = collate(examples())
    assert batch["entity_positions"].shape == (6, 4)
    opens = {
        "entity_marker": ("[E1]", "[E2]"),
        "typed_entity_marker": ("[S:ENTITY]", "[O:ENTITY]"),
        "typed_entity_marker_punct": ("@", "#"),
    }[scheme]
    for row, pos in zip(batch["input_ids"], batch["entity_positions"]):
        toks = tok.convert_ids_to_tokens(row.tolist())
        assert toks[pos[0]] == opens[0] and toks[pos[2]] == opens[1]
    assert batch["labels"].tolist() == [0, 1, 2, 0, 2, 1]


def test_collator_crops_long_sentences(tmp_path):
    tok = bert_tokenizer(tmp_path)
    tok.add_tokens(marker_tokens("typed_entity_marker"), special_tokens=True)
    words = ["park"] * 60 + ["dog", "runs", "cat"] + ["park"] * 60
    ex = RelationExample(words, (60, 61), (62, 63))
    enc = RelationDataCollator(tok, max_length=16).encode(ex)
    assert len(enc["input_ids"]) == 16
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert [toks[p] for p in enc["entity_positions"]] == [
        "[S:ENTITY]",
        "[/S:ENTITY]",
        "[O:ENTITY]",
        "[/O:ENTITY]",
    ]
    with pytest.raises(ValueError, match="raise max_length"):
        RelationDataCollator(tok, max_length=8).encode(RelationExample(words, (0, 1), (100, 101)))
    with pytest.raises(ValueError, match="lacks the marker tokens"):
        RelationDataCollator(bert_tokenizer(tmp_path / "t2"))


def test_typed_markers_need_known_types():
    ex = RelationExample("a b c".split(), (0, 1), (2, 3), subject_type="PERSON")
    words, pos = mark_words(ex, "typed_entity_marker", entity_types=["PERSON"])
    assert words[pos[0]] == "[S:PERSON]" and words[pos[2]] == "[O:ENTITY]"
    with pytest.raises(ValueError, match="not among the configured entity types"):
        mark_words(ex, "typed_entity_marker")


@pytest.mark.integration
def test_real_loaders(shared_data):
    train = load_semeval2010("train", path=shared_data / "relation" / "semeval2010")
    test = load_semeval2010("test", path=shared_data / "relation" / "semeval2010")
    assert (len(train), len(test)) == (8000, 2717)
    assert {e.label for e in test} == set(SEMEVAL_LABELS)
    fewrel = load_fewrel("val_wiki", path=shared_data / "relation" / "fewrel")
    assert len(fewrel) == 16 and all(len(v) == 700 for v in fewrel.values())


def test_unlabelled_relation_text(tmp_path):
    semeval = tmp_path / "TRAIN_FILE.TXT"
    semeval.write_text(
        '1\t"The <e1>fire</e1> was caused by <e2>lightning</e2>."\nCause-Effect(e2,e1)\nComment:\n\n'
        '2\t"A <e1>wheel</e1> of the <e2>car</e2>."\nComponent-Whole(e1,e2)\nComment:\n\n'
    )
    rows = load_unlabelled_relation_text("semeval2010", path=semeval, exclude_ids={"2"})
    assert [(e.id, e.label, e.subject_text, e.object_text) for e in rows] == [
        ("1", None, "fire", "lightning")
    ]
    text = tmp_path / "wiki.txt"
    text.write_text(
        "Paris is the capital city of France and its largest city .\n"
        "too short line\n"
        "the of and to in on at by for with from as is are\n"
    )
    rows = load_unlabelled_relation_text("text", path=text, seed=3)
    assert len(rows) == 1 and rows[0].label is None  # the short and the stop-word lines give no pair
    e = rows[0]
    words = e.tokens
    for span in (e.subject, e.object):
        assert span[1] == span[0] + 1
        w = words[span[0]]
        assert w.isalpha() and len(w) >= 3 and w.lower() not in {"the", "and", "its"}
    assert 2 <= e.object[0] - e.subject[0] <= 9  # at least one word between, at most max_gap
    assert words[e.subject[0]] == "France"  # a capitalised word past the first is preferred as the first
    assert mark_two_entities("a b".split(), random.Random(0)) is None
    with pytest.raises(ValueError, match="source must be"):
        load_unlabelled_relation_text("wiki")
    with pytest.raises(ValueError, match="needs path"):
        load_unlabelled_relation_text("text")
