"""Loaders for the benchmark formats the wings train and evaluate on.

- STS Benchmark (`sts-{split}.csv`, tab-separated) as `STSExample` rows.
- The Microsoft Research Paraphrase Corpus (`msr-para-{train,val,test}.tsv`) as `ParaphrasePair` rows.
- Retrieval benchmarks as a BEIR triple `(corpus, queries, qrels)`: a BEIR folder
  (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) or the SciFact CSV release of the
  benchmark data folder (the BEIR test split is the 300 claims of `claims_validation.csv` that
  cite documents; `split="train"` reads `claims_train.csv`).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import tokenize
from dataclasses import dataclass
from pathlib import Path

from hf_contrastive.core.utils import data_dir

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


MRPC_SPLITS = ("train", "dev", "test")
_MRPC_FILES = {"train": "msr-para-train.tsv", "dev": "msr-para-val.tsv", "test": "msr-para-test.tsv"}
_MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


@dataclass(frozen=True)
class ParaphrasePair:
    """A sentence pair labelled 1 when the two sentences are paraphrases.

    Args:
        sentence1 (`str`): first sentence.
        sentence2 (`str`): second sentence.
        label (`int`): 1 for a paraphrase, 0 otherwise.
    """

    sentence1: str
    sentence2: str
    label: int


def load_mrpc(split: str = "train", folder: str | Path | None = None) -> list[ParaphrasePair]:
    """MRPC pairs of one split (the benchmark data's release: train 3576, val 500, test 1725).

    Args:
        split (`str`, *optional*, defaults to `"train"`): `train`, `dev` (the released `val` file) or `test`.
        folder (`str | Path`, *optional*): the MRPC folder (default: `paraphrase/mrpc` of the benchmark data folder).

    Returns:
        `list[ParaphrasePair]`: the pairs in file order.
    """
    if split not in MRPC_SPLITS:
        raise ValueError(f"Unknown MRPC split {split!r}; expected one of {MRPC_SPLITS}.")
    folder = Path(folder) if folder is not None else data_dir() / "paraphrase" / "mrpc"
    path = folder / _MRPC_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"MRPC file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or lines[0].split("\t") != _MRPC_HEADER:
        raise ValueError(f"{path}: expected the header {_MRPC_HEADER}, got {lines[:1]}.")
    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5 or fields[0] not in ("0", "1"):
            raise ValueError(
                f"{path}, line {number}: expected 5 tab-separated fields with a 0/1 quality first, got {line[:80]!r}."
            )
        pairs.append(ParaphrasePair(fields[3].strip(), fields[4].strip(), int(fields[0])))
    return pairs


@dataclass
class STSExample:
    sentence1: str
    sentence2: str
    score: float


def load_sts_benchmark(split: str = "test", path: str | Path | None = None) -> list[STSExample]:
    """Read STS Benchmark `sts-{split}.csv` (tab-separated; the first 7 fields are used).

    Args:
        split (`str`, *optional*, defaults to `"test"`): `train`, `dev` or `test`.
        path (`str | Path | None`, *optional*): the `stsbenchmark` folder, or the benchmark data root; defaults to
            `data_dir()/sts/stsbenchmark`.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}.")
    folder = Path(path) if path is not None else data_dir() / "sts" / "stsbenchmark"
    if (folder / "sts" / "stsbenchmark").is_dir():
        folder = folder / "sts" / "stsbenchmark"
    file = folder / f"sts-{split}.csv"
    if not file.is_file():
        raise FileNotFoundError(f"STS Benchmark file not found: {file}")
    rows = []
    with open(file, encoding="utf-8") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(fields) < 7:
                raise ValueError(
                    f"{file}:{lineno}: expected at least 7 tab-separated fields, got {len(fields)}."
                )
            rows.append(STSExample(fields[5], fields[6], float(fields[4])))
    return rows


