"""Relation extraction data: SemEval-2010 Task 8 and FewRel loaders, entity marking, K-shot sampling,
N-way K-shot episodes, and the collator that turns marked examples into model inputs.

An example is a [`RelationExample`]: word tokens, the subject and object as half-open word spans
``[start, end)``, optional entity types, and a relation label. The subject is the first argument of
the relation as the data set writes it (``e1`` in SemEval-2010, ``h`` in FewRel); the direction of
SemEval-2010 relations lives in the label (``Cause-Effect(e2,e1)``).

Marker schemes (Zhou and Chen 2022, "An Improved Baseline for Sentence-level Relation Extraction",
the scheme TKRE fine-tunes with):

- ``entity_marker``: ``[E1] subject [/E1]`` and ``[E2] object [/E2]`` (new tokens);
- ``typed_entity_marker``: ``[S:TYPE] subject [/S:TYPE]`` and ``[O:TYPE] object [/O:TYPE]`` (new tokens,
  one set per entity type; untyped data uses the config's default type);
- ``typed_entity_marker_punct``: ``@ * type * subject @`` and ``# ^ type ^ object #`` (no new tokens).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_contrastive.core.utils import data_dir

logger = logging.getLogger(__name__)

MARKER_SCHEMES = ("entity_marker", "typed_entity_marker", "typed_entity_marker_punct")

SEMEVAL_RELATIONS = (
    "Cause-Effect",
    "Component-Whole",
    "Content-Container",
    "Entity-Destination",
    "Entity-Origin",
    "Instrument-Agency",
    "Member-Collection",
    "Message-Topic",
    "Product-Producer",
)
"""The nine SemEval-2010 Task 8 relations; each comes in two directions, plus ``Other``."""

SEMEVAL_LABELS = (
    *(f"{r}({d})" for r in SEMEVAL_RELATIONS for d in ("e1,e2", "e2,e1")),
    "Other",
)
"""The 19 directed SemEval-2010 labels (18 directed relations + ``Other``)."""


@dataclass
class RelationExample:
    """One relation instance.

    Attributes:
        tokens: the sentence as words.
        subject: ``(start, end)`` word span of the subject (end exclusive).
        object: ``(start, end)`` word span of the object (end exclusive).
        label: relation label (``None`` for unlabelled text).
        subject_type / object_type: entity types (typed marker schemes), optional.
        id: identifier in the source file.
        explanation: free text about the instance (LLM-written, used by TKRE pretraining).
    """

    tokens: list[str]
    subject: tuple[int, int]
    object: tuple[int, int]
    label: str | None = None
    subject_type: str | None = None
    object_type: str | None = None
    id: str | None = None
    explanation: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = list(self.tokens)
        self.subject = (int(self.subject[0]), int(self.subject[1]))
        self.object = (int(self.object[0]), int(self.object[1]))
        validate_spans(self.tokens, self.subject, self.object, where=self.id)

    @property
    def subject_text(self) -> str:
        return " ".join(self.tokens[self.subject[0] : self.subject[1]])

    @property
    def object_text(self) -> str:
        return " ".join(self.tokens[self.object[0] : self.object[1]])

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "subject": list(self.subject),
            "object": list(self.object),
            "label": self.label,
            "subject_type": self.subject_type,
            "object_type": self.object_type,
            "id": self.id,
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RelationExample:
        if isinstance(d, RelationExample):
            return d
        missing = [k for k in ("tokens", "subject", "object") if k not in d]
        if missing:
            raise ValueError(f"A relation example needs keys tokens, subject, object; missing {missing}.")
        return cls(
            tokens=list(d["tokens"]),
            subject=tuple(d["subject"]),
            object=tuple(d["object"]),
            label=d.get("label"),
            subject_type=d.get("subject_type"),
            object_type=d.get("object_type"),
            id=None if d.get("id") is None else str(d["id"]),
            explanation=d.get("explanation"),
        )


def validate_spans(
    tokens: Sequence[str], subject: tuple[int, int], object: tuple[int, int], where: Any = None
) -> None:
    """Raise ``ValueError`` for an empty, out-of-range or overlapping pair of entity spans."""
    at = f" (example {where})" if where is not None else ""
    n = len(tokens)
    for name, (s, e) in (("subject", subject), ("object", object)):
        if not 0 <= s < e <= n:
            raise ValueError(f"The {name} span [{s}, {e}) is empty or outside the sentence of {n} words{at}.")
    if subject[0] < object[1] and object[0] < subject[1]:
        raise ValueError(
            f"The subject span {list(subject)} and the object span {list(object)} overlap{at}; "
            "the two entities of a relation instance must be disjoint."
        )


# -- SemEval-2010 Task 8 --------------------------------------------------------------------------
_TAG = re.compile(r"(</?e[12]>)")


def parse_marked_sentence(text: str, where: Any = None) -> tuple[list[str], tuple[int, int], tuple[int, int]]:
    """Split a sentence with ``<e1>..</e1>`` and ``<e2>..</e2>`` tags into words and the two spans.

    Raises ``ValueError`` when a tag is missing or repeated, the tags are out of order, an entity is
    empty, or the entities overlap (nested tags).
    """
    at = f" (example {where})" if where is not None else ""
    counts = {t: len(re.findall(re.escape(t), text)) for t in ("<e1>", "</e1>", "<e2>", "</e2>")}
    bad = {t: c for t, c in counts.items() if c != 1}
    if bad:
        raise ValueError(
            f"Expected each of the markers <e1>, </e1>, <e2>, </e2> exactly once{at}; found counts {bad} "
            f"in {text!r}."
        )
    tokens: list[str] = []
    opened: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    for piece in _TAG.split(text):
        if not piece:
            continue
        m = _TAG.fullmatch(piece)
        if m is None:
            tokens.extend(piece.split())
            continue
        name = piece.strip("</>")
        if piece.startswith("</"):
            if name not in opened:
                raise ValueError(f"Marker {piece} closes before it opens{at}: {text!r}.")
            spans[name] = (opened.pop(name), len(tokens))
        else:
            if opened:
                raise ValueError(
                    f"Entity markers overlap{at}: <{name}> opens inside <{next(iter(opened))}> in {text!r}."
                )
            opened[name] = len(tokens)
    validate_spans(tokens, spans["e1"], spans["e2"], where=where)
    return tokens, spans["e1"], spans["e2"]


def load_semeval2010(
    split: str = "train", path: str | os.PathLike | None = None, labels: Sequence[str] = SEMEVAL_LABELS
) -> list[RelationExample]:
    """Read SemEval-2010 Task 8 (``TRAIN_FILE.TXT`` 8000 / ``TEST_FILE_FULL.TXT`` 2717 examples).

    Each block is ``id<TAB>"sentence with <e1>..</e1> <e2>..</e2>"``, the label, a comment line and a
    blank line. ``e1`` becomes the subject, ``e2`` the object; labels keep their direction.

    Args:
        split: ``"train"`` or ``"test"``.
        path: the file or the folder holding it; defaults to ``<data>/relation/semeval2010``.
        labels: the label schema; a label outside it raises ``ValueError``.
    """
    names = {"train": "TRAIN_FILE.TXT", "test": "TEST_FILE_FULL.TXT"}
    if split not in names:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    p = Path(path) if path is not None else data_dir() / "relation" / "semeval2010"
    if p.is_dir():
        p = p / names[split]
    if not p.is_file():
        raise FileNotFoundError(f"SemEval-2010 file not found: {p}.")
    schema = set(labels)
    lines = [line.rstrip("\r\n") for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    examples: list[RelationExample] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        head = lines[i]
        if "\t" not in head or i + 1 >= len(lines):
            raise ValueError(f"{p}: line {i + 1} should be 'id<TAB>\"sentence\"', got {head!r}.")
        sid, sentence = head.split("\t", 1)
        sentence = sentence.strip()
        if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
            sentence = sentence[1:-1]
        label = lines[i + 1].strip()
        if label not in schema:
            raise ValueError(
                f"{p}: example {sid} has label {label!r}, which is not in the schema {sorted(schema)}."
            )
        tokens, e1, e2 = parse_marked_sentence(sentence, where=sid.strip())
        examples.append(RelationExample(tokens, e1, e2, label=label, id=sid.strip()))
        i += 2
        if i < len(lines) and lines[i].startswith("Comment"):
            i += 1
    return examples


# -- FewRel ---------------------------------------------------------------------------------------
def load_fewrel(
    name: str = "val_wiki", path: str | os.PathLike | None = None, use_names: bool = False
) -> dict[str, list[RelationExample]]:
    """Read a FewRel 1.0 file: relation id -> list of examples (700 per relation in ``val_wiki``).

    Each instance is ``{"tokens": [...], "h": [name, id, [[positions]]], "t": [...]}``; the head ``h``
    becomes the subject and the tail ``t`` the object (first mention, its positions must be contiguous).

    Args:
        name: file stem (``val_wiki``, ``val_semeval``) or a path to a JSON file.
        path: folder holding the file; defaults to ``<data>/relation/fewrel``.
        use_names: key the result by the relation names of ``pid2name.json`` instead of the ids.
    """
    folder = Path(path) if path is not None else data_dir() / "relation" / "fewrel"
    file = Path(name) if str(name).endswith(".json") else folder / f"{name}.json"
    if not file.is_file():
        raise FileNotFoundError(f"FewRel file not found: {file}.")
    raw = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object relation -> instances, got {type(raw).__name__}.")
    names: dict[str, str] = {}
    if use_names and (folder / "pid2name.json").is_file():
        names = {k: v[0] for k, v in json.loads((folder / "pid2name.json").read_text()).items()}
    out: dict[str, list[RelationExample]] = {}
    for rel, items in raw.items():
        label = names.get(rel, rel)
        rows = []
        for j, item in enumerate(items):
            subject = _fewrel_span(item["h"][2], f"{rel}#{j} head")
            obj = _fewrel_span(item["t"][2], f"{rel}#{j} tail")
            rows.append(RelationExample(item["tokens"], subject, obj, label=label, id=f"{rel}#{j}"))
        out[label] = rows
    return out


def _fewrel_span(mentions: Sequence[Sequence[int]], where: str) -> tuple[int, int]:
    if not mentions or not mentions[0]:
        raise ValueError(f"FewRel {where}: no entity positions given.")
    pos = sorted(int(x) for x in mentions[0])
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise ValueError(f"FewRel {where}: entity positions {pos} are not contiguous.")
    return pos[0], pos[-1] + 1


# -- sampling -------------------------------------------------------------------------------------
def check_labels(examples: Iterable[RelationExample], labels: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the labels that are not in ``labels`` (the schema)."""
    schema = set(labels)
    bad = sorted({str(ex.label) for ex in examples if ex.label not in schema})
    if bad:
        raise ValueError(f"Relation label(s) {bad} are not in the schema {list(labels)}.")


