"""SimCTG trainer saves and pushes its model (full weights or LoRA adapter) with a card whose snippet runs
against the saved folder (contrastive search included) and matches the in-memory model."""

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
from peft import LoraConfig

from hf_contrastive.generation.simctg import SimCTGCollator, SimCTGConfig, SimCTGTrainer

CONTRASTIVE = {"max_new_tokens": 16, "penalty_alpha": 0.6, "top_k": 4}


def _trainer(tmp_path, lora: bool) -> SimCTGTrainer:
    model, tok = local_causal_lm(tmp_path / "base")
    g = torch.Generator().manual_seed(1)
    train = [{"input_ids": torch.randint(3, len(tok), (12,), generator=g).tolist()} for _ in range(8)]
    args = SimCTGConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        margin=0.4,
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
    trainer = SimCTGTrainer(
        model=model,
        args=args,
        peft_config=peft_config,
        train_dataset=train,
        data_collator=SimCTGCollator(0),
        processing_class=tok,
    )
    trainer.card_info.base_model = "org/tiny-llama"
    trainer.card_info.datasets = ["org/tiny-corpus"]
    trainer.train()
    return trainer


@pytest.mark.parametrize("lora", [False, True])
def test_simctg_save_model_writes_card_with_runnable_snippet(tmp_path, lora):
    trainer = _trainer(tmp_path, lora)
    folder = tmp_path / "final"
    trainer.save_model(str(folder))
    card = check_card(folder, "org/tiny-llama", "text-generation")
    assert {"simctg", "contrastive-search"} <= set(card.data.tags)
    assert ("peft" in card.data.tags) == lora
    assert "su2022contrastive" in card.text and "margin (rho)**: 0.4" in card.text
    assert ("LoRA**: " in card.text) == lora
    assert (folder / "adapter_config.json").is_file() == lora
    assert (folder / "training_args.bin").is_file()
    model = trainer.accelerator.unwrap_model(trainer.model)
    ns = check_causal_lm_snippet(folder, model, CONTRASTIVE)
    assert "penalty_alpha=0.6" in (folder / "README.md").read_text() and ns["output_ids"].shape[1] > 1


def test_simctg_failed_save_is_atomic(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, lora=True)
    check_failed_save_keeps_previous(
        lambda folder: trainer.save_model(str(folder)),
        tmp_path / "final",
        monkeypatch,
        "peft.peft_model.safe_save_file",
    )


def test_simctg_push_uploads_model_files_only(tmp_path, monkeypatch):
    hub = install_fake_hub(monkeypatch)
    trainer = _trainer(tmp_path, lora=True)
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / "events.log").write_text("log")
    trainer.push_to_hub(repo_id="me/simctg")
    files = set(hub.commits[0]["files"])
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert not {"training_args.bin", "runs/events.log"} & files
    assert (out / "training_args.bin").is_file()  # saved locally, not uploaded
    card = hub.commits[0]["files"]["README.md"].decode()
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/simctg")' in card
    trainer.push_to_hub(repo_id="me/simctg", extra_files=["training_args.bin"])
    assert set(hub.commits[1]["files"]) == files | {"training_args.bin"}