def load_beir(
    folder_or_name: str | os.PathLike = "scifact", split: str = "test"
) -> tuple[Corpus, Queries, Qrels]:
    """Read a retrieval benchmark as `(corpus, queries, qrels)`.

    Args:
        folder_or_name (`str | os.PathLike`, *optional*, defaults to `"scifact"`): a BEIR folder (`corpus.jsonl` with `_id`/`title`/`text`,
            `queries.jsonl` with `_id`/`text`, `qrels/<split>.tsv` with a header and
            `query-id`, `corpus-id`, `score` columns), the SciFact CSV folder
            (`corpus_train.csv` + `claims_*.csv`), or a name under
            `data_dir()/retrieval` (`"scifact"`).
        split (`str`, *optional*, defaults to `"test"`): `"test"` or `"train"` (any `qrels/<split>.tsv` for BEIR folders; SciFact
            maps `test` to `claims_validation.csv` and `train` to `claims_train.csv`).
    Returns:
        `corpus` `{doc_id: {"title": ..., "text": ...}}`, `queries` `{query_id: text}`
        (only queries that have qrels in the split, as BEIR's loader does), `qrels`
        `{query_id: {doc_id: grade}}`.
    """
    folder = Path(folder_or_name)
    if not folder.is_dir():
        named = data_dir() / "retrieval" / str(folder_or_name)
        if named.is_dir():
            folder = named
        else:
            raise FileNotFoundError(
                f"Retrieval data not found: {str(folder_or_name)!r} is neither a folder nor a data set under "
                f"{data_dir() / 'retrieval'}."
            )
    if (folder / "corpus_train.csv").is_file():
        return _load_scifact_csv(folder, split)
    if (folder / "corpus.jsonl").is_file():
        return _load_beir_folder(folder, split)
    raise ValueError(
        f"{folder} is not a retrieval folder: expected corpus.jsonl + queries.jsonl + qrels/{split}.tsv "
        "(BEIR layout) or corpus_train.csv + claims_*.csv (SciFact CSV release)."
    )


def _load_beir_folder(folder: Path, split: str) -> tuple[Corpus, Queries, Qrels]:
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(f"No qrels for split {split!r} in {folder}; available splits: {have}.")
    corpus: Corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    qrels: Qrels = {}
    with open(qrels_file, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        header = next(reader, None)
        if header is not None and header[:2] != ["query-id", "corpus-id"]:
            # No header line: the first row is data.
            reader = iter([header, *reader])
        for fields in reader:
            if len(fields) < 3:
                continue
            qrels.setdefault(str(fields[0]), {})[str(fields[1])] = int(float(fields[2]))
    queries: Queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                qid = str(row["_id"])
                if qid in qrels:
                    queries[qid] = row["text"]
    return corpus, queries, qrels


def _abstract_sentences(cell: str) -> list[str]:
    """The sentences of a SciFact CSV `abstract` cell.

    The cell is the printed form of an array of Python string literals separated by white
    space (`['First.'\\n 'Second.']`); implicit concatenation would glue the sentences
    together, so each literal is read on its own.
    """
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(cell).readline):
            if tok.type == tokenize.STRING:
                out.append(ast.literal_eval(tok.string))
    except (tokenize.TokenError, SyntaxError, ValueError) as err:
        raise ValueError(f"Cannot read a SciFact abstract cell: {cell[:80]!r}...") from err
    return out


def _doc_ids(cell: str) -> list[str]:
    return [t for t in cell.strip().strip("[]").replace(",", " ").split() if t]


def _load_scifact_csv(folder: Path, split: str) -> tuple[Corpus, Queries, Qrels]:
    files = {"test": "claims_validation.csv", "train": "claims_train.csv"}
    if split not in files:
        raise ValueError(
            f"SciFact split must be 'test' (claims_validation.csv, BEIR's test) or 'train', got {split!r}."
        )
    corpus: Corpus = {}
    with open(folder / "corpus_train.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = " ".join(_abstract_sentences(row["abstract"]))
            corpus[str(int(row["doc_id"]))] = {"title": row["title"], "text": text}
    queries: Queries = {}
    qrels: Qrels = {}
    with open(folder / files[split], encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            cited = _doc_ids(row["cited_doc_ids"])
            if not cited:
                continue
            qid = str(int(row["id"]))
            queries[qid] = row["claim"]
            for did in cited:
                qrels.setdefault(qid, {})[did] = 1
    return corpus, queries, qrels


__all__ = ["Corpus", "Qrels", "Queries", "STSExample", "load_beir", "load_sts_benchmark"]
