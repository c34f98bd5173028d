"""Span annotation of summaries: which character spans of a summary are unfaithful to its document.

Two annotators share the [`SpanAnnotator`] interface (`annotate(document, summary)` returns a
[`SpanAnnotation`] or None when nothing can be said):

- [`PerturbationAnnotator`] makes an unfaithful summary with known spans from a faithful one by swapping
  an entity, a number or a date for another one of the document, or by flipping a negation, in the way
  FactCC-style synthetic data is built (Kryscinski et al. 2020). The span is exactly the changed text.
- [`LLMJudgeAnnotator`] asks a text-generation model (a `transformers` model with its tokenizer, a
  `pipeline`, or any `str -> str` callable) for the hallucinated spans as JSON and maps the quoted texts back
  to character offsets. Malformed output never stops a run: the summary is skipped and the reason logged and kept
  in `annotator.skipped`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Pipeline, PreTrainedModel

from hf_contrastive.faithfulness.spans import SpanExample, normalize_spans

logger = logging.getLogger(__name__)

__all__ = [
    "SpanAnnotation",
    "SpanAnnotator",
    "PerturbationAnnotator",
    "LLMJudgeAnnotator",
    "JudgeOutputError",
    "parse_judge_output",
    "DEFAULT_JUDGE_PROMPT",
    "PERTURBATION_KINDS",
    "load_summary_jsonl",
    "load_summary_splits",
]

PERTURBATION_KINDS = ("entity", "number", "date", "negation")


@dataclass
class SpanAnnotation:
    """An annotated summary: the (possibly rewritten) `summary` and its unfaithful `spans`.

    `kind` names how it was made (`"entity"`, `"number"`, `"date"`, `"negation"`, `"judge"`);
    `original` / `replacement` hold the swapped texts of a perturbation.
    """

    summary: str
    spans: list[tuple[int, int]]
    kind: str = "judge"
    original: str | None = None
    replacement: str | None = None

    def __post_init__(self) -> None:
        self.spans = normalize_spans(self.spans, self.summary)

    def span_texts(self) -> list[str]:
        return [self.summary[s:e] for s, e in self.spans]

    def to_example(self, document: str, reference: str | None = None) -> SpanExample:
        return SpanExample(
            document=document, summary=self.summary, spans=list(self.spans), reference=reference
        )


class SpanAnnotator(ABC):
    """Interface: find (or make) the unfaithful spans of a summary.

    Subclasses implement [`annotate`]; [`annotate_many`] runs it over rows, skipping the ones that give
    None, logging why and keeping `(index, reason)` pairs in `self.skipped`.
    """

    def __init__(self) -> None:
        self.skipped: list[tuple[int, str]] = []
        self._last_reason: str | None = None

    @abstractmethod
    def annotate(self, document: str, summary: str) -> SpanAnnotation | None:
        """Return the annotation of `summary` against `document`, or None (reason in `last_reason`)."""

    @property
    def last_reason(self) -> str | None:
        return self._last_reason

    def _skip(self, reason: str) -> None:
        self._last_reason = reason
        return None

    def annotate_many(
        self,
        rows: Iterable[Mapping[str, Any]],
        document_key: str = "document",
        summary_key: str = "summary",
        keep_reference: bool = True,
    ) -> list[SpanExample]:
        """Annotate `rows`; return [`SpanExample`] rows (`reference` = the input summary if kept)."""
        out = []
        for i, row in enumerate(rows):
            for key in (document_key, summary_key):
                if key not in row:
                    raise ValueError(f"Row {i} lacks the {key!r} column; got {sorted(row)}.")
            self._last_reason = None
            try:
                ann = self.annotate(row[document_key], row[summary_key])
            except ValueError as err:  # e.g. an empty summary: skip it, never stop the run
                ann, self._last_reason = None, str(err)
            if ann is None:
                reason = self._last_reason or "no annotation"
                self.skipped.append((i, reason))
                logger.info("Skipping row %d: %s", i, reason)
                continue
            out.append(ann.to_example(row[document_key], row[summary_key] if keep_reference else None))
        return out


# ---------------------------------------------------------------------------------------------------------------
# Perturbation annotator
# ---------------------------------------------------------------------------------------------------------------

_MONTHS = "January February March April May June July August September October November December".split()
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_NUMBER_WORDS = (
    "two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty hundred "
    "thousand million billion"
).split()
_NOT_ENTITIES = set(
    (
        "A An The In On At It Its He She They We I You His Her Their Our This That These Those There Here "
        "When While After Before As But And Or If For From With By Of To Mr Mrs Ms Dr Sir Lord Prof "
        "BBC"  # names every XSum summary could carry; swapping it says nothing about faithfulness
    ).split()
)
_ENTITY_RE = re.compile(r"\b[A-Z][\w'’\-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'’\-]*)*")
_NUMBER_RE = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_YEAR_RE = re.compile(r"^(1[89]\d\d|20\d\d)$")
_AUX_RE = re.compile(
    r"\b(is|are|was|were|has|have|had|will|would|could|should|can|did|does|do|must|may)\b(?!\s+not\b|n't)"
)
_NEG_RE = re.compile(
    r"\b(is|are|was|were|has|have|had|will|would|could|should|did|does|do|must|may)\s+not\b|\bcannot\b"
)


def _find_entities(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _ENTITY_RE.finditer(text):
        words = m.group(0).split()
        # Drop a leading function word that is capitalised only because it starts a sentence.
        start = m.start()
        while words and words[0] in _NOT_ENTITIES:
            start = text.index(words[1], start + len(words[0])) if len(words) > 1 else m.end()
            words = words[1:]
        if not words:
            continue
        value = text[start : m.end()]
        if value in _MONTHS or value in _WEEKDAYS or len(value) < 2:
            continue
        out.append((start, m.end(), value))
    return out


def _find_numbers(text: str) -> list[tuple[int, int, str]]:
    out = [
        (m.start(), m.end(), m.group(0)) for m in _NUMBER_RE.finditer(text) if not _YEAR_RE.match(m.group(0))
    ]
    for w in _NUMBER_WORDS:
        for m in re.finditer(rf"\b{w}\b", text, flags=re.IGNORECASE):
            out.append((m.start(), m.end(), m.group(0)))
    return sorted(out)


def _find_dates(text: str) -> list[tuple[int, int, str]]:
    out = []
    for names in (_MONTHS, _WEEKDAYS):
        for w in names:
            out += [(m.start(), m.end(), m.group(0)) for m in re.finditer(rf"\b{w}\b", text)]
    out += [(m.start(), m.end(), m.group(0)) for m in _NUMBER_RE.finditer(text) if _YEAR_RE.match(m.group(0))]
    return sorted(out)


class PerturbationAnnotator(SpanAnnotator):
    """Make an unfaithful summary with a known span from a faithful one (FactCC-style perturbations).

    Args:
        kinds (`Sequence[str]`, *optional*, defaults to `PERTURBATION_KINDS`): perturbations to try, in a random order per summary: `"entity"` (swap a named entity of the
            summary for another one of the document), `"number"` (swap a number for another of the document, or
            change it), `"date"` (swap a month, weekday or year), `"negation"` (insert or remove `not`).
        seed (`int`, *optional*, defaults to `0`): seed of the random choices (the same seed and inputs give the same perturbations).
        prefer_document (`bool`, *optional*, defaults to `True`): take replacements from the document when it has some (FactCC's choice: the wrong
            entity is plausible because the document mentions it), else make one up (numbers, dates).

    `annotate` returns the perturbed summary with one span covering exactly the inserted text, or None
    (`last_reason` says why) when no perturbation of `kinds` applies.
    """

    def __init__(
        self, kinds: Sequence[str] = PERTURBATION_KINDS, seed: int = 0, prefer_document: bool = True
    ):
        super().__init__()
        kinds = tuple(kinds)
        unknown = sorted(set(kinds) - set(PERTURBATION_KINDS))
        if not kinds or unknown:
            raise ValueError(f"`kinds` must be a non-empty subset of {PERTURBATION_KINDS}, got {kinds}.")
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.prefer_document = prefer_document

    def annotate(self, document: str, summary: str) -> SpanAnnotation | None:
        """Perturb `summary` with material from `document`; the span covers the changed text (None: skipped)."""
        if not isinstance(summary, str) or not summary.strip():
            return self._skip("empty summary")
        if not isinstance(document, str):
            raise TypeError(f"`document` must be a str, got {type(document).__name__}.")
        order = list(self.kinds)
        self.rng.shuffle(order)
        for kind in order:
            ann = getattr(self, f"_{kind}")(document, summary)
            if ann is not None:
                return ann
        return self._skip(f"no {'/'.join(self.kinds)} perturbation applies")

    def _replace(self, summary: str, start: int, end: int, new: str, kind: str) -> SpanAnnotation:
        text = summary[:start] + new + summary[end:]
        return SpanAnnotation(text, [(start, start + len(new))], kind, summary[start:end], new)

    def _swap(self, document, summary, finder, kind, make_up=None) -> SpanAnnotation | None:
        found = finder(summary)
        if not found:
            return None
        self.rng.shuffle(found)
        in_summary = {v.lower() for _, _, v in found}
        pool = sorted({v for _, _, v in finder(document) if v.lower() not in in_summary})
        for start, end, value in found:
            candidates = [c for c in pool if c.lower() != value.lower()] if self.prefer_document else []
            if candidates:
                return self._replace(summary, start, end, self.rng.choice(candidates), kind)
            if make_up is not None:
                new = make_up(value)
                if new is not None and new.lower() != value.lower():
                    return self._replace(summary, start, end, new, kind)
        return None

    def _entity(self, document: str, summary: str) -> SpanAnnotation | None:
        return self._swap(document, summary, _find_entities, "entity")

    def _number(self, document: str, summary: str) -> SpanAnnotation | None:
        def make_up(value: str) -> str | None:
            digits = value.replace(",", "")
            if not re.fullmatch(r"\d+(?:\.\d+)?", digits):
                return None
            number = float(digits)
            factor = self.rng.choice((2, 3, 0.5))
            new = number * factor if number > 1 else number + self.rng.randint(2, 9)
            return f"{new:g}" if "." in digits else str(int(round(new)))

        return self._swap(document, summary, _find_numbers, "number", make_up)

    def _date(self, document: str, summary: str) -> SpanAnnotation | None:
        def make_up(value: str) -> str | None:
            for names in (_MONTHS, _WEEKDAYS):
                if value in names:
                    return self.rng.choice([n for n in names if n != value])
            if _YEAR_RE.match(value):
                return str(int(value) + self.rng.choice((-3, -2, -1, 1, 2, 3)))
            return None

        return self._swap(document, summary, _find_dates, "date", make_up)

    def _negation(self, document: str, summary: str) -> SpanAnnotation | None:
        negated = list(_NEG_RE.finditer(summary))
        if negated:
            m = self.rng.choice(negated)
            new = "can" if m.group(0) == "cannot" else m.group(1)
            return self._replace(summary, m.start(), m.end(), new, "negation")
        aux = list(_AUX_RE.finditer(summary))
        if not aux:
            return None
        m = self.rng.choice(aux)
        new = "cannot" if m.group(1) == "can" else f"{m.group(1)} not"
        return self._replace(summary, m.start(), m.end(), new, "negation")


# ---------------------------------------------------------------------------------------------------------------
# LLM-judge annotator
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_JUDGE_PROMPT = (
    "You check summaries for faithfulness. List every span of the summary that is not supported by the "
    "document (hallucinated names, numbers, dates, events, negations). Copy each span exactly as it appears in "
    'the summary. Answer with JSON only: {{"hallucinated_spans": ["span", ...]}} (an empty list if the summary '
    "is faithful).\n\nDocument:\n{document}\n\nSummary:\n{summary}\n\nJSON:"
)


class JudgeOutputError(ValueError):
    """The judge's output could not be read as a list of spans (the message says why)."""


