"""Inputs that used to give silently wrong results in the relation wing.

A batch mixing labelled and unlabelled examples lost every label, and an empty dataset trained 0 steps.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import bert_config, bert_tokenizer
from transformers import BertForMaskedLM

from hf_contrastive.relation.mslm import MaskedSpanLMCollator
from hf_contrastive.relation.tkre import TKREConfig, TKREPretrainer
from hf_contrastive.relation.trainer import RelationClassificationTrainer, RelationFinetuneConfig

from .helpers import LABELS, examples, tiny_classifier


def _mixed():
    rows = examples()[:3]
    rows[1] = dataclasses.replace(rows[1], label=None)
    return rows


def test_a_mixed_batch_is_refused_instead_of_dropping_every_label(tmp_path):
    collate = tiny_classifier(tmp_path).collator()
    with pytest.raises(ValueError, match=r"mixes labelled and unlabelled.*1 of 3.*\['1'\]"):
        collate(_mixed())


def test_fully_labelled_and_fully_unlabelled_batches_still_collate(tmp_path):
    collate = tiny_classifier(tmp_path).collator()
    labelled = collate(examples()[:3])
    assert labelled["labels"].tolist() == [LABELS.index(e.label) for e in examples()[:3]]
    unlabelled = collate([dataclasses.replace(e, label=None) for e in examples()[:3]])
    assert "labels" not in unlabelled


def test_masked_span_lm_reads_no_relation_labels_so_mixed_batches_pass(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    tok.add_tokens(["[E1]", "[/E1]", "[E2]", "[/E2]"], special_tokens=True)
    collate = MaskedSpanLMCollator(
        tok, marker_scheme="entity_marker", label2id={lab: i for i, lab in enumerate(LABELS)}
    )
    batch = collate(_mixed())
    assert "relation_labels" not in batch and "labels" in batch  # MLM labels only


@pytest.mark.parametrize("which", ["train_dataset", "eval_dataset"])
def test_relation_trainer_refuses_an_empty_dataset(tmp_path, which):
    args = RelationFinetuneConfig(
        output_dir=str(tmp_path / "ft"), max_steps=1, use_cpu=True, disable_tqdm=True
    )
    data = {"train_dataset": examples(), which: []}
    with pytest.raises(ValueError, match=f"RelationClassificationTrainer got an empty {which}"):
        RelationClassificationTrainer(tiny_classifier(tmp_path), args=args, **data)


def test_tkre_refuses_an_empty_stage_dataset(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(bert_config(len(tok)))
    args = TKREConfig(output_dir=str(tmp_path / "out"), use_cpu=True, disable_tqdm=True)
    with pytest.raises(ValueError, match="TKREPretrainer got an empty stage1_dataset"):
        TKREPretrainer(
            mlm,
            args=args,
            stage1_dataset=[],
            stage2_dataset=examples(),
            relations=LABELS,
            processing_class=tok,
        )
