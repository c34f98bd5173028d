"""CLOSE on tiny random LMs: the noise and mean-shift formulas by hand, prefix and label layout, the loss against
the LM's own loss on the same inputs, generation from the prefix, save/load, LoRA training, the recipe, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModel, T5Config, T5ForConditionalGeneration

from hf_contrastive.recipes import load_recipe, register_recipe_task, run_recipe
from hf_contrastive.vision.close import (
    CLOSECaptioner,
    CLOSECollator,
    CLOSEConfig,
    CLOSETrainer,
    CLOSETrainingArguments,
    add_noise,
    apply_mean_shift,
    fit_mean_shift,
)
from hf_contrastive.vision.close_recipes import RECIPE_TASK
from hf_contrastive.vision.evaluation import modality_gap
from tests.card_checks import check_card, run_snippets
from tests.tiny_models import save_tiny_bert, summation_tolerance, tiny_causal_lm, word_tokenizer
from tests.vision.tiny_vision import tiny_dual, tiny_processor

DIM = 16
CAPTIONS = ["a man is eating food", "dog runs in park", "cat sleeps on sofa", "the woman plays guitar"]


@pytest.fixture
def tok():
    return word_tokenizer(chat=False)


def _captioner(tok, **kw) -> CLOSECaptioner:
    settings = dict(embedding_dim=DIM, noise_std=0.1, max_target_length=8, beam_size=1)
    settings.update(kw)
    return CLOSECaptioner.from_lm(tiny_causal_lm(len(tok), seed=1), tokenizer=tok, **settings)


def _rows(n: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, DIM, generator=g)
    return [{"embedding": emb[i].tolist(), "text": CAPTIONS[i % len(CAPTIONS)]} for i in range(n)]


# -- the input transformations -----------------------------------------------------------------------------


def test_add_noise_is_normalised_gaussian_perturbation_replayed_by_its_seed():
    x = F.normalize(torch.randn(64, DIM, dtype=torch.float64), dim=-1)
    y = add_noise(x, 0.3, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    by_hand = (x + 0.3 * eps) / (x + 0.3 * eps).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(y, by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(y, add_noise(x, 0.3, generator=torch.Generator().manual_seed(7)))
    assert not torch.allclose(y, add_noise(x, 0.3, generator=torch.Generator().manual_seed(8)))
    torch.manual_seed(3)
    a = add_noise(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, add_noise(x, 0.3))  # the global RNG replays too
    assert torch.equal(add_noise(x, 0.0), F.normalize(x, dim=-1))
    torch.testing.assert_close(add_noise(x, 0), x, rtol=0, atol=1e-15)  # identity on unit vectors


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_negative_or_non_finite_noise_std_is_refused_everywhere(bad, tmp_path):
    x = torch.randn(2, DIM)
    with pytest.raises(ValueError, match="noise_std"):
        add_noise(x, bad)
    with pytest.raises(ValueError, match="noise_std"):
        CLOSEConfig(noise_std=bad)
    with pytest.raises(ValueError, match="noise_std"):
        CLOSETrainingArguments(output_dir=str(tmp_path), noise_std=bad, report_to="none")


def test_noise_only_in_training_mode_and_replayed_by_the_seed(tok):
    model = _captioner(tok, noise_std=0.2)
    x = torch.randn(3, DIM)
    model.eval()
    assert torch.equal(model.prefix_inputs(x), F.normalize(x, dim=-1))
    model.train()
    torch.manual_seed(11)
    got = model.prefix_inputs(x)
    torch.manual_seed(11)
    eps = torch.randn(3, DIM)
    unit = F.normalize(x, dim=-1)
    expected = (unit + 0.2 * eps) / (unit + 0.2 * eps).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=summation_tolerance(torch.float32, 1.0, DIM))
    torch.testing.assert_close(
        got.norm(dim=-1), torch.ones(3), rtol=0, atol=summation_tolerance(torch.float32, 1.0, DIM)
    )
    batch = CLOSECollator.from_model(model)(_rows())
    torch.manual_seed(5)
    first = model(**batch).loss
    torch.manual_seed(5)
    assert torch.equal(model(**batch).loss, first)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model(**batch, noise_generator=g1).loss, model(**batch, noise_generator=g2).loss)
    model.eval()
    clean = model(**batch).loss
    assert torch.equal(clean, model(**batch).loss)
    assert not torch.equal(clean, first)


def test_mean_shift_formula_by_hand_unpaired_and_only_for_text(tok):
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(7, DIM, generator=g), torch.randn(11, DIM, generator=g)
    shift = fit_mean_shift(images, texts)
    by_hand = F.normalize(images.double(), dim=-1).mean(0) - F.normalize(texts.double(), dim=-1).mean(0)
    torch.testing.assert_close(shift.double(), by_hand, rtol=0, atol=1e-7)  # float32 output of a ~0.3 vector
    moved = apply_mean_shift(texts.double(), by_hand, renormalize=False)
    torch.testing.assert_close(
        moved.mean(0), F.normalize(images.double(), dim=-1).mean(0), rtol=0, atol=1e-12
    )

    model = _captioner(tok, noise_std=0.3)
    model.set_mean_shift(shift, scale=0.5)
    assert model.config.shift_scale == 0.5 and len(model.config.mean_shift) == DIM
    x = torch.randn(4, DIM)
    model.eval()
    unit = F.normalize(x, dim=-1)
    expected = F.normalize(unit + 0.5 * shift, dim=-1)
    tol = summation_tolerance(torch.float32, 1.0, DIM)
    torch.testing.assert_close(model.prefix_inputs(x, modality="text"), expected, rtol=0, atol=tol)
    torch.testing.assert_close(model.prefix_inputs(x, modality="image"), unit, rtol=0, atol=tol)
    model.train()  # shift first, then the noise
    torch.manual_seed(2)
    got = model.prefix_inputs(x, modality="text")
    torch.manual_seed(2)
    expected = F.normalize(unit + 0.5 * shift + 0.3 * torch.randn(4, DIM), dim=-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    model.set_mean_shift(None)
    assert model.config.mean_shift is None


def test_modality_gap_is_the_norm_of_the_mean_shift_and_the_shift_closes_it():
    g = torch.Generator().manual_seed(0)
    cone_i, cone_t = torch.zeros(DIM), torch.zeros(DIM)
    cone_i[0], cone_t[1] = 1.0, 1.0  # two cones around orthogonal directions, as CLIP's modalities sit
    images = cone_i + 0.3 * torch.randn(40, DIM, generator=g)
    texts = cone_t + 0.3 * torch.randn(40, DIM, generator=g)
    shift = fit_mean_shift(images, texts)
    before = modality_gap(images, texts, paired=True)
    assert before["centroid_distance"] == pytest.approx(float(shift.double().norm()), rel=1e-6)
    after = modality_gap(images, apply_mean_shift(texts, shift), paired=True)
    assert after["centroid_distance"] < 0.25 * before["centroid_distance"]


# -- layout of the inputs, the loss ---------------------------------------------------------------------------


def test_collator_layout_and_label_masking(tok):
    model = _captioner(tok, max_target_length=4, prompt="summary :")
    coll = CLOSECollator.from_model(model)
    batch = coll(_rows(2))
    prompt = tok("summary :", add_special_tokens=False)["input_ids"]
    p = len(prompt)
    assert batch["prefix_embeddings"].shape == (2, DIM)
    for i, text in enumerate(CAPTIONS[:2]):
        cap = tok(" " + text, add_special_tokens=False)["input_ids"][:3] + [tok.eos_token_id]
        row = batch["input_ids"][i].tolist()
        assert row[: p + len(cap)] == prompt + cap
        labels = batch["labels"][i].tolist()
        assert labels[:p] == [-100] * p and labels[p : p + len(cap)] == cap
        assert all(v == -100 for v in labels[p + len(cap) :])
        assert batch["attention_mask"][i].tolist() == [1] * (p + len(cap)) + [0] * (len(row) - p - len(cap))
    out = model(**batch)
    assert out.prefix_tokens.shape == (2, 4, model.config.lm_hidden_size)
    assert out.logits.shape == (2, 4 + batch["input_ids"].shape[1], len(tok))


def test_loss_equals_the_lm_cross_entropy_by_hand_on_the_same_inputs_embeds(tok):
    model = _captioner(tok, max_target_length=6).double().eval()
    batch = CLOSECollator.from_model(model)(_rows(3))
    x = batch["prefix_embeddings"] = batch["prefix_embeddings"].double()
    out = model(**batch)
    proj = model.prefix_projection.linear
    prefix = (F.normalize(x, dim=-1) @ proj.weight.T + proj.bias).view(3, 4, -1)
    embeds = torch.cat([prefix, model.lm.get_input_embeddings()(batch["input_ids"])], dim=1)
    mask = torch.cat([torch.ones(3, 4, dtype=torch.long), batch["attention_mask"]], dim=1)
    with torch.no_grad():
        logits = model.lm(inputs_embeds=embeds, attention_mask=mask).logits
    targets = torch.cat([torch.full((3, 4), -100), batch["labels"]], dim=1)[:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    keep = targets != -100
    by_hand = -logp[keep].gather(-1, targets[keep].unsqueeze(-1)).mean()
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-12)
    # transformers computes the LM loss in float32 whatever the logits' dtype: a mean of log-softmax terms over
    # the vocabulary, each of the loss's magnitude
    tol = summation_tolerance(torch.float32, float(by_hand), len(tok))
    torch.testing.assert_close(out.loss.double(), by_hand, rtol=0, atol=tol)
    assert int(keep.sum()) == int((batch["labels"] != -100).sum())  # no prefix position is a target


def test_generation_reads_the_noise_free_prefix(tok):
    model = _captioner(tok, noise_std=0.5, prompt="summary :").eval()
    x = torch.randn(3, DIM)
    ids = model.generate(x, max_new_tokens=4, num_beams=1)
    assert ids.shape[0] == 3 and ids.shape[1] <= 4
    prefix = model.prefix_tokens(F.normalize(x, dim=-1))
    prompt = torch.tensor([tok("summary :", add_special_tokens=False)["input_ids"]] * 3)
    embeds = torch.cat([prefix, model.lm.get_input_embeddings()(prompt)], dim=1)
    with torch.no_grad():
        first = model.lm(inputs_embeds=embeds).logits[:, -1].argmax(-1)
    assert torch.equal(ids[:, 0], first)
    model.train()  # generation never adds noise, whatever the mode
    assert torch.equal(model.generate(x, max_new_tokens=4, num_beams=1), ids)
    assert model.training
    assert len(model.caption(x, batch_size=2, max_new_tokens=4, num_beams=1)) == 3


def test_encoder_decoder_lm_takes_the_prefix_as_encoder_input(tok):
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    model = CLOSECaptioner.from_lm(
        T5ForConditionalGeneration(cfg),
        tokenizer=tok,
        embedding_dim=DIM,
        prompt="summary :",
        max_target_length=5,
    )
    assert model.config.lm_is_encoder_decoder
    model = model.double().eval()
    batch = CLOSECollator.from_model(model)(_rows(2))
    batch["prefix_embeddings"] = batch["prefix_embeddings"].double()
    for row in batch["labels"].tolist():
        kept = [v for v in row if v != -100]
        assert kept[-1] == tok.eos_token_id and len(kept) <= 5
    proj = model.prefix_projection.linear
    prefix = (F.normalize(batch["prefix_embeddings"].double(), dim=-1) @ proj.weight.T + proj.bias).view(
        2, 4, -1
    )
    embeds = torch.cat([prefix, model.lm.get_input_embeddings()(batch["input_ids"])], dim=1)
    with torch.no_grad():
        expected = model.lm(inputs_embeds=embeds, labels=batch["labels"]).loss
        got = model(**batch).loss
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    ids = model.generate(batch["prefix_embeddings"], max_new_tokens=3, num_beams=2)
    assert ids.shape[0] == 2 and ids[0, 0] == cfg.decoder_start_token_id


# -- saving --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_save_load_round_trip_gives_the_same_outputs_generations_and_card(tok, tmp_path):
    model = _captioner(tok, noise_std=0.07, prompt="summary :", prefix_length=3)
    model.set_mean_shift(torch.linspace(-0.1, 0.1, DIM), scale=0.8)
    model.eval()
    folder = tmp_path / "close"
    model.save_pretrained(folder)
    loaded = CLOSECaptioner.from_pretrained(folder).eval()
    auto = AutoModel.from_pretrained(folder).eval()
    assert type(auto) is CLOSECaptioner
    for key in (
        "noise_std",
        "prefix_length",
        "mean_shift",
        "shift_scale",
        "prompt",
        "max_target_length",
        "beam_size",
    ):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    batch = CLOSECollator.from_model(loaded)(_rows(3))
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
        assert torch.equal(auto(**batch).logits, model(**batch).logits)
    x = torch.randn(3, DIM)
    for beams in (1, 2):
        assert torch.equal(
            loaded.generate(x, max_new_tokens=5, num_beams=beams),
            model.generate(x, max_new_tokens=5, num_beams=beams),
        )
    assert loaded.caption(x, max_new_tokens=5) == model.caption(x, max_new_tokens=5)
    card = check_card(folder, None, "image-to-text")
    assert "CLOSE" in card.text and "0.07" in card.text and "gu2023close" in card.text
    captions_ns, auto_ns = run_snippets(folder)
    assert len(captions_ns["captions"]) == 2
    assert auto_ns["token_ids"].shape[0] == 2


# -- training ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trainer_with_lora_trains_the_prefix_map_and_saves_a_merged_captioner(tok, tmp_path):
    model = _captioner(tok)
    before = model.prefix_projection.linear.weight.detach().clone()
    data = Dataset.from_list(_rows(8))
    args = CLOSETrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        noise_std=0.05,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = CLOSETrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    start = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < start
    assert model.config.noise_std == 0.05
    saved = trainer.save_captioner(tmp_path / "final")
    assert not torch.equal(saved.prefix_projection.linear.weight, before)
    reloaded = CLOSECaptioner.from_pretrained(tmp_path / "final").eval()
    assert not any("lora" in n for n in reloaded.state_dict())
    trainer.model.eval()
    batch = CLOSECollator.from_model(reloaded)(_rows(4, seed=3))
    with torch.no_grad():
        wrapped, merged = trainer.model(**batch).logits, reloaded(**batch).logits
    # merging adds each LoRA product into its weight: float32 rounding of sums over the 32-wide layers
    torch.testing.assert_close(
        merged, wrapped, rtol=0, atol=summation_tolerance(torch.float32, float(wrapped.abs().max()), 32 * 4)
    )
    assert reloaded.config.noise_std == 0.05


def test_bad_inputs_are_refused_with_clear_errors(tok):
    model = _captioner(tok)
    coll = CLOSECollator.from_model(model)
    with pytest.raises(ValueError, match="embedding_dim = 16"):
        model(prefix_embeddings=torch.randn(2, DIM + 1))
    with pytest.raises(ValueError, match="2-D"):
        model.prefix_inputs(torch.randn(DIM))
    with pytest.raises(ValueError, match="modality"):
        model.prefix_inputs(torch.randn(2, DIM), modality="audio")
    with pytest.raises(ValueError, match="'text'"):
        coll([{"embedding": [0.0] * DIM, "caption": "a dog"}])
    with pytest.raises(ValueError, match="vector of 16"):
        coll([{"embedding": [0.0] * 5, "text": "a dog"}])
    with pytest.raises(ValueError, match="non-empty caption"):
        coll([{"embedding": [0.0] * DIM, "text": "  "}])
    with pytest.raises(ValueError, match="mean shift"):
        model.set_mean_shift(torch.zeros(DIM + 2))
    with pytest.raises(ValueError, match="mean_shift"):
        CLOSEConfig(embedding_dim=4, mean_shift=[0.0] * 3)
    with pytest.raises(ValueError, match="Embedding sizes differ"):
        fit_mean_shift(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="prefix_length"):
        CLOSEConfig(prefix_length=0)
    with pytest.raises(ValueError, match="lm_config"):
        CLOSECaptioner(CLOSEConfig())
    args = CLOSETrainingArguments(output_dir="unused", report_to="none")
    with pytest.raises(ValueError, match="missing \\['embedding'\\]"):
        CLOSETrainer(
            model=model, args=args, train_dataset=Dataset.from_dict({"emb": [[0.0] * DIM], "text": ["a"]})
        )
    with pytest.raises(ValueError, match="vector of 16"):
        CLOSETrainer(
            model=model, args=args, train_dataset=Dataset.from_dict({"embedding": [[0.0] * 3], "text": ["a"]})
        )
    with pytest.raises(ValueError, match="empty"):
        CLOSETrainer(model=model, args=args, train_dataset=Dataset.from_dict({"embedding": [], "text": []}))


# -- the recipe ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_close_recipe_runs_end_to_end_on_coco_mini_with_tiny_models(shared_data, tok, tmp_path):
    register_recipe_task(RECIPE_TASK, replace=True)
    lm_dir, text_dir, dual_dir = tmp_path / "lm", tmp_path / "text", tmp_path / "dual"
    tiny_causal_lm(len(tok)).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    save_tiny_bert(text_dir)
    processor = tiny_processor(tmp_path / "vocab")
    tiny_dual(len(processor.tokenizer)).save_pretrained(dual_dir)
    processor.save_pretrained(dual_dir)
    common = [
        "--model.name_or_path",
        str(lm_dir),
        "--model.text_encoder",
        str(text_dir),
        "--data.max_eval_images",
        "3",
        "--data.dev_images",
        "2",
        "--method.max_target_length",
        "4",
        "--args.max_steps",
        "1",
        "--args.per_device_train_batch_size",
        "4",
        "--args.use_cpu",
        "true",
        "--args.disable_tqdm",
        "true",
        "--args.logging_steps",
        "1",
    ]
    text_only = run_recipe(
        load_recipe("trainers/close-captioning.yaml", [*common, "--args.output_dir", str(tmp_path / "a")])
    )
    assert set(text_only["eval"]) == {"text_only"} and len(text_only["eval"]["text_only"]["captions"]) == 3
    assert 0.0 <= text_only["eval"]["text_only"]["bleu_4"] <= 1.0
    shifted = run_recipe(
        load_recipe(
            "trainers/close-captioning.yaml",
            [
                *common,
                "--data.dual_encoder",
                str(dual_dir),
                "--method.mean_shift",
                "true",
                "--args.output_dir",
                str(tmp_path / "b"),
            ],
        )
    )
    assert set(shifted["eval"]) == {"text_only", "image"} and set(shifted["dev"]) == {"text_only", "image"}
    saved = CLOSECaptioner.from_pretrained(shifted["output"])
    assert saved.config.embedding_dim == 16 and saved.config.mean_shift is not None
    assert math.isclose(
        math.sqrt(sum(v * v for v in saved.config.mean_shift)), shifted["mean_shift_norm"], rel_tol=1e-6
    )
