"""Inputs that used to give silently wrong results in the faithfulness wing.

`TaskVector * nan` poisoned every weight, a summary cut by `max_length` before its unfaithful span trained as
a faithful one, and an empty dataset trained 0 steps.
"""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset

from faithfulness.helpers import INSTRUCTION, ROWS, tiny_causal_lm, word_tokenizer
from hf_contrastive.faithfulness.arithmetic.task_vectors import TaskVector
from hf_contrastive.faithfulness.spans import UNFAITHFUL_MASK, SpanFeatureBuilder
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer

SPANS_LOGGER = "hf_contrastive.faithfulness.spans"


# -- task vectors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf")])
def test_task_vector_refuses_a_non_finite_scale(scale):
    tau = TaskVector({"w": torch.ones(3)})
    with pytest.raises(ValueError, match="finite number"):
        tau * scale
    with pytest.raises(ValueError, match="finite number"):
        scale * tau
    model = torch.nn.Linear(3, 1, bias=False)
    tau = TaskVector({"weight": torch.ones(1, 3)})
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="finite number"):
        tau.apply_to(model, scale=scale)
    with pytest.raises(ValueError, match="finite number"):
        tau.state_dict_for(model, scale=scale)
    assert torch.equal(model.weight, before)  # nothing was written


def test_task_vector_finite_scales_still_work():
    tau = TaskVector({"w": torch.ones(2)})
    assert torch.equal((tau * -0.5).vector["w"], torch.full((2,), -0.5))
    with pytest.raises(TypeError):
        tau * "2"


# -- spans cut off by max_length -------------------------------------------------------------------------------


def test_span_cut_off_by_max_length_warns_and_is_counted(caplog):
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=4, instruction=INSTRUCTION)
    with caplog.at_level(logging.WARNING, logger=SPANS_LOGGER):
        feats = builder(ROWS[0])  # "london" (the unfaithful span) is the summary's last word
    assert sum(feats[UNFAITHFUL_MASK]) == 0
    assert builder.spans_cut_off == 1
    assert any("unfaithful span" in r.getMessage() for r in caplog.records)


def test_map_warns_once_with_the_count(caplog):
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=4, instruction=INSTRUCTION)
    with caplog.at_level(logging.WARNING, logger=SPANS_LOGGER):
        builder.map(Dataset.from_list(ROWS))
    ours = [r for r in caplog.records if r.name == SPANS_LOGGER]
    assert len(ours) == 1 and "2 of 3 summaries" in ours[0].getMessage()
    assert builder.spans_cut_off == 2  # rows 0 and 1 have spans; row 2 has none
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=SPANS_LOGGER):
        builder.map(ROWS)
    assert builder.spans_cut_off == 4
    assert len([r for r in caplog.records if r.name == SPANS_LOGGER]) == 1


def test_spans_that_fit_are_not_counted(caplog):
    tok = word_tokenizer()
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    with caplog.at_level(logging.WARNING, logger=SPANS_LOGGER):
        builder.map(ROWS)
    assert builder.spans_cut_off == 0
    assert not [r for r in caplog.records if r.name == SPANS_LOGGER]


# -- empty datasets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["train_dataset", "eval_dataset"])
def test_span_trainer_refuses_an_empty_dataset(tmp_path, which):
    tok = word_tokenizer()
    args = SpanUnlikelihoodConfig(
        output_dir=str(tmp_path), instruction=INSTRUCTION, max_length=64, report_to="none", use_cpu=True
    )
    data = {"train_dataset": Dataset.from_list(ROWS)}
    data[which] = Dataset.from_list(ROWS).select([])
    with pytest.raises(ValueError, match=f"SpanUnlikelihoodTrainer got an empty {which}"):
        SpanUnlikelihoodTrainer(model=tiny_causal_lm(len(tok)), args=args, processing_class=tok, **data)
