from __future__ import annotations

import pytest
import torch

from faithfulness.helpers import INSTRUCTION, ROWS, word_tokenizer
from hf_contrastive.faithfulness.spans import (
    UNFAITHFUL_MASK,
    SpanDataCollator,
    SpanExample,
    SpanFeatureBuilder,
    build_summary_prompt,
    normalize_spans,
    token_span_mask,
)


def test_token_partly_inside_a_span_counts_as_inside():
    # tokens: "ab" (0,2), "cd" (3,5), "ef" (6,8); span (4, 7) cuts into "cd" and "ef".
    offsets = [(0, 2), (3, 5), (6, 8), (8, 8)]
    assert token_span_mask(offsets, [(4, 7)]) == [0, 1, 1, 0]
    # touching is not overlapping: span (2, 3) covers only the space between tokens.
    assert token_span_mask(offsets, [(2, 3)]) == [0, 0, 0, 0]
    assert token_span_mask(offsets, [(0, 1)], shift=3) == [0, 1, 0, 0]


@pytest.mark.parametrize(
    "spans, match",
    [
        ([(0, 40)], "outside the summary"),
        ([(-1, 3)], "outside the summary"),
        ([(3, 3)], "outside the summary"),
        ([(0, 5), (4, 8)], "overlap"),
    ],
)
def test_bad_spans_are_refused(spans, match):
    with pytest.raises(ValueError, match=match):
        normalize_spans(spans, "the woman plays guitar")


def test_bad_span_types_and_empty_summary():
    with pytest.raises(TypeError, match="pair"):
        normalize_spans([5], "abc def")
    with pytest.raises(TypeError, match="ints"):
        normalize_spans([(0.0, 2)], "abc def")
    with pytest.raises(ValueError, match="Empty summary"):
        SpanExample("doc", "   ", [])
    assert normalize_spans([{"start": 4, "end": 6}, (0, 2)], "abc def") == [(0, 2), (4, 6)]


def test_slow_tokenizer_is_refused():
    from transformers import ByT5Tokenizer

    with pytest.raises(ValueError, match="fast tokenizer"):
        SpanFeatureBuilder(ByT5Tokenizer())


def test_features_labels_and_mask_follow_the_spans():
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    row = ROWS[0]
    feats = builder(row)
    prompt, prefix = build_summary_prompt(tok, row["document"], INSTRUCTION)
    assert prompt.endswith("assistant :") and prefix == ""
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    summary_ids = tok(row["summary"], add_special_tokens=False)["input_ids"]
    assert feats["input_ids"][n_prompt:] == [*summary_ids, tok.eos_token_id]
    assert feats["labels"] == [-100] * n_prompt + [*summary_ids, tok.eos_token_id]
    # only "london" (the last summary word) is inside the span; EOS never is.
    assert feats[UNFAITHFUL_MASK] == [0] * n_prompt + [0, 0, 0, 0, 0, 1, 0]
    assert tok.convert_ids_to_tokens(
        [feats["input_ids"][i] for i, m in enumerate(feats[UNFAITHFUL_MASK]) if m]
    ) == ["london"]
    # two-word span "was not"
    feats = builder(ROWS[1])
    inside = [feats["input_ids"][i] for i, m in enumerate(feats[UNFAITHFUL_MASK]) if m]
    assert tok.convert_ids_to_tokens(inside) == ["was", "not"]


def test_plain_prompt_without_chat_template_shifts_offsets():
    tok = word_tokenizer(chat=False)
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    feats = builder(ROWS[0])
    inside = [feats["input_ids"][i] for i, m in enumerate(feats[UNFAITHFUL_MASK]) if m]
    assert tok.convert_ids_to_tokens(inside) == ["london"]
    assert builder.prompt(ROWS[0]["document"]).endswith("Summary:")


def test_truncation_cuts_the_document_first_then_the_summary_with_its_mask():
    tok = word_tokenizer()
    full = SpanFeatureBuilder(tok, max_length=None, instruction=INSTRUCTION)(ROWS[0])
    n_summary = sum(1 for x in full["labels"] if x != -100)
    short = SpanFeatureBuilder(tok, max_length=n_summary + 6, instruction=INSTRUCTION)(ROWS[0])
    assert len(short["input_ids"]) <= n_summary + 6
    # the summary, EOS and mask are intact; the document lost words
    assert short["labels"][-n_summary:] == full["labels"][-n_summary:]
    assert short[UNFAITHFUL_MASK][-n_summary:] == full[UNFAITHFUL_MASK][-n_summary:]
    # cut inside the summary: the mask is cut with the ids (still aligned)
    tiny = SpanFeatureBuilder(tok, max_length=4, instruction=INSTRUCTION)(ROWS[0])
    assert len(tiny["input_ids"]) == len(tiny["labels"]) == len(tiny[UNFAITHFUL_MASK]) == 4
    doc_cut = SpanFeatureBuilder(tok, max_length=None, max_document_tokens=3, instruction=INSTRUCTION)
    assert doc_cut.truncate_document(ROWS[0]["document"]) == "the woman plays"


def test_collator_pads_mask_labels_and_ids():
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    feats = [builder(r) for r in ROWS]
    batch = SpanDataCollator(pad_token_id=tok.pad_token_id)(feats)
    width = max(len(f["input_ids"]) for f in feats)
    assert batch["input_ids"].shape == (3, width)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == f["input_ids"]
        assert batch[UNFAITHFUL_MASK][i, :n].tolist() == f[UNFAITHFUL_MASK]
        assert (batch["labels"][i, n:] == -100).all() and (batch[UNFAITHFUL_MASK][i, n:] == 0).all()
        assert batch["attention_mask"][i].sum() == n
    left = SpanDataCollator(pad_token_id=tok.pad_token_id, padding_side="left", pad_to_multiple_of=8)(feats)
    assert left["input_ids"].shape[1] % 8 == 0
    n = len(feats[0]["input_ids"])
    assert left[UNFAITHFUL_MASK][0, -n:].tolist() == feats[0][UNFAITHFUL_MASK]
    with pytest.raises(ValueError, match="differ in length"):
        SpanDataCollator(pad_token_id=0)([{**feats[0], UNFAITHFUL_MASK: [0]}])
    assert torch.equal(
        SpanDataCollator(pad_token_id=0)([{"input_ids": [3, 4]}])["labels"], torch.tensor([[3, 4]])
    )


def test_builder_maps_a_dataset_and_reports_missing_columns():
    from datasets import Dataset

    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    ds = builder.map(Dataset.from_list(ROWS))
    assert set(ds.column_names) == {"input_ids", "attention_mask", "labels", UNFAITHFUL_MASK}
    assert sum(ds[0][UNFAITHFUL_MASK]) == 1
    with pytest.raises(ValueError, match="lacks column"):
        builder.map(Dataset.from_list([{"text": "a"}]))
