"""Span-annotated summaries: dataset format, prompt building, token-level unfaithful masks, collation.

Span-level fine-tuning for faithful summarisation trains a causal LM on summaries whose unfaithful
(hallucinated) spans are labelled at character level. This module turns such rows into the tensors the
[`hf_contrastive.faithfulness.trainer.SpanUnlikelihoodTrainer`] needs.

Dataset format (one row per summary; a `datasets.Dataset` or a list of dicts):

================  ===========================================================================================
column            meaning
================  ===========================================================================================
`document`      the source text (str)
`summary`       the summary to train on or to score (non-empty str)
`spans`         unfaithful spans as character offsets into `summary`: a list of `[start, end)` pairs
                  (or dicts with `start`/`end`), within `0 <= start < end <= len(summary)`, not
                  overlapping; `[]` for a fully faithful summary
`reference`     optional: a faithful reference summary of the same document
================  ===========================================================================================

[`SpanFeatureBuilder`] turns a row into `input_ids` (prompt + summary + EOS), `labels` (-100 on the
prompt, the summary ids elsewhere) and `unfaithful_mask` (1 on summary tokens that overlap an unfaithful
span, even partly). Offsets come from the tokenizer's offset mapping, so a fast tokenizer is required.
[`SpanDataCollator`] pads all four fields; packing and padding-free batches are refused by the trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "UNFAITHFUL_MASK",
    "DEFAULT_INSTRUCTION",
    "SpanExample",
    "normalize_spans",
    "validate_span_example",
    "build_summary_prompt",
    "token_span_mask",
    "SpanFeatureBuilder",
    "SpanDataCollator",
]

UNFAITHFUL_MASK = "unfaithful_mask"
DEFAULT_INSTRUCTION = "Summarize the following article in one sentence."


@dataclass
class SpanExample:
    """One span-annotated summary (see the module docstring for the meaning of each field)."""

    document: str
    summary: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    reference: str | None = None

    def __post_init__(self) -> None:
        self.spans = normalize_spans(self.spans, self.summary)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SpanExample:
        for key in ("document", "summary"):
            if key not in row:
                raise ValueError(f"A span example needs a {key!r} column; got columns {sorted(row)}.")
        return cls(
            document=row["document"],
            summary=row["summary"],
            spans=row.get("spans") or [],
            reference=row.get("reference"),
        )

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "document": self.document,
            "summary": self.summary,
            "spans": [list(s) for s in self.spans],
        }
        if self.reference is not None:
            row["reference"] = self.reference
        return row

    def span_texts(self) -> list[str]:
        return [self.summary[s:e] for s, e in self.spans]


def normalize_spans(spans: Iterable[Any] | None, summary: str) -> list[tuple[int, int]]:
    """Validate character spans against `summary`; return them as sorted `(start, end)` tuples.

    Raises `ValueError` for an empty summary, a span outside `[0, len(summary)]`, an empty or reversed span,
    or overlapping spans; `TypeError` for a span that is not a pair of ints (or a `start`/`end` dict).
    """
    if not isinstance(summary, str):
        raise TypeError(f"`summary` must be a str, got {type(summary).__name__}.")
    if not summary.strip():
        raise ValueError("Empty summary: a span example needs a non-empty `summary`.")
    out: list[tuple[int, int]] = []
    for span in spans or []:
        if isinstance(span, Mapping):
            if "start" not in span or "end" not in span:
                raise TypeError(f"A span dict needs 'start' and 'end' keys, got {dict(span)}.")
            start, end = span["start"], span["end"]
        else:
            try:
                start, end = span
            except (TypeError, ValueError):
                raise TypeError(
                    f"A span must be a (start, end) pair of character offsets, got {span!r}."
                ) from None
        if (
            isinstance(start, bool)
            or isinstance(end, bool)
            or not (isinstance(start, int) and isinstance(end, int))
        ):
            raise TypeError(f"Span offsets must be ints, got ({start!r}, {end!r}).")
        if not 0 <= start < end <= len(summary):
            raise ValueError(
                f"Span ({start}, {end}) lies outside the summary of {len(summary)} characters or is empty; "
                f"expected 0 <= start < end <= {len(summary)}."
            )
        out.append((int(start), int(end)))
    out.sort()
    for (s0, e0), (s1, e1) in zip(out, out[1:]):
        if s1 < e0:
            raise ValueError(f"Spans ({s0}, {e0}) and ({s1}, {e1}) overlap; expected disjoint spans.")
    return out


def validate_span_example(row: Mapping[str, Any]) -> SpanExample:
    """Check one dataset row and return it as a [`SpanExample`]."""
    return SpanExample.from_row(row)


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_summary_prompt(
    tokenizer: Any,
    document: str,
    instruction: str = DEFAULT_INSTRUCTION,
    use_chat_template: bool | None = None,
    system_prompt: str | None = None,
) -> tuple[str, str]:
    """The prompt text for summarising `document` and the prefix the summary follows.

    With a chat template (used by default when the tokenizer has one) the prompt is the rendered user turn
    with the generation prompt; the summary is the assistant answer and follows it directly (prefix `""`).
    Without one, the prompt is `"{instruction}\\n\\n{document}\\n\\nSummary:"` and the summary follows a space.

    Returns:
        `(prompt, prefix)`: the summary's text starts right after `prompt + prefix`.
    """
    if not isinstance(document, str):
        raise TypeError(f"`document` must be a str, got {type(document).__name__}.")
    chat = _has_chat_template(tokenizer) if use_chat_template is None else use_chat_template
    if chat:
        if not _has_chat_template(tokenizer):
            raise ValueError("use_chat_template=True but the tokenizer has no chat_template.")
        messages = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": f"{instruction}\n\n{document}"})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return prompt, ""
    return f"{instruction}\n\n{document}\n\nSummary:", " "


def token_span_mask(
    offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]], shift: int = 0
) -> list[int]:
    """1 for each token whose character range overlaps a span (a token partly inside counts as inside).

    Args:
        offsets (`Sequence[Sequence[int]]`): `[(start, end), ...]` per token, as the fast tokenizer's `offset_mapping` gives them.
            Zero-width tokens (special tokens, `start == end`) are never inside.
        spans (`Sequence[tuple[int, int]]`): character spans `[(start, end), ...]` in the same text, shifted by `shift`.
        shift (`int`, *optional*, defaults to `0`): added to every span offset (the position of the summary in the tokenised text).
    """
    mask = []
    shifted = [(s + shift, e + shift) for s, e in spans]
    for start, end in offsets:
        inside = end > start and any(start < e and end > s for s, e in shifted)
        mask.append(1 if inside else 0)
    return mask


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "Span masks need a fast tokenizer with offset mapping (`return_offsets_mapping=True`); got "
            f"{type(tokenizer).__name__}, a slow tokenizer. Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
        )


@dataclass
class SpanFeatureBuilder:
    """Tokenise span-annotated summaries into `input_ids`, `labels` and `unfaithful_mask`.

    Args:
        tokenizer (`Any`): a fast tokenizer (offsets are required).
        max_length (`int | None`, *optional*, defaults to `512`): total length cap (prompt + summary + EOS). The document is cut first so the summary fits;
            if the summary alone is longer, the sequence is cut at the end and the mask is cut with it.
        max_document_tokens (`int | None`, *optional*): cut the document to this many tokens before building the prompt (None: no cut).
        instruction, use_chat_template, system_prompt: see [`build_summary_prompt`].
        add_eos (`bool`, *optional*, defaults to `True`): append the EOS token after the summary (labelled, never unfaithful).

    `__call__(row)` returns a dict of int lists of equal length; `labels` is -100 on prompt tokens.
    `map(dataset)` applies it to a `datasets.Dataset` (columns replaced) or a list of rows.

    A summary cut by `max_length` can lose every unfaithful token of its spans; the row would then train
    as a faithful summary. Each such row is logged at WARNING (once per `map` call, with the count) and
    counted in `spans_cut_off`, the number of rows built so far whose spans were all cut away.
    """

    tokenizer: Any
    max_length: int | None = 512
    max_document_tokens: int | None = None
    instruction: str = DEFAULT_INSTRUCTION
    use_chat_template: bool | None = None
    system_prompt: str | None = None
    add_eos: bool = True
    spans_cut_off: int = field(default=0, init=False, compare=False)
    _quiet: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_fast(self.tokenizer)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"`max_length` must be >= 2 or None, got {self.max_length}.")
        if self.max_document_tokens is not None and self.max_document_tokens < 1:
            raise ValueError(f"`max_document_tokens` must be >= 1 or None, got {self.max_document_tokens}.")

    def truncate_document(self, document: str) -> str:
        """Cut `document` to at most `max_document_tokens` tokens (at a token boundary)."""
        if self.max_document_tokens is None:
            return document
        enc = self.tokenizer(document, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= self.max_document_tokens:
            return document
        return document[: offsets[self.max_document_tokens - 1][1]]

    def prompt(self, document: str) -> str:
        """The prompt text for `document` (after truncation), as used for training and generation."""
        text, _ = build_summary_prompt(
            self.tokenizer,
            self.truncate_document(document),
            self.instruction,
            self.use_chat_template,
            self.system_prompt,
        )
        return text

    def prompt_ids(self, document: str) -> list[int]:
        text = self.prompt(document)
        # A rendered chat template already holds its special tokens; a plain prompt gets the tokenizer's own.
        chat = (
            _has_chat_template(self.tokenizer) if self.use_chat_template is None else self.use_chat_template
        )
        return list(self.tokenizer(text, add_special_tokens=not chat)["input_ids"])

    def __call__(self, row: Mapping[str, Any] | SpanExample) -> dict[str, list[int]]:
        example = row if isinstance(row, SpanExample) else SpanExample.from_row(row)
        _, prefix = build_summary_prompt(
            self.tokenizer, "", self.instruction, self.use_chat_template, self.system_prompt
        )
        completion = prefix + example.summary
        enc = self.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        if "offset_mapping" not in enc:
            raise ValueError(f"{type(self.tokenizer).__name__} returned no offset mapping.")
        summary_ids = list(enc["input_ids"])
        mask = token_span_mask(enc["offset_mapping"], example.spans, shift=len(prefix))
        if self.add_eos:
            eos = self.tokenizer.eos_token_id
            if eos is None:
                raise ValueError("add_eos=True but the tokenizer has no eos_token_id.")
            summary_ids.append(int(eos))
            mask.append(0)
        prompt_ids = self.prompt_ids(example.document)
        if self.max_length is not None and len(prompt_ids) + len(summary_ids) > self.max_length:
            room = self.max_length - len(summary_ids)
            if room >= 1:
                # Keep the prompt's end (the chat template's assistant header) and cut the document's tail.
                prompt_ids = self._shorter_prompt(example.document, room)
            if len(prompt_ids) + len(summary_ids) > self.max_length:
                keep = max(self.max_length - len(prompt_ids), 1)
                had_spans = any(mask)
                summary_ids, mask = summary_ids[:keep], mask[:keep]
                prompt_ids = prompt_ids[: self.max_length - len(summary_ids)]
                if had_spans and not any(mask):
                    # Every unfaithful token fell after the cut: the row now looks faithful.
                    self.spans_cut_off += 1
                    if not self._quiet:
                        logger.warning(
                            "max_length=%d cuts the summary %r before its unfaithful span(s): the row trains as a "
                            "faithful summary. Raise max_length or max_document_tokens, or drop the row.",
                            self.max_length,
                            example.summary[:60],
                        )
        input_ids = prompt_ids + summary_ids
        labels = [-100] * len(prompt_ids) + summary_ids
        return {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": labels,
            UNFAITHFUL_MASK: [0] * len(prompt_ids) + mask,
        }

    def _shorter_prompt(self, document: str, room: int) -> list[int]:
        """Prompt ids whose document is cut (token-wise) so that the prompt fits in `room` tokens."""
        ids = self.prompt_ids(document)
        if len(ids) <= room:
            return ids
        enc = self.tokenizer(
            self.truncate_document(document), add_special_tokens=False, return_offsets_mapping=True
        )
        offsets = enc["offset_mapping"]
        keep = max(len(offsets) - (len(ids) - room), 0)
        while True:
            cut = document[: offsets[keep - 1][1]] if keep > 0 else ""
            text, _ = build_summary_prompt(
                self.tokenizer, cut, self.instruction, self.use_chat_template, self.system_prompt
            )
            chat = (
                _has_chat_template(self.tokenizer)
                if self.use_chat_template is None
                else self.use_chat_template
            )
            ids = list(self.tokenizer(text, add_special_tokens=not chat)["input_ids"])
            if len(ids) <= room or keep == 0:
                return ids
            keep = max(keep - (len(ids) - room), 0)

    def map(self, dataset: Any, keep_columns: Sequence[str] = ()) -> Any:
        """Apply the builder to a `datasets.Dataset` (other columns dropped unless kept) or a list of rows."""
        if isinstance(dataset, list):
            before = self.spans_cut_off
            self._quiet = True
            try:
                rows = [{**{k: r[k] for k in keep_columns if k in r}, **self(r)} for r in dataset]
            finally:
                self._quiet = False
            self._warn_cut_off(self.spans_cut_off - before, len(dataset))
            return rows
        missing = {"document", "summary"} - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"Span dataset lacks column(s) {sorted(missing)}; expected document, summary, spans "
                f"(optional reference); got {dataset.column_names}."
            )
        drop = [c for c in dataset.column_names if c not in keep_columns]
        before = self.spans_cut_off
        self._quiet = True
        try:
            out = dataset.map(self, remove_columns=drop, desc="Building span masks")
        finally:
            self._quiet = False
        self._warn_cut_off(self.spans_cut_off - before, len(dataset))
        return out

    def _warn_cut_off(self, n: int, total: int) -> None:
        if n:
            logger.warning(
                "max_length=%d cut every unfaithful span of %d of %d summaries: those rows train as faithful "
                "summaries (counted in SpanFeatureBuilder.spans_cut_off). Raise max_length or "
                "max_document_tokens, or drop those rows.",
                self.max_length,
                n,
                total,
            )


@dataclass
class SpanDataCollator:
    """Pad `input_ids` / `attention_mask` / `labels` / `unfaithful_mask` to the longest row.

    Padding values: `pad_token_id`, 0, -100 and 0. Rows without an `unfaithful_mask` get zeros; rows
    without `labels` are labelled with their ids. Right padding by default.

    Returns `[B, L]` long tensors.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.pad_token_id is None:
            raise ValueError("SpanDataCollator needs a pad_token_id (set tokenizer.pad_token).")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {self.padding_side!r}.")

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("SpanDataCollator got an empty batch.")
        if "input_ids" not in features[0]:
            raise ValueError(f"SpanDataCollator expects 'input_ids' in each row, got {sorted(features[0])}.")
        rows = []
        for f in features:
            ids = [int(x) for x in f["input_ids"]]
            labels = [int(x) for x in f["labels"]] if f.get("labels") is not None else list(ids)
            mask = (
                [int(x) for x in f[UNFAITHFUL_MASK]] if f.get(UNFAITHFUL_MASK) is not None else [0] * len(ids)
            )
            attn = (
                [int(x) for x in f["attention_mask"]]
                if f.get("attention_mask") is not None
                else [1] * len(ids)
            )
            if not len(ids) == len(labels) == len(mask) == len(attn):
                raise ValueError(
                    f"Row fields differ in length: input_ids {len(ids)}, labels {len(labels)}, "
                    f"{UNFAITHFUL_MASK} {len(mask)}, attention_mask {len(attn)}."
                )
            rows.append((ids, attn, labels, mask))
        width = max(len(r[0]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pads = (self.pad_token_id, 0, -100, 0)
        out = [torch.full((len(rows), width), p, dtype=torch.long) for p in pads]
        for i, row in enumerate(rows):
            n = len(row[0])
            sl = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            for tensor, values in zip(out, row):
                tensor[i, sl] = torch.tensor(values, dtype=torch.long)
        return dict(zip(("input_ids", "attention_mask", "labels", UNFAITHFUL_MASK), out))
