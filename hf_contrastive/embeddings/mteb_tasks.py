"""mteb tasks read from local files, so that `mteb` runs offline on the benchmark data folder.

`mteb` downloads its tasks from the Hugging Face Hub. `LocalSTSBenchmark` is mteb's STS task on the STS
Benchmark files of the benchmark data folder (`sts/stsbenchmark/sts-{train,dev,test}.csv`, read by
`load_sts_benchmark`): nothing is downloaded. Its main score is mteb's `cosine_spearman`. Any object of
mteb's encoder protocol runs on it, [`SentenceEncoder`] and `BiEncoder` included:

```python
import mteb
from hf_contrastive.embeddings import SentenceEncoder
from hf_contrastive.embeddings.mteb_tasks import LocalSTSBenchmark

model = SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
result = mteb.evaluate(model, LocalSTSBenchmark(), cache=None)
result.task_results[0].get_score()  # 0.8203 for all-MiniLM-L6-v2, equal to STSEvaluator's spearman
```

The task is named `LocalSTSBenchmark` (not mteb's `STSBenchmark`), so mteb's result cache never mixes its
results with those of the Hub copy. Its evaluated split is `test`; `task.filter_eval_splits(["validation"])`
runs the dev split instead (choose settings there, report the test split once).

This module needs `mteb` (`pip install 'hf-contrastive[mteb]'`); the rest of the library does not.
"""

from __future__ import annotations

import os
from typing import Any

from datasets import Dataset, DatasetDict

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.mteb_protocol import MTEB_INSTALL_HINT

try:
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata
except ImportError as err:  # pragma: no cover - exercised only without mteb
    raise ImportError(
        f"hf_contrastive.embeddings.mteb_tasks needs the mteb package: {MTEB_INSTALL_HINT}."
    ) from err

__all__ = ["LocalSTSBenchmark", "STS_SPLIT_FILES"]

# mteb split name -> STS Benchmark file (`sts-<name>.csv`).
STS_SPLIT_FILES = {"test": "test", "validation": "dev", "dev": "dev", "train": "train"}

STSB_CITATION = r"""@inproceedings{cer-etal-2017-semeval,
  title     = {{S}em{E}val-2017 Task 1: Semantic Textual Similarity Multilingual and Crosslingual Focused Evaluation},
  author    = {Cer, Daniel and Diab, Mona and Agirre, Eneko and Lopez-Gazpio, I{\~n}igo and Specia, Lucia},
  booktitle = {Proceedings of the 11th International Workshop on Semantic Evaluation (SemEval-2017)},
  pages     = {1--14},
  year      = {2017}
}"""


class LocalSTSBenchmark(AbsTaskSTS):
    """mteb's STS Benchmark task on local files (see the module docstring).

    Args:
        path (`str | os.PathLike | None`, *optional*): the `stsbenchmark` folder or the benchmark data root;
            defaults to `data_dir()/sts/stsbenchmark` (`HF_CONTRASTIVE_DATA`, else `../shared/data`).
        kwargs (`Any`, *optional*): passed to mteb's `AbsTask` (`seed`).
    """

    min_score = 0
    max_score = 5

    metadata = TaskMetadata(
        name="LocalSTSBenchmark",
        dataset={"path": "local/stsbenchmark", "revision": "local-files"},
        description=(
            "STS Benchmark (Cer et al., 2017) read from local files by hf-contrastive: English sentence pairs "
            "scored 0-5 for semantic similarity (train 5749, dev 1500, test 1379 pairs)."
        ),
        reference="https://aclanthology.org/S17-2001",
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
        date=("2012-01-01", "2017-12-31"),
        domains=["News", "Written"],
        task_subtypes=[],
        license="cc-by-sa-4.0",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation=STSB_CITATION,
        adapted_from=["STSBenchmark"],
    )

    def __init__(self, path: str | os.PathLike | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the evaluated splits from the local STS Benchmark files (no download).

        Raises:
            `ValueError`: for a split other than `test`, `validation` (`dev`) or `train`.
            `FileNotFoundError`: when the STS Benchmark files are not where `path` says.
        """
        if self.data_loaded:
            return
        splits = {}
        for split in self.eval_splits:
            if split not in STS_SPLIT_FILES:
                raise ValueError(
                    f"LocalSTSBenchmark has no split {split!r}; expected one of {sorted(STS_SPLIT_FILES)}."
                )
            rows = load_sts_benchmark(STS_SPLIT_FILES[split], self.path)
            splits[split] = Dataset.from_dict(
                {
                    "sentence1": [r.sentence1 for r in rows],
                    "sentence2": [r.sentence2 for r in rows],
                    "score": [float(r.score) for r in rows],
                }
            )
        self.dataset = {"default": DatasetDict(splits)}
        self.data_loaded = True
