"""The relation instance: [`RelationExample`] (words, subject and object word spans, types, label) and the
span checks every loader, collator and processor of the wing shares.

It lives apart from `data.py` so that the entity-marker processor (`processing.py`) and the data module
(`data.py`, whose collator uses the processor) both build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RelationExample:
    """One relation instance.

    Attributes:
        tokens: the sentence as words.
        subject: `(start, end)` word span of the subject (end exclusive).
        object: `(start, end)` word span of the object (end exclusive).
        label: relation label (`None` for unlabelled text).
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
    """Raise `ValueError` for an empty, out-of-range or overlapping pair of entity spans."""
    at = f" (example {where})" if where is not None else ""
    n = len(tokens)
    for name, (s, e) in (("subject", subject), ("object", object)):
        if not 0 <= s < e <= n:
            raise ValueError(
                f"The {name} span [{s}, {e}) is empty or outside the sentence of {n} words{at}; expected "
                f"word indices 0 <= start < end <= {n} (end exclusive)."
            )
    if subject[0] < object[1] and object[0] < subject[1]:
        raise ValueError(
            f"The subject span {list(subject)} and the object span {list(object)} overlap{at}; "
            "the two entities of a relation instance must be disjoint."
        )


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


__all__ = ["RelationExample", "as_examples", "validate_spans"]