def sample_k_shot(
    examples: Sequence[RelationExample],
    k: int,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> list[RelationExample]:
    """K examples per relation label, drawn without replacement with ``seed``.

    A label with fewer than K examples contributes all of them and a warning says so. ``labels``
    (the schema) restricts and checks the labels; by default every label present is used.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    by_label: dict[str, list[RelationExample]] = defaultdict(list)
    for ex in examples:
        if ex.label is None:
            raise ValueError(f"K-shot sampling needs labelled examples; example {ex.id} has no label.")
        by_label[ex.label].append(ex)
    if labels is not None:
        check_labels(examples, labels)
        order = list(labels)
    else:
        order = sorted(by_label)
    rng = random.Random(seed)
    out: list[RelationExample] = []
    for label in order:
        pool = by_label.get(label, [])
        if len(pool) < k:
            logger.warning(
                "Relation %r has %d example(s), fewer than k=%d: using all of them.", label, len(pool), k
            )
            chosen = list(pool)
        else:
            chosen = rng.sample(pool, k)
        out.extend(chosen)
    rng.shuffle(out)
    return out


@dataclass
class Episode:
    """One N-way K-shot episode: ``support[i]`` holds the K examples of ``relations[i]``; ``query``
    examples carry ``query_labels`` (indices into ``relations``)."""

    relations: list[str]
    support: list[list[RelationExample]]
    query: list[RelationExample]
    query_labels: list[int]


def sample_episodes(
    data: Mapping[str, Sequence[RelationExample]],
    n_way: int,
    k_shot: int,
    n_query: int = 1,
    n_episodes: int = 100,
    seed: int = 0,
) -> list[Episode]:
    """Draw FewRel-style episodes: N relations, K support and ``n_query`` query examples each.

    Support and query examples of a relation are disjoint. Raises ``ValueError`` when fewer than N
    relations exist or a relation has fewer than ``k_shot + n_query`` examples.
    """
    for name, value in (
        ("n_way", n_way),
        ("k_shot", k_shot),
        ("n_query", n_query),
        ("n_episodes", n_episodes),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    relations = sorted(data)
    if len(relations) < n_way:
        raise ValueError(
            f"{n_way}-way episodes need at least {n_way} relations; the data has {len(relations)}."
        )
    short = [r for r in relations if len(data[r]) < k_shot + n_query]
    if short:
        raise ValueError(f"Relations {short} have fewer than k_shot + n_query = {k_shot + n_query} examples.")
    rng = random.Random(seed)
    episodes = []
    for _ in range(n_episodes):
        chosen = rng.sample(relations, n_way)
        support, query, qlabels = [], [], []
        for i, rel in enumerate(chosen):
            picked = rng.sample(range(len(data[rel])), k_shot + n_query)
            support.append([data[rel][j] for j in picked[:k_shot]])
            query.extend(data[rel][j] for j in picked[k_shot:])
            qlabels.extend([i] * n_query)
        episodes.append(Episode(chosen, support, query, qlabels))
    return episodes


# -- marking --------------------------------------------------------------------------------------
def marker_tokens(scheme: str, entity_types: Sequence[str] = (), default_type: str = "ENTITY") -> list[str]:
    """The new tokens a scheme adds to the vocabulary (none for ``typed_entity_marker_punct``)."""
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


def as_examples(rows: Iterable[Any]) -> list[RelationExample]:
    """Accept `RelationExample`s or dicts with tokens/subject/object (a `datasets.Dataset` row)."""
    out = []
    for r in rows:
        if isinstance(r, RelationExample):
            out.append(r)
        elif isinstance(r, Mapping):
            out.append(RelationExample.from_dict(r))
        else:
            raise TypeError(f"Expected a RelationExample or a dict, got {type(r).__name__}.")
    return out


class RelationDataCollator:
    """Mark, tokenize and pad relation examples for [`RelationClassifier`] and TKRE pretraining.

    Output keys: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes
    them), ``entity_positions`` ``[B, 4]`` (token positions of subject start, subject end, object start
    and object end markers; for multi-token punctuation markers the first token of each), ``labels``
    ``[B]`` when ``label2id`` is given and examples carry labels.

    Sentences longer than ``max_length`` are cut to a window that keeps both entities (and as much
    context around them as fits); a pair of entities that alone does not fit raises ``ValueError``.
    An example's ``explanation`` is added as a second segment when ``with_explanations`` is on.

    Args:
        tokenizer: a fast tokenizer that already knows the scheme's markers
            (see ``RelationClassifier.add_marker_tokens``).
        marker_scheme / entity_types / default_entity_type: as in [`RelationClassifierConfig`].
        label2id: label -> class index; labels outside it raise ``ValueError``.
        max_length: token budget per example (128 by default).
        with_explanations: append ``example.explanation`` after a separator.
    """

    def __init__(
        self,
        tokenizer: Any,
        marker_scheme: str = "typed_entity_marker",
        entity_types: Sequence[str] = (),
        default_entity_type: str = "ENTITY",
        label2id: Mapping[str, int] | None = None,
        max_length: int = 128,
        with_explanations: bool = False,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("RelationDataCollator needs a fast tokenizer (it maps words to tokens).")
        if marker_scheme not in MARKER_SCHEMES:
            raise ValueError(f"Unknown marker scheme {marker_scheme!r}; expected one of {MARKER_SCHEMES}.")
        vocab = tokenizer.get_vocab()
        missing = [
            m for m in marker_tokens(marker_scheme, entity_types, default_entity_type) if m not in vocab
        ]
        if missing:
            raise ValueError(
                f"The tokenizer lacks the marker tokens {missing}; add them first "
                "(RelationClassifier.add_marker_tokens(tokenizer, config))."
            )
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}.")
        self.tokenizer = tokenizer
        self.marker_scheme = marker_scheme
        self.entity_types = tuple(entity_types)
        self.default_entity_type = default_entity_type
        self.label2id = dict(label2id) if label2id is not None else None
        self.max_length = int(max_length)
        self.with_explanations = with_explanations

    def encode(self, example: RelationExample) -> dict[str, Any]:
        """Token ids, token type ids and the four marker positions of one example (unpadded)."""
        words, marks = mark_words(example, self.marker_scheme, self.entity_types, self.default_entity_type)
        pair = example.explanation.split() if (self.with_explanations and example.explanation) else None
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
        if len(ids) > self.max_length:
            ids, types, positions = self._crop(ids, types, positions, seq_ids, example)
        out = {"input_ids": ids, "entity_positions": positions}
        if types is not None:
            out["token_type_ids"] = types
        return out

    def _crop(self, ids, types, positions, seq_ids, example):
        # Keep the leading special token(s) and the closing one, and a window of the first segment that
        # covers both entities; an explanation segment is dropped first.
        first_seg = [i for i, s in enumerate(seq_ids) if s == 0]
        lo_text, hi_text = first_seg[0], first_seg[-1] + 1
        head, tail = ids[:lo_text], ids[hi_text : hi_text + 1] if hi_text < len(ids) else []
        budget = self.max_length - len(head) - len(tail)
        lo, hi = min(positions), max(positions) + 1
        if self.marker_scheme == "typed_entity_marker_punct":
            hi += 1
        if hi - lo > budget:
            raise ValueError(
                f"Example {example.id}: the two entities and their markers span {hi - lo} tokens, more than "
                f"the {budget} that max_length={self.max_length} leaves; raise max_length."
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

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = as_examples(examples)
        if not rows:
            raise ValueError("RelationDataCollator got an empty batch.")
        encoded = [self.encode(r) for r in rows]
        width = max(len(e["input_ids"]) for e in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        b = len(encoded)
        input_ids = torch.full((b, width), pad, dtype=torch.long)
        attention = torch.zeros((b, width), dtype=torch.long)
        has_types = "token_type_ids" in encoded[0]
        token_types = torch.zeros((b, width), dtype=torch.long) if has_types else None
        for i, e in enumerate(encoded):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            attention[i, :n] = 1
            if has_types:
                token_types[i, :n] = torch.tensor(e["token_type_ids"])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "entity_positions": torch.tensor([e["entity_positions"] for e in encoded], dtype=torch.long),
        }
        if has_types:
            batch["token_type_ids"] = token_types
        if self.label2id is not None and all(r.label is not None for r in rows):
            unknown = sorted({r.label for r in rows if r.label not in self.label2id})
            if unknown:
                raise ValueError(f"Relation label(s) {unknown} are not in the schema {list(self.label2id)}.")
            batch["labels"] = torch.tensor([self.label2id[r.label] for r in rows], dtype=torch.long)
        return batch


class RelationDataset(torch.utils.data.Dataset):
    """A list of [`RelationExample`]s as a map-style dataset (what `Trainer` and the collators take)."""

    def __init__(self, examples: Iterable[Any]) -> None:
        self.examples = as_examples(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> RelationExample:
        return self.examples[i]


__all__ = [
    "MARKER_SCHEMES",
    "SEMEVAL_LABELS",
    "SEMEVAL_RELATIONS",
    "Episode",
    "RelationDataCollator",
    "RelationDataset",
    "RelationExample",
    "as_examples",
    "check_labels",
    "load_fewrel",
    "load_semeval2010",
    "mark_words",
    "marker_tokens",
    "parse_marked_sentence",
    "sample_episodes",
    "sample_k_shot",
    "validate_spans",
]
