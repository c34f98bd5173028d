"""Relation extraction data: SemEval-2010 Task 8 and FewRel loaders, entity marking, K-shot sampling,
N-way K-shot episodes, and the collator that turns marked examples into model inputs.

An example is a [`RelationExample`]: word tokens, the subject and object as half-open word spans
`[start, end)`, optional entity types, and a relation label. The subject is the first argument of
the relation as the data set writes it (`e1` in SemEval-2010, `h` in FewRel); the direction of
SemEval-2010 relations lives in the label (`Cause-Effect(e2,e1)`).

Marking itself (the schemes, `mark_words`, `marker_tokens`, tokenisation, truncation that keeps both
entities) lives in `processing.py` ([`RelationProcessor`]); the names stay importable from here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_contrastive.core.utils import data_dir
from hf_contrastive.relation.example import RelationExample, as_examples, validate_spans
from hf_contrastive.relation.processing import MARKER_SCHEMES, RelationProcessor, mark_words, marker_tokens

logger = logging.getLogger(__name__)

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


# -- SemEval-2010 Task 8 --------------------------------------------------------------------------
_TAG = re.compile(r"(</?e[12]>)")


def parse_marked_sentence(text: str, where: Any = None) -> tuple[list[str], tuple[int, int], tuple[int, int]]:
    """Split a sentence with `<e1>..</e1>` and `<e2>..</e2>` tags into words and the two spans.

    Raises `ValueError` when a tag is missing or repeated, the tags are out of order, an entity is
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
    """Read SemEval-2010 Task 8 (`TRAIN_FILE.TXT` 8000 / `TEST_FILE_FULL.TXT` 2717 examples).

    Each block is `id<TAB>"sentence with <e1>..</e1> <e2>..</e2>"`, the label, a comment line and a
    blank line. `e1` becomes the subject, `e2` the object; labels keep their direction.

    Args:
        split (`str`, *optional*, defaults to `"train"`): `"train"` or `"test"`.
        path (`str | os.PathLike | None`, *optional*): the file or the folder holding it; defaults to `<data>/relation/semeval2010`.
        labels (`Sequence[str]`, *optional*, defaults to `SEMEVAL_LABELS`): the label schema; a label outside it raises `ValueError`.
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
    """Read a FewRel 1.0 file: relation id -> list of examples (700 per relation in `val_wiki`).

    Each instance is `{"tokens": [...], "h": [name, id, [[positions]]], "t": [...]}`; the head `h`
    becomes the subject and the tail `t` the object (first mention, its positions must be contiguous).

    Args:
        name (`str`, *optional*, defaults to `"val_wiki"`): file stem (`val_wiki`, `val_semeval`) or a path to a JSON file.
        path (`str | os.PathLike | None`, *optional*): folder holding the file; defaults to `<data>/relation/fewrel`.
        use_names (`bool`, *optional*, defaults to `False`): key the result by the relation names of `pid2name.json` instead of the ids.
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


# -- unlabelled relation-bearing text ------------------------------------------------------------------
_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those he she they we you i his her their our your my me him them us who whom which what "
    "when where why how not no nor so than too very can could will would shall should may might must do "
    "does did has have had into onto over under after before between about against during through also "
    "such there here then once only own same some any each few more most other all both up down out off "
    "again further just".split()
)


