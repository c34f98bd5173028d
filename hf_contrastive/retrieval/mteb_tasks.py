"""mteb retrieval tasks read from local files, so that `mteb` runs offline.

- `LocalSciFact`: SciFact as BEIR and MTEB evaluate it, read by `load_beir` from the benchmark data folder
  (the SciFact CSV release: the 300 claims of `claims_validation.csv` that cite documents, 339 qrels, 5183
  abstracts) or from a BEIR folder. Main score `ndcg_at_10`.
- `LocalBEIRTriple`: any `(corpus, queries, qrels)` triple held in memory (a BEIR folder read with
  `load_beir`, a subset of one, a private collection) as an mteb retrieval task.

```python
import mteb
from hf_contrastive.retrieval import BiEncoder
from hf_contrastive.retrieval.mteb_tasks import LocalSciFact

model = BiEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
mteb.evaluate(model, LocalSciFact(), cache=None).task_results[0].get_score()  # nDCG@10 0.6451
```

mteb embeds documents as `(title + " " + text).strip()`, as `evaluate_retrieval` does, queries with
`prompt_type="query"` and documents with `prompt_type="document"`: a [`BiEncoder`] routes them to its
query and document towers and prompts. The task names (`LocalSciFact`, `LocalBEIRTriple`) differ from
mteb's Hub tasks so that its result cache never mixes the two.

This module needs `mteb` (`pip install 'hf-contrastive[mteb]'`); the rest of the library does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from datasets import Dataset

from hf_contrastive.core.data.benchmarks import Corpus, Qrels, Queries, load_beir
from hf_contrastive.core.mteb_protocol import MTEB_INSTALL_HINT

try:
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
except ImportError as err:  # pragma: no cover - exercised only without mteb
    raise ImportError(
        f"hf_contrastive.retrieval.mteb_tasks needs the mteb package: {MTEB_INSTALL_HINT}."
    ) from err

__all__ = ["LocalBEIRTriple", "LocalSciFact", "retrieval_split_data"]

SCIFACT_CITATION = r"""@inproceedings{wadden-etal-2020-fact,
  title     = {Fact or Fiction: Verifying Scientific Claims},
  author    = {Wadden, David and Lin, Shanchuan and Lo, Kyle and Wang, Lucy Lu and van Zuylen, Madeleine and
               Cohan, Arman and Hajishirzi, Hannaneh},
  booktitle = {Proceedings of EMNLP 2020},
  pages     = {7534--7550},
  year      = {2020}
}"""


def retrieval_split_data(
    corpus: Mapping[str, Any], queries: Mapping[str, str], qrels: Qrels
) -> dict[str, Any]:
    """mteb's split data (`corpus` and `queries` datasets, `relevant_docs`, no `top_ranked`) of a BEIR triple.

    Documents and queries keep the triple's order, so the encoder sees them as `evaluate_retrieval` does.

    Args:
        corpus (`Mapping[str, Any]`): `{doc_id: {"title": ..., "text": ...}}` or `{doc_id: text}`.
        queries (`Mapping[str, str]`): `{query_id: text}`.
        qrels (`Qrels`): `{query_id: {doc_id: grade}}`.

    Raises:
        `ValueError`: for an empty corpus or query set, or a document or query that is not text.
    """
    if not corpus or not queries:
        raise ValueError(
            f"A retrieval task needs documents and queries; got {len(corpus)} documents, {len(queries)} queries."
        )
    ids, titles, texts = [], [], []
    for doc_id, doc in corpus.items():
        if isinstance(doc, str):
            title, text = "", doc
        elif isinstance(doc, Mapping):
            title, text = doc.get("title") or "", doc.get("text") or ""
        else:
            raise ValueError(
                f"Document {doc_id!r} must be a string or a {{'title', 'text'}} dict, got {doc!r}."
            )
        if not isinstance(title, str) or not isinstance(text, str):
            raise ValueError(f"Document {doc_id!r} has a non-string title or text.")
        ids.append(str(doc_id))
        titles.append(title)
        texts.append(text)
    bad = [q for q, t in queries.items() if not isinstance(t, str)]
    if bad:
        raise ValueError(f"Query {bad[0]!r} is not a string ({type(queries[bad[0]]).__name__}).")
    return {
        "corpus": Dataset.from_dict({"id": ids, "title": titles, "text": texts}),
        "queries": Dataset.from_dict({"id": [str(q) for q in queries], "text": list(queries.values())}),
        "relevant_docs": {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()},
        "top_ranked": None,
    }


class _LocalRetrieval(AbsTaskRetrieval):
    """A retrieval task whose splits come from `triple(split)` instead of the Hub."""

    def triple(self, split: str) -> tuple[Corpus, Queries, Qrels]:
        raise NotImplementedError

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the evaluated splits from local data (no download)."""
        if self.data_loaded:
            return
        self.dataset = {
            "default": {split: retrieval_split_data(*self.triple(split)) for split in self.eval_splits}
        }
        self.data_loaded = True


