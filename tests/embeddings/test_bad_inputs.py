"""Inputs that used to give silently wrong results or a late crash in the embeddings wing.

STS evaluation of NaN embeddings or constant scores, NLI class ids taken as similarity scores, an empty
training set, `encode(max_length=0)`, and a dataset whose last batch has a single row.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

from hf_contrastive.embeddings.sts import aggregate_senteval, evaluate_sts
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

STS_LOGGER = "hf_contrastive.embeddings.sts"


class TableEncoder:
    """`encode` returning fixed rows per text, so a test controls every embedding."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts, batch_size=32, **kwargs):
        return torch.tensor([self.table[t] for t in texts], dtype=torch.float32)


PAIRS = [("a", "b"), ("c", "d"), ("e", "f")]
TABLE = {
    "a": [1.0, 0.0],
    "b": [1.0, 0.1],
    "c": [0.0, 1.0],
    "d": [1.0, 0.0],
    "e": [1.0, 1.0],
    "f": [1.0, 0.5],
}


def _config(tmp_path, **kw) -> ContrastiveConfig:
    kw.setdefault("per_device_train_batch_size", 4)
    return ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        **kw,
    )


# -- STS ----------------------------------------------------------------------------------------------------


def test_sts_refuses_nan_embeddings_and_names_the_pairs():
    table = dict(TABLE, d=[float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"NaN or infinite embeddings for 1 of 3 second sentences.*row 1"):
        evaluate_sts(TableEncoder(table), PAIRS, scores=[1.0, 2.0, 3.0])


def test_sts_warns_once_when_the_gold_scores_are_constant(caplog):
    with caplog.at_level(logging.WARNING, logger=STS_LOGGER):
        out = evaluate_sts(TableEncoder(TABLE), PAIRS, scores=[2.0, 2.0, 2.0])
    assert all(math.isnan(v) for v in out.values())
    gold_warnings = [r for r in caplog.records if "gold scores are all" in r.getMessage()]
    assert len(gold_warnings) == 1


def test_sts_warns_when_the_predictions_are_constant(caplog):
    same = {t: [1.0, 0.0] for t in TABLE}
    with caplog.at_level(logging.WARNING, logger=STS_LOGGER):
        out = evaluate_sts(TableEncoder(same), PAIRS, scores=[1.0, 2.0, 3.0], similarities=("cosine",))
    assert math.isnan(out["spearman_cosine"])
    assert any("predictions are constant" in r.getMessage() for r in caplog.records)


def test_sts_defined_correlations_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger=STS_LOGGER):
        out = evaluate_sts(TableEncoder(TABLE), PAIRS, scores=[3.0, 1.0, 2.0], similarities=("cosine",))
    assert math.isfinite(out["spearman_cosine"])
    assert not [r for r in caplog.records if r.name == STS_LOGGER]


def test_senteval_aggregation_warns_on_an_undefined_subset(caplog):
    with caplog.at_level(logging.WARNING, logger=STS_LOGGER):
        res = aggregate_senteval({"flat": ([0.1, 0.2, 0.3], [1.0, 1.0, 1.0]), "ok": ([0.1, 0.2], [1.0, 2.0])})
    assert math.isnan(res["flat"]["spearman"])
    assert any("subset 'flat'" in r.getMessage() for r in caplog.records)


# -- column roles: class ids are not scores -----------------------------------------------------------------


NLI = {
    "premise": ["a man is eating food", "dog runs in park", "cat sleeps on sofa"],
    "hypothesis": ["a man eats", "dog sleeps", "cat runs"],
    "label": [0, 1, 2],
}


def test_nli_class_ids_are_not_taken_as_cosent_scores(tmp_path, tiny_encoder):
    with pytest.raises(ValueError, match=r"'label' holds integers.*score_column='label'.*triplets"):
        ContrastiveTrainer(model=tiny_encoder, args=_config(tmp_path), train_dataset=Dataset.from_dict(NLI))


def test_class_label_column_is_refused_too(tmp_path, tiny_encoder):
    features = Features(
        {
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )
    ds = Dataset.from_dict(NLI, features=features)
    with pytest.raises(ValueError, match="holds class labels"):
        ContrastiveTrainer(model=tiny_encoder, args=_config(tmp_path), train_dataset=ds)


def test_integer_scores_named_explicitly_and_float_scores_still_train_cosent(tmp_path, tiny_encoder):
    explicit = ContrastiveTrainer(
        model=tiny_encoder,
        args=_config(tmp_path, score_column="label"),
        train_dataset=Dataset.from_dict(NLI),
    )
    assert explicit.roles.layout == "scored_pairs" and explicit.roles.score == "label"
    floats = Dataset.from_dict({**NLI, "label": [0.0, 2.5, 5.0]})
    detected = ContrastiveTrainer(model=tiny_encoder, args=_config(tmp_path), train_dataset=floats)
    assert detected.roles.layout == "scored_pairs"


# -- empty data, encode arguments ----------------------------------------------------------------------------


def test_empty_train_dataset_is_refused_at_construction(tmp_path, tiny_encoder):
    empty = Dataset.from_dict({"anchor": [], "positive": []})
    with pytest.raises(ValueError, match="empty train_dataset"):
        ContrastiveTrainer(model=tiny_encoder, args=_config(tmp_path, max_steps=1), train_dataset=empty)


def test_empty_eval_dataset_is_refused_at_construction(tmp_path, tiny_encoder):
    data = Dataset.from_dict({"anchor": ["dog runs", "cat sleeps"], "positive": ["dog", "cat"]})
    with pytest.raises(ValueError, match="empty eval_dataset"):
        ContrastiveTrainer(
            model=tiny_encoder,
            args=_config(tmp_path),
            train_dataset=data,
            eval_dataset=data.select([]),
        )


@pytest.mark.parametrize("max_length", [0, -3])
def test_encode_refuses_max_length_below_one(tiny_encoder, max_length):
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        tiny_encoder.encode(["dog runs in park"], max_length=max_length)


# -- a 1-row tail batch with in-batch negatives ---------------------------------------------------------------

WORDS = "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa children".split()


@pytest.mark.parametrize("no_duplicates", [True, False])
def test_nine_rows_at_batch_four_train_without_a_single_anchor_batch(
    tmp_path, tiny_encoder, caplog, no_duplicates
):
    ds = Dataset.from_dict({"anchor": WORDS[:9], "positive": WORDS[9:18]})
    trainer = ContrastiveTrainer(
        model=tiny_encoder,
        args=_config(tmp_path, num_train_epochs=1, no_duplicates=no_duplicates),
        train_dataset=ds,
    )
    sizes = [len(batch["input_ids"]) // 2 for batch in trainer.get_train_dataloader()]
    assert min(sizes) >= 2
    with caplog.at_level(logging.WARNING):
        out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    said = "1 row(s) merged into the previous batch" if no_duplicates else "last batch of 1 row(s)"
    assert any(said in r.getMessage() for r in caplog.records)
    assert trainer.args.dataloader_drop_last is False  # the user's setting is left as it was


def test_a_single_row_cannot_train_in_batch_negatives(tmp_path, tiny_encoder):
    ds = Dataset.from_dict({"anchor": ["dog runs"], "positive": ["dog"]})
    with pytest.raises(ValueError, match="at least 2 rows"):
        ContrastiveTrainer(model=tiny_encoder, args=_config(tmp_path), train_dataset=ds)
