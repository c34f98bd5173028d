"""Readers that turn benchmark files into role-named `datasets.Dataset`s for the trainers."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.utils import data_dir


def text_lines(
    path: str | Path, max_rows: int | None = None, column: str = "text", min_chars: int = 1
) -> Any:
    """One sentence per line (e.g. SimCSE's wiki1m) -> Dataset with a single `column`."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Text file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if len(line) >= min_chars:
                rows.append(line)
                if max_rows is not None and len(rows) >= max_rows:
                    break
    if not rows:
        raise ValueError(f"{path} has no non-empty lines.")
    return Dataset.from_dict({column: rows})


def snli_triples(folder: str | Path | None = None, split: str = "dev", max_rows: int | None = None) -> Any:
    """SNLI (SentEval layout: `s1.<split>`, `s2.<split>`, `labels.<split>`) grouped by premise into
    (anchor = premise, positive = an entailment, negative = a contradiction) triples, SimCSE's supervised data."""

    folder = Path(folder) if folder is not None else data_dir() / "nli" / "snli"
    files = [folder / f"{name}.{split}" for name in ("s1", "s2", "labels")]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"SNLI file not found: {f}")
    s1, s2, labels = (f.read_text(encoding="utf-8").splitlines() for f in files)
    if not len(s1) == len(s2) == len(labels):
        raise ValueError(f"SNLI {split}: {len(s1)} premises, {len(s2)} hypotheses, {len(labels)} labels.")
    groups: OrderedDict[str, dict[str, str]] = OrderedDict()
    for p, h, y in zip(s1, s2, labels):
        groups.setdefault(p.strip(), {}).setdefault(y.strip(), h.strip())
    out = {"anchor": [], "positive": [], "negative": []}
    for premise, by_label in groups.items():
        if "entailment" in by_label and "contradiction" in by_label:
            out["anchor"].append(premise)
            out["positive"].append(by_label["entailment"])
            out["negative"].append(by_label["contradiction"])
            if max_rows is not None and len(out["anchor"]) >= max_rows:
                break
    return Dataset.from_dict(out)


def stsb_pairs(split: str = "train", path: str | Path | None = None, normalise: bool = False) -> Any:
    """STS Benchmark as scored pairs (`sentence1`, `sentence2`, `score`; 0-5, or 0-1 with `normalise`)."""

    rows = load_sts_benchmark(split, path)
    scale = 5.0 if normalise else 1.0
    return Dataset.from_dict(
        {
            "sentence1": [r.sentence1 for r in rows],
            "sentence2": [r.sentence2 for r in rows],
            "score": [r.score / scale for r in rows],
        }
    )


def load_source(spec: dict[str, Any]) -> Any:
    """Build a training set from a recipe's `data.train` entry.

    `{"type": "text", "path": ..., "max_rows": ...}`, `{"type": "snli", "split": "dev"}`,
    `{"type": "stsb", "split": "train"}`, or `{"type": "files", "format": "json"|"csv", "path": ...}`
    (read with `datasets.load_dataset` from local files).
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "text":
        return text_lines(spec.pop("path"), **spec)
    if kind == "snli":
        return snli_triples(spec.pop("path", None), **spec)
    if kind == "stsb":
        return stsb_pairs(spec.pop("split", "train"), spec.pop("path", None), **spec)
    if kind == "files":
        fmt = spec.pop("format", "json")
        max_rows = spec.pop("max_rows", None)
        ds = load_dataset(fmt, data_files=spec.pop("path"), split="train", **spec)
        return ds.select(range(min(max_rows, len(ds)))) if max_rows else ds
    raise ValueError(f"Unknown data type {kind!r}; expected 'text', 'snli', 'stsb' or 'files'.")


__all__ = ["text_lines", "snli_triples", "stsb_pairs", "load_source"]
