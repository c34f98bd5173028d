"""Entity markers: the marker schemes and [`RelationProcessor`], the one place where a relation instance
becomes marked model inputs.

Marker schemes (Zhou and Chen 2022, "An Improved Baseline for Sentence-level Relation Extraction",
the scheme TKRE fine-tunes with):

- `entity_marker`: `[E1] subject [/E1]` and `[E2] object [/E2]` (new tokens);
- `typed_entity_marker`: `[S:TYPE] subject [/S:TYPE]` and `[O:TYPE] object [/O:TYPE]` (new tokens,
  one set per entity type; untyped data uses the default type);
- `typed_entity_marker_punct`: `@ * type * subject @` and `# ^ type ^ object #` (no new tokens).

The processor inserts the markers around the two word spans, tokenises, finds the subject-start and
object-start marker tokens (the states the [`RelationClassifier`] head reads), cuts long sentences to
a window that keeps both entities, and pads. [`RelationDataCollator`], [`MaskedSpanLMCollator`] and
[`RelationClassifier`] all go through it.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transformers import BatchEncoding, ProcessorMixin

from hf_contrastive.core.boundary import cap_max_length, position_limit
from hf_contrastive.relation.example import RelationExample, validate_spans

MARKER_SCHEMES = ("entity_marker", "typed_entity_marker", "typed_entity_marker_punct")

_PADDING = {"longest": "longest", "max_length": "max_length", "do_not_pad": "do_not_pad"}


def marker_tokens(scheme: str, entity_types: Sequence[str] = (), default_type: str = "ENTITY") -> list[str]:
    """The new tokens a scheme adds to the vocabulary (none for `typed_entity_marker_punct`)."""
    if scheme not in MARKER_SCHEMES:
        raise ValueError(f"Unknown marker scheme {scheme!r}; expected one of {MARKER_SCHEMES}.")
    if scheme == "entity_marker":
        return ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    if scheme == "typed_entity_marker":
        types = list(dict.fromkeys([*entity_types, default_type]))
        return [f"[{r}:{t}]" for t in types for r in ("S", "/S", "O", "/O")]
    return []


def mark_words(
    example: RelationExample, scheme: str, entity_types: Sequence[str] = (), default_type: str = "ENTITY"
) -> tuple[list[str], tuple[int, int, int, int]]:
    """Insert the scheme's markers into the words.

    Returns the marked words and the word indices of (subject start marker, subject end marker,
    object start marker, object end marker). The head reads the states at the two start markers.
    """
    if scheme not in MARKER_SCHEMES:
        raise ValueError(f"Unknown marker scheme {scheme!r}; expected one of {MARKER_SCHEMES}.")
    types = set(entity_types) | {default_type}
    stype = example.subject_type or default_type
    otype = example.object_type or default_type
    if scheme == "typed_entity_marker":
        for t in (stype, otype):
            if t not in types:
                raise ValueError(
                    f"Entity type {t!r} (example {example.id}) is not among the configured entity types "
                    f"{sorted(types)}; add it to `entity_types`."
                )
    if scheme == "entity_marker":
        s_open, s_close, o_open, o_close = ["[E1]"], ["[/E1]"], ["[E2]"], ["[/E2]"]
    elif scheme == "typed_entity_marker":
        s_open, s_close = [f"[S:{stype}]"], [f"[/S:{stype}]"]
        o_open, o_close = [f"[O:{otype}]"], [f"[/O:{otype}]"]
    else:
        s_open, s_close = ["@", "*", *stype.lower().split(), "*"], ["@"]
        o_open, o_close = ["#", "^", *otype.lower().split(), "^"], ["#"]
    inserts = {
        example.subject[0]: ("s_open", s_open),
        example.object[0]: ("o_open", o_open),
    }
    closes = {example.subject[1]: ("s_close", s_close), example.object[1]: ("o_close", o_close)}
    words: list[str] = []
    where: dict[str, int] = {}
    for i in range(len(example.tokens) + 1):
        if i in closes:
            name, marks = closes[i]
            where[name] = len(words)
            words.extend(marks)
        if i in inserts:
            name, marks = inserts[i]
            where[name] = len(words)
            words.extend(marks)
        if i < len(example.tokens):
            words.append(example.tokens[i])
    return words, (where["s_open"], where["s_close"], where["o_open"], where["o_close"])


# -- input forms ----------------------------------------------------------------------------------
_FORMS = (
    "a RelationExample, a dict with tokens/subject/object, a (tokens, subject_span, object_span"
    "[, subject_type, object_type]) tuple, or a list of these"
)


def _is_words(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(isinstance(w, str) for w in value)
    )


def _span(value: Any, name: str, where: str) -> tuple[int, int]:
    try:
        if isinstance(value, (str, bytes)) or len(value) != 2:
            raise TypeError
        return operator.index(value[0]), operator.index(value[1])
    except TypeError:
        raise ValueError(
            f"{name} of {where} must be a (start, end) pair of word indices (end exclusive), got {value!r}."
        ) from None


def _from_parts(
    tokens: Any, subject: Any, obj: Any, subject_type: Any, object_type: Any, where: str
) -> RelationExample:
    if not _is_words(tokens):
        raise TypeError(f"The tokens of {where} must be a list of words (str), got {tokens!r}.")
    s, o = _span(subject, "The subject span", where), _span(obj, "The object span", where)
    validate_spans(tokens, s, o, where=where)
    return RelationExample(list(tokens), s, o, subject_type=subject_type, object_type=object_type)


def _is_example_tuple(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and 3 <= len(value) <= 5
        and _is_words(value[0])
        and len(value[0]) > 0
    )


def _one(value: Any, where: str) -> RelationExample:
    if isinstance(value, RelationExample):
        return value
    if isinstance(value, Mapping):
        missing = [k for k in ("tokens", "subject", "object") if k not in value]
        if missing:
            raise ValueError(
                f"A relation example needs keys tokens, subject, object; {where} lacks {missing}."
            )
        _span(value["subject"], "The subject span", where)
        _span(value["object"], "The object span", where)
        return RelationExample.from_dict(value)
    if _is_example_tuple(value):
        return _from_parts(*value, *([None] * (5 - len(value))), where=where)
    raise TypeError(f"Expected {_FORMS}; {where} is a {type(value).__name__}: {value!r:.80}.")


def _per_row(value: Any, n: int, name: str) -> list[Any]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for a batch of {n} sentences; expected {n}.")
    return values


class RelationProcessor(ProcessorMixin):
    r"""Marks, tokenises, truncates and pads relation instances for [`RelationClassifier`] and TKRE.

    Wraps a fast tokenizer with the marker settings. A call inserts the scheme's markers around the
    subject and object word spans, tokenises the marked words, and returns `input_ids`,
    `attention_mask` (and `token_type_ids` when the tokenizer makes them) and `entity_positions`:
    the token indices of the subject-start and object-start markers (for multi-token punctuation
    markers the first token of each). Sentences longer than `max_length` tokens are cut to a window
    that keeps both entities with their markers and as much context around them as fits; a pair of
    entities that alone does not fit raises `ValueError`. Padding goes on the right.

    `save_pretrained(folder)` writes the tokenizer (with its markers) and `processor_config.json`
    (the settings below); `RelationProcessor.from_pretrained(folder)` restores both.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): a fast tokenizer (marking maps words to tokens). The
            bracket schemes need their marker tokens in it: see [`~RelationProcessor.add_marker_tokens`].
        marker_scheme (`str`, defaults to `"typed_entity_marker"`): one of `entity_marker`,
            `typed_entity_marker`, `typed_entity_marker_punct`.
        entity_types (`list[str]`, defaults to `[]`): entity types with their own markers (typed schemes);
            `default_entity_type` is always included.
        default_entity_type (`str`, defaults to `"ENTITY"`): type of an entity that has none.
        max_length (`int`, defaults to 128): token budget per example (at least 8).

    Example::

        >>> processor = RelationProcessor(tokenizer, marker_scheme="typed_entity_marker")
        >>> processor.add_marker_tokens()          # then resize the model's embeddings
        ['[S:ENTITY]', '[/S:ENTITY]', '[O:ENTITY]', '[/O:ENTITY]']
        >>> batch = processor("the dog runs in the park".split(), (1, 2), (5, 6))
        >>> batch["entity_positions"]              # [CLS] the [S:ENTITY] dog [/S:ENTITY] ... [O:ENTITY] park
        tensor([[2, 8]])
    """

    def __init__(
        self,
        tokenizer: Any,
        marker_scheme: str = "typed_entity_marker",
        entity_types: Sequence[str] = (),
        default_entity_type: str = "ENTITY",
        max_length: int = 128,
        **kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise TypeError("RelationProcessor needs a tokenizer (a transformers fast tokenizer), got None.")
        if marker_scheme not in MARKER_SCHEMES:
            raise ValueError(f"Unknown marker scheme {marker_scheme!r}; expected one of {MARKER_SCHEMES}.")
        if isinstance(entity_types, str) or not all(isinstance(t, str) and t for t in entity_types):
            raise ValueError(f"entity_types must be a list of non-empty type names, got {entity_types!r}.")
        if not isinstance(default_entity_type, str) or not default_entity_type:
            raise ValueError(f"default_entity_type must be a non-empty string, got {default_entity_type!r}.")
        self.marker_scheme = marker_scheme
        self.entity_types = list(entity_types)
        self.default_entity_type = default_entity_type
        self.max_length = self.check_max_length(max_length)
        super().__init__(tokenizer, **kwargs)

    @staticmethod
    def check_max_length(max_length: Any) -> int:
        """`max_length` as an int; `ValueError` unless it is an integer of at least 8."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length must be an integer of at least 8, got {max_length!r}.")
        return int(max_length)

    @classmethod
    def from_config(cls, tokenizer: Any, config: Any, **overrides: Any) -> RelationProcessor:
        """A processor with the marker settings of a [`RelationClassifierConfig`] (`max_length` from its
        `max_seq_length`); `overrides` replace single settings."""
        settings = {
            "marker_scheme": config.marker_scheme,
            "entity_types": list(config.entity_types),
            "default_entity_type": config.default_entity_type,
            "max_length": config.max_seq_length,
        }
        settings.update(overrides)
        settings["max_length"] = cap_max_length(
            settings["max_length"], position_limit(config), "max_seq_length"
        )
        return cls(tokenizer, **settings)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> RelationProcessor:
        """Load the tokenizer and the marker settings saved by [`~RelationProcessor.save_pretrained`].

        With `tokenizer=`, only the settings come from the folder and the given tokenizer is used.
        Other keyword arguments are those of `ProcessorMixin.from_pretrained` (`local_files_only`,
        `revision`, ...) or override a saved setting (`max_length=256`).
        """
        if tokenizer is None:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        processor_dict, rest = cls.get_processor_dict(pretrained_model_name_or_path, **kwargs)
        return cls.from_args_and_dict([tokenizer], processor_dict, **rest)

    # -- markers -----------------------------------------------------------------------------------
    @property
    def marker_tokens(self) -> list[str]:
        """The scheme's new vocabulary entries (empty for `typed_entity_marker_punct`)."""
        return marker_tokens(self.marker_scheme, self.entity_types, self.default_entity_type)

    def missing_marker_tokens(self) -> list[str]:
        """Marker tokens the tokenizer does not know yet."""
        markers = self.marker_tokens
        if not markers:
            return []
        vocab = self.tokenizer.get_vocab()
        return [m for m in markers if m not in vocab]

    def add_marker_tokens(self) -> list[str]:
        """Add the scheme's marker tokens to the tokenizer as special tokens (never split).

        Calling it again adds nothing. Returns the tokens that were new, in order; when it returns any,
        the model's input embeddings must grow to `len(processor.tokenizer)`.
        """
        new = self.missing_marker_tokens()
        if self.marker_tokens:
            self.tokenizer.add_tokens(self.marker_tokens, special_tokens=True)
        return new

    @property
    def marker_token_ids(self) -> dict[str, int]:
        """Marker token -> id in the tokenizer (what `RelationClassifierConfig.marker_token_ids` records)."""
        self.check_marker_tokens()
        return {m: int(self.tokenizer.convert_tokens_to_ids(m)) for m in self.marker_tokens}

    def check_marker_tokens(self) -> None:
        """Raise `ValueError` naming the scheme's marker tokens that the tokenizer lacks."""
        # Markers never leave a tokenizer: once they are all there, only a change of tokenizer or of
        # vocabulary size needs another look.
        key = (id(self.tokenizer), len(self.tokenizer), tuple(self.marker_tokens))
        if self.__dict__.get("_checked_markers") == key:
            return
        missing = self.missing_marker_tokens()
        if missing:
            raise ValueError(
                f"The tokenizer lacks the marker tokens {missing}; add them first with "
                "RelationProcessor.add_marker_tokens() (RelationClassifier.add_marker_tokens(tokenizer, config)) "
                "and resize the model's embeddings."
            )
        self.__dict__["_checked_markers"] = key

    def mark(self, example: RelationExample) -> tuple[list[str], tuple[int, int, int, int]]:
        """The marked words of `example` and the word indices of its four markers (see [`mark_words`])."""
        return mark_words(example, self.marker_scheme, self.entity_types, self.default_entity_type)

    # -- one example -------------------------------------------------------------------------------
    def encode_example(
        self, example: RelationExample, max_length: int | None = None, with_explanations: bool = False
    ) -> dict[str, list[int]]:
        """Token ids, token type ids (when the tokenizer makes them) and the four marker positions
        (subject start, subject end, object start, object end) of one example, unpadded.

        `with_explanations` appends `example.explanation` as a second segment, which truncation
        drops first.
        """
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                f"RelationProcessor needs a fast tokenizer (it maps words to tokens), got "
                f"{type(self.tokenizer).__name__}."
            )
        self.check_marker_tokens()
        limit = self.max_length if max_length is None else self.check_max_length(max_length)
        words, marks = self.mark(example)
        pair = example.explanation.split() if (with_explanations and example.explanation) else None
        enc = self.tokenizer(words, pair, is_split_into_words=True, add_special_tokens=True)
        word_ids = enc.word_ids()
        seq_ids = enc.sequence_ids()
        first: dict[int, int] = {}
        for pos, (w, s) in enumerate(zip(word_ids, seq_ids)):
            if w is not None and s == 0 and w not in first:
                first[w] = pos
        try:
            positions = [first[m] for m in marks]
        except KeyError as err:
            raise ValueError(f"Marker word {err} produced no token (example {example.id}).") from None
        ids = list(enc["input_ids"])
        types = list(enc["token_type_ids"]) if "token_type_ids" in enc else None
        if len(ids) > limit:
            ids, types, positions = self._crop(ids, types, positions, seq_ids, example, limit)
        out: dict[str, list[int]] = {"input_ids": ids, "entity_positions": positions}
        if types is not None:
            out["token_type_ids"] = types
        return out

    def _crop(
        self,
        ids: list[int],
        types: list[int] | None,
        positions: list[int],
        seq_ids: list[int | None],
        example: RelationExample,
        max_length: int,
    ) -> tuple[list[int], list[int] | None, list[int]]:
        # Keep the leading special token(s) and the closing one, and a window of the first segment that
        # covers both entities; an explanation segment is dropped first.
        first_seg = [i for i, s in enumerate(seq_ids) if s == 0]
        lo_text, hi_text = first_seg[0], first_seg[-1] + 1
        head, tail = ids[:lo_text], ids[hi_text : hi_text + 1] if hi_text < len(ids) else []
        budget = max_length - len(head) - len(tail)
        lo, hi = min(positions), max(positions) + 1
        if self.marker_scheme == "typed_entity_marker_punct":
            hi += 1
        if hi - lo > budget:
            raise ValueError(
                f"Example {example.id}: the two entities and their markers span {hi - lo} tokens, more than "
                f"the {budget} that max_length={max_length} leaves; raise max_length."
            )
        spare = budget - (hi - lo)
        start = max(lo_text, lo - spare // 2)
        end = min(hi_text, start + budget)
        start = max(lo_text, end - budget)
        new_ids = head + ids[start:end] + tail
        new_types = (
            None
            if types is None
            else types[:lo_text] + types[start:end] + types[hi_text : hi_text + len(tail)]
        )
        shift = len(head) - start
        return new_ids, new_types, [p + shift for p in positions]

    # -- batches -----------------------------------------------------------------------------------
    def to_examples(
        self,
        examples: Any,
        subject_span: Any = None,
        object_span: Any = None,
        subject_type: Any = None,
        object_type: Any = None,
    ) -> list[RelationExample]:
        """The [`RelationExample`]s of any input form that `__call__` takes."""
        if subject_span is not None or object_span is not None:
            if subject_span is None or object_span is None:
                raise ValueError("Pass both subject_span and object_span (word spans), or neither.")
            if _is_words(examples):
                return [
                    _from_parts(examples, subject_span, object_span, subject_type, object_type, "the input")
                ]
            if isinstance(examples, Sequence) and examples and all(_is_words(t) for t in examples):
                n = len(examples)
                rows = zip(
                    examples,
                    _per_row(subject_span, n, "subject_span"),
                    _per_row(object_span, n, "object_span"),
                    _per_row(subject_type, n, "subject_type"),
                    _per_row(object_type, n, "object_type"),
                )
                return [_from_parts(*row, where=f"row {i}") for i, row in enumerate(rows)]
            raise TypeError(
                "With subject_span and object_span, the first argument must be the words of a sentence "
                f"(a list of str) or a batch of them (a list of lists of str); got {examples!r:.80}."
            )
        if subject_type is not None or object_type is not None:
            raise ValueError("subject_type / object_type go with subject_span and object_span.")
        if isinstance(examples, (RelationExample, Mapping)) or _is_example_tuple(examples):
            return [_one(examples, "the input")]
        if _is_words(examples) and examples:
            raise ValueError(
                "A list of words needs subject_span and object_span: processor(tokens, (s0, s1), (o0, o1))."
            )
        if isinstance(examples, (str, bytes)) or not isinstance(examples, Iterable):
            raise TypeError(f"Expected {_FORMS}; got a {type(examples).__name__}.")
        rows = [_one(x, f"item {i}") for i, x in enumerate(examples)]
        if not rows:
            raise ValueError(f"RelationProcessor got no examples; expected {_FORMS}.")
        return rows

    def __call__(
        self,
        examples: Any = None,
        subject_span: Any = None,
        object_span: Any = None,
        subject_type: str | Sequence[str | None] | None = None,
        object_type: str | Sequence[str | None] | None = None,
        *,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        max_length: int | None = None,
        return_end_markers: bool = False,
        with_explanations: bool = False,
    ) -> BatchEncoding:
        r"""Mark, tokenise, truncate and pad relation instances.

        Input forms:

        - a [`RelationExample`], a dict with `tokens` / `subject` / `object` (and optionally
          `subject_type` / `object_type` / `explanation`), or a tuple
          `(tokens, subject_span, object_span[, subject_type, object_type])`; or a list of these;
        - `processor(tokens, subject_span, object_span[, subject_type, object_type])` for one sentence,
          or with a list of sentences and lists of spans (and types) for a batch.

        Spans are `(start, end)` word indices, end exclusive.

        Args:
            return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"`, `"np"`, or `None` for lists.
            padding (`bool` or `str`, defaults to `True`): `True` / `"longest"` pads to the longest row,
                `"max_length"` to `max_length`, `False` / `"do_not_pad"` not at all.
            max_length (`int`, *optional*): token budget of this call (defaults to the processor's).
            return_end_markers (`bool`, defaults to `False`): give the four marker positions
                (subject start, subject end, object start, object end) instead of the two start ones.
            with_explanations (`bool`, defaults to `False`): append each example's `explanation` as a
                second segment.

        Returns:
            [`BatchEncoding`] with `input_ids` and `attention_mask` (`(batch_size, seq_len)`),
            `token_type_ids` when the tokenizer makes them, and `entity_positions`
            (`(batch_size, 2)`, or `(batch_size, 4)` with `return_end_markers`).
        """
        strategy = self._padding_strategy(padding)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        limit = self.max_length if max_length is None else self.check_max_length(max_length)
        rows = self.to_examples(examples, subject_span, object_span, subject_type, object_type)
        encoded = [
            self.encode_example(r, max_length=limit, with_explanations=with_explanations) for r in rows
        ]
        lengths = [len(e["input_ids"]) for e in encoded]
        width = {"longest": max(lengths), "max_length": limit, "do_not_pad": None}[strategy]
        if width is None and return_tensors is not None and len(set(lengths)) > 1:
            raise ValueError(
                f"Rows of {min(lengths)} to {max(lengths)} tokens do not stack into a tensor without padding; "
                "pass padding=True or return_tensors=None."
            )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        has_types = "token_type_ids" in encoded[0]
        data: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
        if has_types:
            data["token_type_ids"] = []
        data["entity_positions"] = []
        for e, n in zip(encoded, lengths):
            fill = 0 if width is None else width - n
            data["input_ids"].append(e["input_ids"] + [pad] * fill)
            data["attention_mask"].append([1] * n + [0] * fill)
            if has_types:
                data["token_type_ids"].append(e["token_type_ids"] + [0] * fill)
            p = e["entity_positions"]
            data["entity_positions"].append(list(p) if return_end_markers else [p[0], p[2]])
        return BatchEncoding(data, tensor_type=return_tensors)

    @staticmethod
    def _padding_strategy(padding: Any) -> str:
        if padding is True:
            return "longest"
        if padding is False or padding is None:
            return "do_not_pad"
        name = str(getattr(padding, "value", padding))
        if name not in _PADDING:
            raise ValueError(
                f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}."
            )
        return _PADDING[name]

    @property
    def model_input_names(self) -> list[str]:
        names = [
            n
            for n in ("input_ids", "token_type_ids", "attention_mask")
            if n in self.tokenizer.model_input_names
        ]
        return [*names, "entity_positions"]


__all__ = ["MARKER_SCHEMES", "RelationProcessor", "mark_words", "marker_tokens"]