class LocalSciFact(_LocalRetrieval):
    """SciFact (BEIR's test split) as an mteb retrieval task on local files (see the module docstring).

    Args:
        folder_or_name (`str | os.PathLike`, *optional*, defaults to `"scifact"`): the SciFact CSV folder, a BEIR
            folder, or a name under `data_dir()/retrieval` (see `load_beir`).
        kwargs (`Any`, *optional*): passed to mteb's `AbsTask` (`seed`).
    """

    metadata = TaskMetadata(
        name="LocalSciFact",
        dataset={"path": "local/scifact", "revision": "local-files"},
        description=(
            "SciFact (Wadden et al., 2020) read from local files by hf-contrastive: scientific claims as queries, "
            "the abstracts that support or refute them as relevant documents (BEIR's test split: 300 claims, "
            "5183 abstracts)."
        ),
        reference="https://github.com/allenai/scifact",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=("2020-01-01", "2020-12-31"),
        domains=["Academic", "Medical", "Written"],
        task_subtypes=["Claim verification"],
        license="cc-by-nc-4.0",
        annotations_creators="expert-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation=SCIFACT_CITATION,
        adapted_from=["SciFact"],
    )

    def __init__(self, folder_or_name: str | os.PathLike = "scifact", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder_or_name = folder_or_name

    def triple(self, split: str) -> tuple[Corpus, Queries, Qrels]:
        return load_beir(self.folder_or_name, split)


class LocalBEIRTriple(_LocalRetrieval):
    """An in-memory `(corpus, queries, qrels)` triple as an mteb retrieval task (split `test`).

    Args:
        corpus (`Mapping[str, Any]`): `{doc_id: {"title": ..., "text": ...}}` or `{doc_id: text}`.
        queries (`Mapping[str, str]`): `{query_id: text}`.
        qrels (`Mapping[str, Mapping[str, int]]`): `{query_id: {doc_id: grade}}`; grades > 0 are relevant.
        kwargs (`Any`, *optional*): passed to mteb's `AbsTask` (`seed`).
    """

    metadata = TaskMetadata(
        name="LocalBEIRTriple",
        dataset={"path": "local/beir-triple", "revision": "in-memory"},
        description="A BEIR-layout retrieval collection (corpus, queries, qrels) given in memory to hf-contrastive.",
        reference="https://github.com/beir-cellar/beir",
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        domains=[],
        task_subtypes=[],
        license="not specified",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )

    def __init__(
        self,
        corpus: Mapping[str, Any],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._triple = (dict(corpus), dict(queries), {q: dict(d) for q, d in qrels.items()})

    def triple(self, split: str) -> tuple[Corpus, Queries, Qrels]:
        if split != "test":
            raise ValueError(f"LocalBEIRTriple holds one split, 'test'; got {split!r}.")
        return self._triple