_SPAN_KEYS = ("hallucinated_spans", "unfaithful_spans", "spans", "hallucinations")


def _json_candidates(text: str) -> list[Any]:
    text = re.sub(r"```(?:json)?", "", text)
    decoder = json.JSONDecoder()
    found = []
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text[i:])
            except json.JSONDecodeError:
                continue
            found.append(value)
            if isinstance(value, dict):
                break
    return found


def parse_judge_output(output: str, summary: str) -> tuple[list[tuple[int, int]], list[str]]:
    """Read a judge's JSON answer and map its spans to character offsets in `summary`.

    Accepted forms: `{"hallucinated_spans": [...]}` (or `unfaithful_spans`, `spans`,
    `hallucinations`), or a bare list; items are the span texts, `{"text": ...}` or `{"start", "end"}`.
    Texts are located left to right (exact, then case-insensitive); repeated texts take successive occurrences.

    Returns:
        `(spans, notes)`: the merged, sorted spans and a note per item that could not be placed.

    Raises:
        JudgeOutputError: no JSON, or JSON without a span list.
    """
    if not isinstance(output, str):
        raise JudgeOutputError(f"judge output is {type(output).__name__}, not text")
    candidates = _json_candidates(output)
    if not candidates:
        raise JudgeOutputError(f"no JSON object or list in the judge output: {output[:120]!r}")
    items = None
    for value in candidates:
        if isinstance(value, dict):
            for key in _SPAN_KEYS:
                if key in value:
                    items = value[key]
                    break
        elif isinstance(value, list):
            items = value
        if items is not None:
            break
    if not isinstance(items, list):
        raise JudgeOutputError(
            f"JSON without a span list (expected a key among {_SPAN_KEYS}): {output[:120]!r}"
        )
    spans: list[tuple[int, int]] = []
    notes: list[str] = []
    used_from: dict[str, int] = {}
    lowered = summary.lower()
    for item in items:
        if isinstance(item, dict) and "start" in item and "end" in item:
            s, e = item["start"], item["end"]
            if isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(summary):
                spans.append((s, e))
            else:
                notes.append(f"offsets {s!r}, {e!r} outside the summary")
            continue
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text.strip():
            notes.append(f"item {item!r} is not a span text")
            continue
        text = text.strip()
        begin = used_from.get(text, 0)
        pos = summary.find(text, begin)
        if pos < 0:
            pos = lowered.find(text.lower(), begin)
        if pos < 0:
            notes.append(f"span {text!r} not found in the summary")
            continue
        used_from[text] = pos + len(text)
        spans.append((pos, pos + len(text)))
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged, notes