def mark_two_entities(
    words: Sequence[str], rng: random.Random, max_gap: int = 8
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Pick two one-word entities in a sentence: alphabetic words of 3+ letters outside a stop-word list,
    the second 1..`max_gap` words after the first (so at least one word lies between them), capitalised
    words preferred for the first. Returns `None` when no such pair exists.

    Args:
        words (`Sequence[str]`): the sentence as words.
        rng (`random.Random`): the generator that picks the pair.
        max_gap (`int`, *optional*, defaults to 8): largest distance (in words) from the first to the second.
    """
    cand = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 3 and w.lower() not in _STOPWORDS]
    pairs = [(i, j) for i in cand for j in cand if 2 <= j - i <= max_gap + 1]
    if not pairs:
        return None
    named = [(i, j) for i, j in pairs if words[i][0].isupper() and i > 0]
    i, j = rng.choice(named or pairs)
    return (i, i + 1), (j, j + 1)


def load_unlabelled_relation_text(
    source: str,
    path: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    exclude_ids: Iterable[str] = (),
    min_words: int = 6,
    max_words: int = 60,
    max_gap: int = 8,
) -> list[RelationExample]:
    """Relation-bearing sentences without labels, for TKRE's masked span LM beyond a K-shot set.

    - `"semeval2010"`: the SemEval-2010 training sentences with their two marked entities, labels dropped
      (ids in `exclude_ids`, e.g. a dev split's, are left out);
    - `"fewrel"`: FewRel sentences (`path` a FewRel JSON file, default `val_wiki`) with head and tail, labels
      dropped;
    - `"text"`: one sentence a line (e.g. wiki1m, `path` required); two entities are marked by
      [`mark_two_entities`] (sentences of `min_words`..`max_words` words with such a pair are kept).

    The result is shuffled with `seed` and cut to `limit`; every example has `label=None` and its source id.

    Args:
        source (`str`): `"semeval2010"`, `"fewrel"` or `"text"`.
        path (`str | os.PathLike | None`, *optional*): the data file or folder (the loaders' defaults otherwise).
        limit (`int | None`, *optional*): keep at most this many sentences.
        seed (`int`, *optional*, defaults to 0): shuffling and entity choice.
        exclude_ids (`Iterable[str]`, *optional*): ids to leave out.
        min_words / max_words (`int`, *optional*, defaults to 6 / 60): sentence length bounds (`"text"`).
        max_gap (`int`, *optional*, defaults to 8): see [`mark_two_entities`].
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit!r}.")
    rng = random.Random(seed)
    if source == "semeval2010":
        rows = load_semeval2010("train", path=path)
    elif source == "fewrel":
        name = str(path) if path is not None and str(path).endswith(".json") else "val_wiki"
        folder = None if path is None or str(path).endswith(".json") else path
        rows = [e for group in load_fewrel(name, path=folder).values() for e in group]
    elif source == "text":
        if path is None:
            raise ValueError("source='text' needs path= (one sentence a line).")
        rows = []
        for n, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()):
            words = line.split()
            if not min_words <= len(words) <= max_words:
                continue
            spans = mark_two_entities(words, rng, max_gap=max_gap)
            if spans is not None:
                rows.append(RelationExample(words, spans[0], spans[1], id=f"line{n}"))
    else:
        raise ValueError(f"source must be 'semeval2010', 'fewrel' or 'text', got {source!r}.")
    excluded = {str(i) for i in exclude_ids}
    out = [
        RelationExample(
            e.tokens, e.subject, e.object, subject_type=e.subject_type, object_type=e.object_type, id=e.id
        )
        for e in rows
        if e.id not in excluded
    ]
    rng.shuffle(out)
    return out[:limit] if limit is not None else out


# -- sampling -------------------------------------------------------------------------------------
def check_labels(examples: Iterable[RelationExample], labels: Sequence[str]) -> None:
    """Raise `ValueError` naming the labels that are not in `labels` (the schema)."""
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
    """K examples per relation label, drawn without replacement with `seed`.

    A label with fewer than K examples contributes all of them and a warning says so. `labels`
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
    """One N-way K-shot episode: `support[i]` holds the K examples of `relations[i]`; `query`
    examples carry `query_labels` (indices into `relations`)."""

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
    """Draw FewRel-style episodes: N relations, K support and `n_query` query examples each.

    Support and query examples of a relation are disjoint. Raises `ValueError` when fewer than N
    relations exist or a relation has fewer than `k_shot + n_query` examples.
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


class RelationDataCollator:
    """Mark, tokenize and pad relation examples for [`RelationClassifier`] and TKRE pretraining.

    Marking goes through a [`RelationProcessor`] (given as `processor=`, or built from `tokenizer` and
    the marker settings). Output keys: `input_ids`, `attention_mask` (and `token_type_ids` when the
    tokenizer makes them), `entity_positions` `[B, 4]` (token positions of subject start, subject end,
    object start and object end markers; for multi-token punctuation markers the first token of each),
    `labels` `[B]` when `label2id` is given and the examples carry labels. A batch that mixes labelled
    and unlabelled examples raises `ValueError` (leaving `labels` out would drop every row's label), unless
    `allow_partial_labels` says the labels are optional (such a batch then has no `labels`).

    Sentences longer than `max_length` are cut to a window that keeps both entities (and as much
    context around them as fits); a pair of entities that alone does not fit raises `ValueError`.
    An example's `explanation` is added as a second segment when `with_explanations` is on.

    Args:
        tokenizer (`Any`, *optional*): a fast tokenizer that already knows the scheme's markers
            (see [`RelationProcessor.add_marker_tokens`]); may be left out when `processor` is given.
        marker_scheme / entity_types / default_entity_type: as in [`RelationClassifierConfig`]
            (defaults `"typed_entity_marker"`, `()`, `"ENTITY"`); with `processor`, they must
            agree with it.
        label2id (`Mapping[str, int] | None`, *optional*): label -> class index; labels outside it raise `ValueError`.
        max_length (`int | None`, *optional*): token budget per example (the processor's, 128 by default).
        with_explanations (`bool`, *optional*, defaults to `False`): append `example.explanation` after a separator.
        processor (`RelationProcessor | None`, *optional*): a [`RelationProcessor`] to mark with.
        allow_partial_labels (`bool`, *optional*, defaults to `False`): let a batch mix labelled and unlabelled
            examples (it then carries no `labels`); for objectives that do not read them (TKRE stage 1).
    """

    def __init__(
        self,
        tokenizer: Any = None,
        marker_scheme: str | None = None,
        entity_types: Sequence[str] | None = None,
        default_entity_type: str | None = None,
        label2id: Mapping[str, int] | None = None,
        max_length: int | None = None,
        with_explanations: bool = False,
        processor: RelationProcessor | None = None,
        allow_partial_labels: bool = False,
    ) -> None:
        self.allow_partial_labels = bool(allow_partial_labels)
        if processor is None:
            if tokenizer is None:
                raise TypeError("RelationDataCollator needs a tokenizer or a processor.")
            if not getattr(tokenizer, "is_fast", False):
                raise TypeError("RelationDataCollator needs a fast tokenizer (it maps words to tokens).")
            processor = RelationProcessor(
                tokenizer,
                marker_scheme=marker_scheme or "typed_entity_marker",
                entity_types=() if entity_types is None else entity_types,
                default_entity_type=default_entity_type or "ENTITY",
                max_length=128 if max_length is None else max_length,
            )
        else:
            if not isinstance(processor, RelationProcessor):
                raise TypeError(f"processor must be a RelationProcessor, got {type(processor).__name__}.")
            if tokenizer is not None and tokenizer is not processor.tokenizer:
                raise ValueError("Pass either tokenizer or processor (whose tokenizer is used), not both.")
            given = {
                "marker_scheme": marker_scheme,
                "entity_types": None if entity_types is None else list(entity_types),
                "default_entity_type": default_entity_type,
            }
            clash = {k: v for k, v in given.items() if v is not None and v != getattr(processor, k)}
            if clash:
                raise ValueError(
                    f"The collator's marker settings {clash} differ from the processor's "
                    f"{ {k: getattr(processor, k) for k in clash} }; leave them out to use the processor's."
                )
            if not getattr(processor.tokenizer, "is_fast", False):
                raise TypeError("RelationDataCollator needs a fast tokenizer (it maps words to tokens).")
        processor.check_marker_tokens()
        self.processor = processor
        self.label2id = dict(label2id) if label2id is not None else None
        self.max_length = (
            processor.max_length if max_length is None else processor.check_max_length(max_length)
        )
        self.with_explanations = with_explanations

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def marker_scheme(self) -> str:
        return self.processor.marker_scheme

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(self.processor.entity_types)

    @property
    def default_entity_type(self) -> str:
        return self.processor.default_entity_type

    def encode(self, example: RelationExample) -> dict[str, Any]:
        """Token ids, token type ids and the four marker positions of one example (unpadded)."""
        return self.processor.encode_example(
            example, max_length=self.max_length, with_explanations=self.with_explanations
        )

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = as_examples(examples)
        if not rows:
            raise ValueError("RelationDataCollator got an empty batch.")
        enc = self.processor(
            rows,
            return_tensors="pt",
            padding=True,
            max_length=self.max_length,
            return_end_markers=True,
            with_explanations=self.with_explanations,
        )
        batch = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "entity_positions": enc["entity_positions"],
        }
        if "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"]
        unlabelled = [i for i, r in enumerate(rows) if r.label is None]
        if self.label2id is not None and 0 < len(unlabelled) < len(rows) and not self.allow_partial_labels:
            # Leaving `labels` out would silently drop the labels of the other rows too.
            names = [rows[i].id if rows[i].id is not None else f"#{i}" for i in unlabelled[:5]]
            raise ValueError(
                f"The batch mixes labelled and unlabelled relation examples ({len(unlabelled)} of {len(rows)} "
                f"have no label, e.g. {names}); a batch carries labels for all of its rows or for none. Give "
                "every training example a label, or keep unlabelled examples in a separate dataset."
            )
        if self.label2id is not None and not unlabelled:
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
    "load_unlabelled_relation_text",
    "mark_two_entities",
    "mark_words",
    "marker_tokens",
    "parse_marked_sentence",
    "sample_episodes",
    "sample_k_shot",
    "validate_spans",
]
