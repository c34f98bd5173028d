"""Span-unlikelihood models and task-negated adapters save and push with a card naming their objective, whose
snippet runs against the saved folder and matches the in-memory model."""

from __future__ import annotations

import pytest
import torch
from card_checks import (
    check_card,
    check_causal_lm_snippet,
    check_failed_save_keeps_previous,
    install_fake_hub,
    local_causal_lm,
)
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from faithfulness.helpers import INSTRUCTION, ROWS
from hf_contrastive.faithfulness.arithmetic import negate_adapter
from hf_contrastive.faithfulness.arithmetic.negation import save_negated_adapter
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer

GREEDY = {"max_new_tokens": 16, "do_sample": False}
PEFT_WRITER = "peft.peft_model.safe_save_file"


def _trainer(tmp_path, objective: str, lora: bool) -> SpanUnlikelihoodTrainer:
    model, tok = local_causal_lm(tmp_path / "base", chat=True)
    args = SpanUnlikelihoodConfig(
        output_dir=str(tmp_path / "out"),
        objective=objective,
        eps=0.5,
        instruction=INSTRUCTION,
        max_length=64,
        per_device_train_batch_size=3,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    lora_config = (
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        if lora
        else None
    )
    trainer = SpanUnlikelihoodTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tok,
        peft_config=lora_config,
    )
    trainer.card_info.base_model = "org/tiny-llama"
    trainer.train()
    return trainer


@pytest.mark.parametrize(("objective", "lora"), [("unlikelihood", True), ("gradient_ascent", False)])
def test_span_trainer_save_model_writes_card_with_runnable_snippet(tmp_path, objective, lora):
    trainer = _trainer(tmp_path, objective, lora)
    folder = tmp_path / "final"
    trainer.save_model(str(folder))
    card = check_card(folder, "org/tiny-llama", "text-generation")
    assert "faithfulness" in card.data.tags and ("peft" in card.data.tags) == lora
    assert f"`{objective}`" in card.text and "huang2025enhancing" in card.text
    if objective == "unlikelihood":  # the unlikelihood term is Welleck et al.'s
        assert "welleck2020neural" in card.text
    assert (folder / "adapter_config.json").is_file() == lora
    check_causal_lm_snippet(folder, trainer.accelerator.unwrap_model(trainer.model), GREEDY)


def test_span_trainer_failed_save_is_atomic(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, "unlikelihood", lora=True)
    check_failed_save_keeps_previous(
        lambda folder: trainer.save_model(str(folder)), tmp_path / "final", monkeypatch, PEFT_WRITER
    )


def test_span_trainer_push_uploads_model_files_only(tmp_path, monkeypatch):
    hub = install_fake_hub(monkeypatch)
    trainer = _trainer(tmp_path, "unlikelihood", lora=True)
    trainer.push_to_hub(repo_id="me/span")
    files = set(hub.commits[0]["files"])
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"} <= files
    assert "training_args.bin" not in files and (tmp_path / "out" / "training_args.bin").is_file()
    trainer.push_to_hub(repo_id="me/span", extra_files=["training_args.bin"])
    assert set(hub.commits[1]["files"]) == files | {"training_args.bin"}


def _negated(tmp_path):
    base, tok = local_causal_lm(tmp_path / "base")
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    torch.manual_seed(3)
    with torch.no_grad():  # a non-zero adapter, as after fine-tuning on unfaithful summaries
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    negate_adapter(model, "default", "negated", scale=0.5)
    return model.eval(), tok


def test_negated_adapter_saves_alone_with_card(tmp_path):
    model, tok = _negated(tmp_path)
    folder = tmp_path / "negated"
    save_negated_adapter(
        model,
        "negated",
        folder,
        lam=0.5,
        halluc_adapter="default",
        tokenizer=tok,
        card_info=None,
        training={"tau": "LoRA on unfaithful summaries"},
    )
    assert (folder / "adapter_config.json").is_file() and not (folder / "negated").exists()
    card = check_card(folder, None, "text-generation")
    assert "task-arithmetic" in card.data.tags and "ilharco2023editing" in card.text and "lambda" in card.text
    ns = check_causal_lm_snippet(folder, model, GREEDY, adapter_name="negated")  # the active adapter
    with model.disable_adapter(), torch.no_grad():
        assert not torch.allclose(ns["logits"], model(**ns["inputs"]).logits)
    model.set_adapter("default")
    with torch.no_grad():
        assert not torch.allclose(ns["logits"], model(**ns["inputs"]).logits)


def test_negated_adapter_failed_save_is_atomic(tmp_path, monkeypatch):
    model, tok = _negated(tmp_path)
    check_failed_save_keeps_previous(
        lambda folder: save_negated_adapter(model, "negated", folder, tokenizer=tok),
        tmp_path / "negated",
        monkeypatch,
        PEFT_WRITER,
    )


def test_negated_adapter_push_with_card(tmp_path, monkeypatch):
    from hf_contrastive.core.hub import push_with_card
    from hf_contrastive.core.hub.card import ModelCardInfo

    hub = install_fake_hub(monkeypatch)
    model, tok = _negated(tmp_path)
    extra = tmp_path / "lambda_scores.json"
    extra.write_text("{}")
    push_with_card(
        model, "me/negated", ModelCardInfo(base_model="org/tiny-llama"), tokenizer=tok, adapter_name="negated"
    )
    push_with_card(
        model,
        "me/negated",
        ModelCardInfo(base_model="org/tiny-llama"),
        tokenizer=tok,
        adapter_name="negated",
        extra_files=[extra],
    )
    first, second = (set(c["files"]) for c in hub.commits)
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= first
    assert second == first | {"lambda_scores.json"}
    assert (
        'AutoPeftModelForCausalLM.from_pretrained("me/negated")'
        in hub.commits[0]["files"]["README.md"].decode()
    )