class LLMJudgeAnnotator(SpanAnnotator):
    """Ask a text-generation model for the hallucinated spans of a summary (JSON) and map them to offsets.

    Args:
        generator (`Any`): a `str -> str` callable; or a `transformers` causal LM (then `tokenizer` is required;
            the prompt goes through the chat template when the tokenizer has one, decoding is greedy); or a
            `text-generation` pipeline.
        tokenizer (`Any`, *optional*): the model's tokenizer (for a model).
        prompt_template (`str`, *optional*, defaults to `DEFAULT_JUDGE_PROMPT`): a `str.format` template with `{document}` and `{summary}`.
        max_new_tokens (`int`, *optional*, defaults to `128`): generation budget for a model or pipeline (default 128).
        skip_unplaced (`bool`, *optional*, defaults to `False`): skip the whole summary when some span the judge quoted is not in it (default False:
            drop those spans, with a logged note, and keep the rest).

    Summaries whose output cannot be parsed are skipped (`annotate` returns None; the reason is logged and,
    through [`annotate_many`], kept in `skipped`). An empty span list gives an annotation without spans.
    """

    def __init__(
        self,
        generator: Any,
        tokenizer: Any = None,
        prompt_template: str = DEFAULT_JUDGE_PROMPT,
        max_new_tokens: int = 128,
        skip_unplaced: bool = False,
    ):
        super().__init__()
        if "{document}" not in prompt_template or "{summary}" not in prompt_template:
            raise ValueError("`prompt_template` must contain {document} and {summary} placeholders.")
        self.prompt_template = prompt_template
        self.max_new_tokens = int(max_new_tokens)
        self.skip_unplaced = skip_unplaced
        self._generate = self._make_generate(generator, tokenizer)

    def _make_generate(self, generator: Any, tokenizer: Any) -> Callable[[str], str]:
        if isinstance(generator, Pipeline):
            return lambda prompt: generator(
                prompt, max_new_tokens=self.max_new_tokens, do_sample=False, return_full_text=False
            )[0]["generated_text"]
        if isinstance(generator, PreTrainedModel) or hasattr(
            getattr(generator, "base_model", None), "generate"
        ):
            if tokenizer is None:
                raise ValueError("A model judge needs its `tokenizer`.")
            return lambda prompt: self._model_generate(generator, tokenizer, prompt)
        if callable(generator):
            return generator
        raise TypeError(
            f"`generator` must be a transformers model, a text-generation pipeline or a callable, got {type(generator).__name__}."
        )

    def _model_generate(self, model: Any, tokenizer: Any, prompt: str) -> str:

        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def annotate(self, document: str, summary: str) -> SpanAnnotation | None:
        """Ask the judge for the unfaithful spans of `summary` (JSON), mapped back to character offsets;
        None with a logged reason when the answer is malformed or the call fails."""
        if not isinstance(summary, str) or not summary.strip():
            return self._skip("empty summary")
        prompt = self.prompt_template.format(document=document, summary=summary)
        try:
            output = self._generate(prompt)
        except Exception as err:  # a failing judge call skips this summary, never the run
            logger.warning("Judge call failed: %s", err)
            return self._skip(f"judge call failed: {type(err).__name__}: {err}")
        try:
            spans, notes = parse_judge_output(output, summary)
        except JudgeOutputError as err:
            logger.warning("Skipping a summary: %s", err)
            return self._skip(str(err))
        for note in notes:
            logger.warning("Judge span dropped: %s", note)
        if notes and self.skip_unplaced:
            return self._skip("; ".join(notes))
        return SpanAnnotation(summary, spans, "judge")


