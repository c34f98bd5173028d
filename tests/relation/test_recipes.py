"""The relation recipe task: packaged recipes resolve; pretraining then fine-tuning run end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import bert_config, bert_tokenizer
from transformers import BertForMaskedLM

from hf_contrastive.recipes import load_recipe, run_recipe
from hf_contrastive.relation.modeling import RelationClassifier
from hf_contrastive.relation.tkre import RelationFinetuneConfig, TKREConfig

from .helpers import examples


def test_packaged_relation_recipes_resolve():
    pre = load_recipe("tkre-pretrain")
    ft = load_recipe("re-finetune")
    assert pre["task"] == ft["task"] == "relation"
    assert "${" not in json.dumps(pre) + json.dumps(ft)
    assert set(pre["method"]) <= set(TKREConfig.__dataclass_fields__)
    assert set(pre["args"]) <= set(TKREConfig.__dataclass_fields__)
    assert set(ft["args"]) <= set(RelationFinetuneConfig.__dataclass_fields__)
    assert pre["method"]["p_between"] == 0.8 and pre["method"]["scl_temperature"] == 0.1


def test_pretrain_then_finetune_recipes(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    BertForMaskedLM(bert_config(len(tok))).save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in examples()))
    common = "save_strategy: 'no', report_to: 'none', disable_tqdm: true, use_cpu: true"
    text = tmp_path / "wiki.txt"
    text.write_text("the dog runs in the big green park today\n" * 4)
    unlabelled = f"stage1_unlabelled: {{dataset: unlabelled, source: text, path: {text}}}"
    pre = tmp_path / "pre.yaml"
    pre.write_text(
        "task: relation\n"
        f"model: {{name_or_path: {tmp_path / 'mlm'}}}\n"
        f"data: {{stage1: {{dataset: jsonl, path: {data}}}, {unlabelled}, stage2: {{dataset: jsonl, path: {data}}}}}\n"
        "method: {stage1_epochs: 1, stage2_epochs: 1, mlm_head_warmup_steps: 2}\n"
        f"args: {{output_dir: {tmp_path / 'pre'}, per_device_train_batch_size: 3, {common}}}\n"
    )
    out = run_recipe(load_recipe(pre))
    assert "stage1_loss" in out and (tmp_path / "pre" / "encoder" / "config.json").is_file()
    assert "mlm_head_warmup_last_loss" in out  # the head warm-up ran before stage 1
    card = (tmp_path / "pre" / "encoder" / "README.md").read_text()
    assert "MLM-head warm-up" in card
    ft = tmp_path / "ft.yaml"
    ft.write_text(
        "task: relation\n"
        f"model: {{name_or_path: {tmp_path / 'pre' / 'encoder'}, no_relation_label: Other}}\n"
        f"data: {{train: {{dataset: jsonl, path: {data}}}, eval: {{dataset: jsonl, path: {data}}}}}\n"
        f"args: {{output_dir: {tmp_path / 'ft'}, max_steps: 2, per_device_train_batch_size: 3, {common}}}\n"
    )
    out = run_recipe(load_recipe(ft))
    assert 0.0 <= out["eval_micro_f1"] <= 1.0 and "eval_official_macro_f1" in out
    model = RelationClassifier.from_pretrained(tmp_path / "ft" / "final")
    assert sorted(model.config.label2id) == sorted({e.label for e in examples()})
    card = (tmp_path / "ft" / "final" / "README.md").read_text()
    assert "micro_f1" in card
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "task: relation\n"
        f"model: {{name_or_path: {tmp_path / 'mlm'}}}\n"
        f"data: {{train: {{dataset: jsonl, path: {data}}}, stage1: {{dataset: jsonl, path: {data}}}}}\n"
    )
    with pytest.raises(ValueError, match="not both"):
        run_recipe(load_recipe(bad))
    with pytest.raises(ValueError, match=r"\['p_between'\] do not apply to fine-tuning"):
        run_recipe(load_recipe(ft, ["--method.p_between", "0.5"]))
    with pytest.raises(ValueError, match=r"\['label_smoothing'\] do not apply to TKRE pretraining"):
        run_recipe(load_recipe(pre, ["--method.label_smoothing", "0.1"]))
