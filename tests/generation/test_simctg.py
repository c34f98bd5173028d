from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_contrastive.generation.metrics import isotropy
from hf_contrastive.generation.simctg import (
    SimCTGCollator,
    SimCTGConfig,
    SimCTGTrainer,
    simctg_contrastive_loss,
)


def test_contrastive_loss_by_hand():
    # two orthogonal tokens: s_ii = 1, s_ij = 0 -> max(0, 0.5 - 1 + 0) = 0
    h = torch.eye(2)[None]
    assert simctg_contrastive_loss(h) == pytest.approx(0.0)
    # identical tokens: 0.5 - 1 + 1 = 0.5 for both off-diagonal pairs
    same = torch.ones(1, 3, 4)
    assert simctg_contrastive_loss(same) == pytest.approx(0.5)
    # padding is ignored: a pad token equal to the others does not count
    h = torch.cat([torch.eye(2), torch.eye(2)[:1]])[None]
    assert simctg_contrastive_loss(h, torch.tensor([[1, 1, 0]])) == pytest.approx(0.0)
    assert simctg_contrastive_loss(h) > 0
    with pytest.raises(ValueError):
        simctg_contrastive_loss(torch.ones(3, 4))


def test_collator_pads_and_masks_labels():
    batch = SimCTGCollator(pad_token_id=0)([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="margin"):
        SimCTGConfig(output_dir=str(tmp_path), margin=-1.0)
    assert SimCTGConfig(output_dir=str(tmp_path)).margin == 0.5


def _token_cosine(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
    return 1.0 - isotropy(out.hidden_states[-1], batch["attention_mask"])


def _train(contrastive_weight: float, tmp_path, steps: int = 30) -> tuple[float, float, list]:
    from peft import LoraConfig

    torch.manual_seed(0)
    # No dropout: with it, a tiny model can satisfy the margin by amplifying dropout noise in training mode only.
    config = GPT2Config(
        vocab_size=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    # Real LMs are anisotropic (gpt2: mean token cosine ~0.9); give the random model a shared direction too.
    with torch.no_grad():
        model.transformer.wte.weight += 0.1 * torch.randn(32)
    g = torch.Generator().manual_seed(1)
    train = [{"input_ids": torch.randint(1, 64, (24,), generator=g).tolist()} for _ in range(64)]
    held_out = SimCTGCollator(0)(
        [{"input_ids": torch.randint(1, 64, (24,), generator=g).tolist()} for _ in range(8)]
    )
    before = _token_cosine(model, held_out)
    args = SimCTGConfig(
        output_dir=str(tmp_path / f"w{contrastive_weight}"),
        per_device_train_batch_size=8,
        max_steps=steps,
        learning_rate=1e-2,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        contrastive_weight=contrastive_weight,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    trainer = SimCTGTrainer(
        model=model, args=args, peft_config=lora, train_dataset=train, data_collator=SimCTGCollator(0)
    )
    trainer.train()
    after = _token_cosine(trainer.model, held_out)
    return before, after, trainer.state.log_history


def test_simctg_lowers_token_cosine_on_held_out_text(tmp_path):
    before, after, logs = _train(1.0, tmp_path)
    assert before > 0.9 and after < 0.5, (before, after)
    assert any("loss_contrastive" in x and "loss_mle" in x for x in logs)
    _, after_mle_only, _ = _train(0.0, tmp_path)
    assert after < after_mle_only, (after, after_mle_only)


def test_empty_training_set_is_refused(tmp_path):
    # A Trainer would run 0 steps on it and report success.
    from datasets import Dataset

    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    empty = Dataset.from_dict({"input_ids": []})
    args = SimCTGConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="train_dataset"):
        SimCTGTrainer(model=GPT2LMHeadModel(config), args=args, train_dataset=empty)