# ---------------------------------------------------------------------------------------------------------------
# Data helpers
# ---------------------------------------------------------------------------------------------------------------


def load_summary_jsonl(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file with `document` and `summary` (XSum layout); empty ones are dropped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Summary file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if "document" not in row or "summary" not in row:
                raise ValueError(
                    f"{path}:{n + 1}: expected 'document' and 'summary' keys, got {sorted(row)}."
                )
            if str(row["document"]).strip() and str(row["summary"]).strip():
                rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def load_summary_splits(
    path: str | Path,
    n_train: int,
    n_validation: int,
    n_test: int,
    seed: int = 0,
    kinds: Sequence[str] = PERTURBATION_KINDS,
    annotator: SpanAnnotator | None = None,
) -> dict[str, list[SpanExample]]:
    """Shuffle a summary file with `seed`, annotate it, and cut disjoint train / validation / test splits.

    Each example holds the document, the unfaithful summary with its spans and, as `reference`, the faithful
    original summary. Rows the annotator skips are left out (documents never appear in two splits).
    """
    for name, n in (("n_train", n_train), ("n_validation", n_validation), ("n_test", n_test)):
        if n < 0:
            raise ValueError(f"`{name}` must be >= 0, got {n}.")
    rows = load_summary_jsonl(path)
    random.Random(seed).shuffle(rows)
    annotator = annotator or PerturbationAnnotator(kinds=kinds, seed=seed)
    wanted = n_train + n_validation + n_test
    examples: list[SpanExample] = []
    for row in rows:
        if len(examples) >= wanted:
            break
        examples += annotator.annotate_many([row])
    if len(examples) < wanted:
        raise ValueError(f"{path} gave {len(examples)} annotated examples; {wanted} were asked for.")
    return {
        "train": examples[:n_train],
        "validation": examples[n_train : n_train + n_validation],
        "test": examples[n_train + n_validation : wanted],
    }
