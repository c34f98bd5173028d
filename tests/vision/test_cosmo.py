"""COSMO on tiny random Llama LMs and ViTs: zero gates give the wrapped LM exactly, the cross-attention placement
and media mask, the log-scale temperature, the loss against its formula, interleaved batches without the
contrastive term, cached generation against a full recomputation, the split checks, save/load, the trainer."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM, ViTConfig

from hf_contrastive.recipes import load_recipe, register_recipe_task, run_recipe
from hf_contrastive.vision.cosmo import (
    CosmoCollator,
    CosmoConfig,
    CosmoContrastiveLoss,
    CosmoForCausalLM,
    CosmoTrainer,
    CosmoTrainingArguments,
    caption_perplexity,
    check_unimodal_depth,
    cross_attention_layer_indices,
    freeze_language_model,
    media_index,
    retrieval_embeddings,
)
from hf_contrastive.vision.cosmo_recipes import RECIPE_TASK
from tests.card_checks import check_card, run_snippets
from tests.tiny_models import summation_tolerance, word_tokenizer
from tests.vision.tiny_vision import write_images

IMAGE = "<image>"
SIZE = 16
TOL64 = 1e-10  # float64 compares of a few hundred chained operations on O(1) values


def _tok():
    tok = word_tokenizer(chat=False)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tok


def _lm(vocab: int, layers: int = 4, seed: int = 1) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def _vision() -> ViTConfig:
    return ViTConfig(
        image_size=SIZE,
        patch_size=8,
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
    )


HEAD = dict(
    num_latents=3,
    resampler_depth=1,
    resampler_heads=2,
    resampler_dim_head=8,
    cross_attn_heads=2,
    cross_attn_dim_head=8,
    contrastive_dim=12,
    pooler_heads=4,
)


def _model(
    tok=None, layers: int = 4, unimodal_depth: int = 1, **kw
) -> tuple[CosmoForCausalLM, LlamaForCausalLM]:
    tok = tok or _tok()
    lm = _lm(len(tok), layers)
    reference = copy.deepcopy(lm)
    torch.manual_seed(2)
    model = CosmoForCausalLM.from_parts(lm, _vision(), tok, unimodal_depth=unimodal_depth, **{**HEAD, **kw})
    return model.eval(), reference


def _open_gates(model: CosmoForCausalLM, value: float = 0.7) -> None:
    with torch.no_grad():
        for block in model.cross_attention.values():
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)
            # the weights start at std 0.02: scale them up so that the media visibly move the logits
            for lin in (block.to_q, block.to_kv, block.to_out):
                lin.weight.mul_(20.0)


def _batch(model: CosmoForCausalLM, tok, captions=("dog runs in park", "a cat sleeps"), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coll = CosmoCollator.from_model(model)
    rows = [{"image": None, "text": c} for c in captions]
    ids = [
        [model.config.image_token_id, *tok(c, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        for c in captions
    ]
    width = max(len(i) for i in ids)
    batch = {
        "input_ids": torch.tensor([i + [coll.pad_id] * (width - len(i)) for i in ids]),
        "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        "pixel_values": torch.randn(len(rows), 1, 3, SIZE, SIZE, generator=g),
    }
    labels = batch["input_ids"].clone()
    labels[:, 0] = -100
    labels[batch["attention_mask"] == 0] = -100
    batch["labels"] = labels
    return batch


# -- zero gates: the original LM ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_gates_give_exactly_the_wrapped_lm(dtype):
    tok = _tok()
    model, reference = _model(tok)
    model, reference = model.to(dtype), reference.to(dtype)
    batch = _batch(model, tok)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    with torch.no_grad():
        got = model(**batch)
        want = reference(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
    # tanh(0) = 0: x + 0 * out is x bit for bit, so no tolerance is needed
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.lm_loss, want.loss)
    # text without any image token and without pixel values: the same
    ids = torch.tensor([tok("dog runs in park", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    # opened gates change the logits (the blocks are live)
    _open_gates(model)
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, want.logits)


# -- placement and media mask ------------------------------------------------------------------------------


def test_cross_attention_indices_and_the_layers_they_run_before():
    assert cross_attention_layer_indices(30, 15) == [15, 17, 19, 21, 23, 25, 27, 29]
    assert cross_attention_layer_indices(24, 12) == [12, 14, 16, 18, 20, 22]  # COSMO's 180M configuration
    assert cross_attention_layer_indices(6, 1) == [1, 3, 5]
    assert cross_attention_layer_indices(6, 2, interval=1) == [2, 3, 4, 5]
    tok = _tok()
    model, _ = _model(tok, layers=6, unimodal_depth=2)
    assert sorted(model.cross_attention, key=int) == ["2", "4"]
    order: list[str] = []
    for key, block in model.cross_attention.items():
        block.register_forward_hook(lambda m, a, o, key=key: order.append(f"x{key}"))
    for idx, layer in enumerate(model.lm.model.layers):
        layer.register_forward_hook(lambda m, a, o, idx=idx: order.append(f"L{idx}"))
    with torch.no_grad():
        model(**_batch(model, tok))
    # each block runs once, right before its layer
    assert order == ["L0", "L1", "x2", "L2", "L3", "x4", "L4", "L5"]


def test_media_index_counts_the_preceding_image_tokens():
    ids = torch.tensor([[5, 9, 6, 7, 9, 8], [9, 6, 6, 6, 6, 6]])
    assert media_index(ids, 9).tolist() == [[0, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1]]
    assert media_index(ids[:, -2:], 9, offset=torch.tensor([1, 1])).tolist() == [[2, 2], [1, 1]]


def test_tokens_attend_only_to_the_immediately_preceding_image():
    tok = _tok()
    model, _ = _model(tok)
    img = model.config.image_token_id
    words = tok("dog runs cat sleeps", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[words[0], img, words[1], words[2], img, words[3]]])
    pixels = torch.randn(1, 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    block = model.cross_attention["1"]
    with torch.no_grad():
        global_visual, media = model.encode_images(pixels)  # [1, D], [1, 2, K, D]
        first_only, second_only = model.encode_images(pixels[:, :1])[0], model.encode_images(pixels[:, 1:])[0]
    assert media.shape[:3] == (1, 2, model.config.num_latents - 1)
    # resampler token 0 averaged over the row's images is the global visual embedding
    tol = summation_tolerance(torch.float32, float(global_visual.abs().max()), 24)  # 24-wide vision tower
    torch.testing.assert_close(global_visual, (first_only + second_only) / 2, rtol=0, atol=tol)
    k = media.shape[2]
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        attn = block.attention_weights(x, media, media_index(ids, img))  # [1, heads, 6, 2K]
    first, second = attn[..., :k], attn[..., k:]
    assert torch.equal(attn[:, :, 0], torch.zeros_like(attn[:, :, 0]))  # before any image: nothing
    for pos, own, other in ((1, first, second), (2, first, second), (3, first, second), (4, second, first)):
        torch.testing.assert_close(
            own[:, :, pos].sum(-1), torch.ones(1, 2), rtol=0, atol=summation_tolerance(torch.float32, 1.0, k)
        )
        assert torch.equal(other[:, :, pos], torch.zeros_like(other[:, :, pos]))
    # end to end: changing the second image moves only the tokens from the second image token on
    _open_gates(model)
    other = pixels.clone()
    other[:, 1] = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=pixels).logits
        b = model(input_ids=ids, pixel_values=other).logits
    assert torch.equal(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


# -- temperature and loss --------------------------------------------------------------------------------------


def test_temperature_is_a_log_scale_initialised_at_the_config_value():
    tok = _tok()
    model, _ = _model(tok, contrastive_temperature=0.2)
    assert float(model.logit_scale.detach()) == pytest.approx(0.2)
    batch = _batch(model, tok)
    with torch.no_grad():
        out = model(**batch)
    assert float(out.logit_scale) == pytest.approx(math.exp(0.2))  # x1.2214, not x5
    cos = out.text_embeds @ out.image_embeds.T
    tol = summation_tolerance(torch.float32, math.exp(0.2), 12)  # 12-d embeddings
    torch.testing.assert_close(out.logits_per_text, math.exp(0.2) * cos, rtol=0, atol=tol)
    g = torch.Generator().manual_seed(0)
    text, image = (
        torch.randn(5, 6, generator=g, dtype=torch.float64),
        torch.randn(5, 6, generator=g, dtype=torch.float64),
    )
    logits = math.exp(0.2) * F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).T
    target = torch.arange(5)
    want = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    got = CosmoContrastiveLoss()(text, image, torch.tensor(0.2, dtype=torch.float64))
    torch.testing.assert_close(got.loss, want, rtol=0, atol=TOL64)
    divided = logits / math.exp(0.2) / 0.2
    wrong = (F.cross_entropy(divided, target) + F.cross_entropy(divided.T, target)) / 2
    assert abs(float(got.loss) - float(wrong)) > 1e-3


def test_loss_equals_lm_loss_plus_weighted_contrastive_by_hand():
    tok = _tok()
    model, reference = _model(tok, layers=4, unimodal_depth=2, contrastive_weight=0.7)
    model, reference = model.double(), reference.double()
    _open_gates(model)
    with torch.no_grad():
        model.logit_scale.fill_(0.9)
    batch = _batch(model, tok, captions=("dog runs in park", "a cat sleeps", "the woman plays guitar"))
    batch["pixel_values"] = batch["pixel_values"].double()
    out = model(**batch)
    with torch.no_grad():
        # the text side: output of the last text-only layer (transformers' hidden_states[unimodal_depth]),
        # pooled without padding and image tokens
        states = reference(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[2]
        mask = batch["attention_mask"].bool() & (batch["input_ids"] != model.config.image_token_id)
        text = F.normalize(model.text_projection(model.text_pooler(states, mask)), dim=-1)
        image = F.normalize(model.visual_projection(model.encode_images(batch["pixel_values"])[0]), dim=-1)
        logits = math.exp(0.9) * text @ image.T
        target = torch.arange(3)
        con = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        shift = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
        lm = F.cross_entropy(shift, batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.contrastive_loss, con, rtol=0, atol=TOL64)
    # transformers computes the LM loss in float32 (it upcasts the logits to float32 whatever their dtype)
    lm_tol = summation_tolerance(torch.float32, float(lm), out.logits.shape[-1])
    torch.testing.assert_close(out.lm_loss.double(), lm, rtol=0, atol=lm_tol)
    torch.testing.assert_close(out.loss, lm + 0.7 * con, rtol=0, atol=lm_tol)
    # the truncated text forward gives the same embeddings as the full forward
    torch.testing.assert_close(
        model.encode_text(batch["input_ids"], batch["attention_mask"]), out.text_embeds, rtol=0, atol=TOL64
    )
    torch.testing.assert_close(
        model.encode_image(batch["pixel_values"]), out.image_embeds, rtol=0, atol=TOL64
    )


def test_interleaved_batch_gets_the_lm_loss_only():
    tok = _tok()
    model, _ = _model(tok)
    model.train()
    contrastive = ("text_pooler", "text_projection", "visual_projection", "logit_scale")
    batch = _batch(model, tok)
    out = model(**batch, interleaved=torch.tensor([True, True]))
    assert out.contrastive_loss is None and out.text_embeds is None
    assert torch.equal(out.loss, out.lm_loss)
    out.loss.backward()
    for name, param in model.named_parameters():
        if name.startswith(contrastive):
            assert param.grad is None or not bool(param.grad.any()), name
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    assert out.contrastive_loss is not None
    out.loss.backward()
    assert model.logit_scale.grad is not None and bool(model.text_projection.weight.grad.any())
    with pytest.raises(ValueError, match="either image-text or interleaved"):
        model(**batch, interleaved=torch.tensor([True, False]))


def test_activation_checkpointing_keeps_the_media_and_the_gradients():
    tok = _tok()
    model, _ = _model(tok)
    model = model.double()
    _open_gates(model)
    model.train()
    batch = _batch(model, tok)
    batch["pixel_values"] = batch["pixel_values"].double()
    model(**batch).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("cross_attention.") for n in plain) and any(
        n.startswith("vision_model.") for n in plain
    )
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing_enable()
    assert model.lm.model.layers[1].gradient_checkpointing
    model(**batch).loss.backward()
    for name, grad in plain.items():
        got = model.get_parameter(name).grad
        torch.testing.assert_close(
            got, grad, rtol=0, atol=TOL64 * max(1.0, float(grad.abs().max())), msg=name
        )


# -- generation ---------------------------------------------------------------------------------------------


def test_cached_greedy_generation_equals_a_full_recomputation():
    tok = _tok()
    model, _ = _model(tok)
    _open_gates(model)
    img = model.config.image_token_id
    w = tok("a dog", add_special_tokens=False)["input_ids"]
    prompts = torch.tensor([[w[0], img, w[1]], [img, w[1], w[0]]])
    pixels = torch.randn(2, 1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    got = model.generate(prompts, pixels, max_new_tokens=5, eos_token_id=None)
    ids = prompts
    with torch.no_grad():
        for _ in range(5):
            nxt = model(input_ids=ids, pixel_values=pixels).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    assert torch.equal(got, ids)
    # the images matter
    other = model.generate(prompts, torch.randn(2, 1, 3, SIZE, SIZE), max_new_tokens=5, eos_token_id=None)
    assert got.shape == other.shape
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(prompts, pixels, num_beams=2)


# -- the split and bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 4, 7, -1])
def test_split_index_outside_the_model_names_the_layer_count(depth):
    lm_config = _lm(50).config
    with pytest.raises(ValueError, match="which has 4 layers"):
        CosmoConfig(text_config=lm_config.to_dict(), vision_config=_vision().to_dict(), unimodal_depth=depth)
    with pytest.raises(ValueError, match="which has 4 layers"):
        check_unimodal_depth(depth, 4)
    with pytest.raises(ValueError, match="which has 4 layers"):
        CosmoForCausalLM.from_parts(_lm(len(_tok())), _vision(), _tok(), unimodal_depth=depth, **HEAD)
    assert CosmoConfig(text_config=lm_config.to_dict(), vision_config=_vision().to_dict()).unimodal_depth == 2


def test_bad_inputs_are_refused_with_clear_errors():
    tok = _tok()
    model, _ = _model(tok)
    batch = _batch(model, tok)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="images for 1 rows"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"][:1])
    two = torch.cat([batch["input_ids"][:, :2], batch["input_ids"]], dim=1)
    two[:, 2] = model.config.image_token_id  # two image tokens, one image per row
    with pytest.raises(ValueError, match="refers to image 2"):
        model(input_ids=two, pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        model(input_ids=batch["input_ids"], pixel_values=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="num_latents"):
        CosmoConfig(num_latents=1)
    with pytest.raises(ValueError, match="text_config and vision_config"):
        CosmoForCausalLM(CosmoConfig())
    coll = CosmoCollator.from_model(model)
    with pytest.raises(ValueError, match="1 <image> token\\(s\\) for 2 image"):
        coll([{"images": ["a.jpg", "b.jpg"], "text": "dog <image> runs"}])
    with pytest.raises(ValueError, match="either image-text rows"):
        coll([{"image": "a.jpg", "text": "dog"}, {"images": ["a.jpg"], "text": "<image> dog"}])
    with pytest.raises(ValueError, match="no '<image>' token"):
        CosmoCollator(word_tokenizer(chat=False))
    with pytest.raises(ValueError, match="freeze"):
        CosmoTrainingArguments(output_dir="unused", freeze="half")


# -- data, evaluation, saving, training -----------------------------------------------------------------------


def test_collator_masks_the_image_token_and_pads(tmp_path):
    tok = _tok()
    model, _ = _model(tok)
    paths = write_images(tmp_path, 3)
    coll = CosmoCollator.from_model(model, max_length=4)
    batch = coll(
        [{"image": paths[0], "text": "dog runs in park today"}, {"image": paths[1], "text": "a cat"}]
    )
    img, eos = model.config.image_token_id, tok.eos_token_id
    assert batch["pixel_values"].shape == (2, 1, 3, SIZE, SIZE)
    assert batch["input_ids"][:, 0].tolist() == [img, img]
    assert batch["input_ids"][0].tolist() == [
        img,
        *tok("dog runs in", add_special_tokens=False)["input_ids"],
        eos,
    ]
    assert batch["labels"][:, 0].tolist() == [-100, -100]
    a_cat = tok("a cat", add_special_tokens=False)["input_ids"]
    assert batch["labels"][1].tolist() == [-100, *a_cat, eos, -100]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0]
    assert not bool(batch["interleaved"])
    inter = coll(
        [
            {"images": paths[:2], "text": "<image> dog runs <image> a cat"},
            {"images": paths[2:], "text": "<image> sun"},
        ]
    )
    assert bool(inter["interleaved"]) and inter["pixel_values"].shape == (2, 2, 3, SIZE, SIZE)
    assert torch.equal(inter["pixel_values"][1, 1], torch.zeros(3, SIZE, SIZE))  # padding image
    assert (inter["labels"][inter["input_ids"] == img] == -100).all()
    with torch.no_grad():
        out = model(**inter)
    assert out.contrastive_loss is None and torch.isfinite(out.loss)


def test_perplexity_and_retrieval_helpers(tmp_path):
    tok = _tok()
    model, _ = _model(tok)
    paths = write_images(tmp_path, 3)
    rows = [{"image": p, "text": t} for p, t in zip(paths, ("dog runs", "a cat sleeps", "sun shines"))]
    coll = CosmoCollator.from_model(model)
    figures = caption_perplexity(model, rows, coll, batch_size=2)
    with torch.no_grad():
        out = model(**coll(rows))
    # the per-token mean NLL of one batch is the model's LM loss
    tolerance = summation_tolerance(torch.float32, float(out.lm_loss), 16)
    assert figures["tokens"] == int((coll(rows)["labels"][:, 1:] != -100).sum())
    assert figures["nll_per_token"] == pytest.approx(float(out.lm_loss), abs=tolerance)
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nll_per_token"]))
    images, texts = retrieval_embeddings(model, paths, [r["text"] for r in rows], coll, batch_size=2)
    assert images.shape == texts.shape == (3, 12)
    torch.testing.assert_close(
        texts.norm(dim=-1), torch.ones(3), rtol=0, atol=summation_tolerance(torch.float32, 1.0, 12)
    )


def test_save_and_from_pretrained_round_trip(tmp_path):
    tok = _tok()
    model, _ = _model(tok, contrastive_temperature=0.3)
    _open_gates(model, 0.2)
    folder = tmp_path / "cosmo"
    model.save_pretrained(folder)
    loaded = CosmoForCausalLM.from_pretrained(folder).eval()
    auto = AutoModel.from_pretrained(folder).eval()
    assert type(auto) is CosmoForCausalLM
    for key in (
        "unimodal_depth",
        "num_latents",
        "contrastive_temperature",
        "image_token_id",
        "cross_attention_layers",
    ):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    batch = _batch(model, tok)
    with torch.no_grad():
        a, b, c = model(**batch), loaded(**batch), auto(**batch)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.logits, c.logits)
    assert torch.equal(a.loss, b.loss)
    assert float(loaded.logit_scale.detach()) == pytest.approx(float(model.logit_scale.detach()))
    prompts = batch["input_ids"][:, :2]
    assert torch.equal(
        loaded.generate(prompts, batch["pixel_values"], max_new_tokens=3),
        model.generate(prompts, batch["pixel_values"], max_new_tokens=3),
    )
    card = check_card(folder, None, "image-text-to-text")
    assert "COSMO" in card.text and "wang2024cosmo" in card.text and "1, 3" in card.text
    caption_ns, auto_ns = run_snippets(folder)
    assert len(caption_ns["captions"]) == 1
    assert math.isfinite(auto_ns["similarity"])


def test_trainer_two_steps_with_a_tiny_llama(tmp_path):
    tok = _tok()
    model, _ = _model(tok, layers=4, unimodal_depth=2)
    paths = write_images(tmp_path / "images", 4)
    data = Dataset.from_dict(
        {
            "image": paths * 2,
            "text": ["dog runs in park", "a cat sleeps", "sun shines", "a man is eating food"] * 2,
        }
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = CosmoTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        freeze="text_layers",
    )
    trainer = CosmoTrainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and {"lm_loss", "contrastive_loss", "logit_scale"} <= set(logged[0])
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"logit_scale", "cross_attention.2.attn_gate", "cross_attention.2.ff_gate"} <= changed
    assert any(n.startswith("vision_model.") for n in changed) and any(
        n.startswith("lm.model.layers.3.") for n in changed
    )
    frozen = [
        n
        for n in before
        if n.startswith(("lm.model.embed_tokens", "lm.model.layers.0.", "lm.model.layers.1."))
    ]
    assert frozen and not (changed & set(frozen))
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    saved = trainer.save_cosmo(tmp_path / "final")
    assert type(AutoModel.from_pretrained(tmp_path / "final")) is CosmoForCausalLM
    assert saved.card_info.training["frozen"] == "text_layers"


def test_trainer_with_lora_on_the_lm_saves_a_merged_model(tmp_path):
    tok = _tok()
    model, _ = _model(tok, layers=4, unimodal_depth=2)
    paths = write_images(tmp_path / "images", 4)
    data = Dataset.from_dict({"image": paths, "text": ["dog runs", "a cat sleeps", "sun shines", "a man"]})
    args = CosmoTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
        save_strategy="no", disable_tqdm=True, use_cpu=True, freeze="lm",
    )  # fmt: skip
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    trainer = CosmoTrainer(model=model, args=args, train_dataset=data, peft_config=lora)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("cross_attention" in n for n in trainable)
    assert not any(".lm." in n and "lora_" not in n for n in trainable)
    trainer.train()
    trainer.model.eval()
    batch = _batch(model, tok)
    with torch.no_grad():
        wrapped = trainer.model(**batch).logits
    saved = trainer.save_cosmo(tmp_path / "final")
    reloaded = CosmoForCausalLM.from_pretrained(tmp_path / "final").eval()
    assert not any("lora" in n for n in reloaded.state_dict())
    with torch.no_grad():
        merged = reloaded(**batch).logits
    torch.testing.assert_close(
        merged, wrapped, rtol=0, atol=summation_tolerance(torch.float32, float(wrapped.abs().max()), 32 * 4)
    )
    assert saved.card_info.training["LoRA (merged)"]


def test_freeze_modes_count_parameters():
    model, _ = _model()
    total = sum(p.numel() for p in model.parameters())
    lm = sum(p.numel() for p in model.lm.parameters())
    counts = freeze_language_model(model, "lm")
    assert counts == {"trainable": total - lm, "frozen": lm}
    with pytest.raises(ValueError, match="freeze mode"):
        freeze_language_model(model, "everything")


# -- the recipe ------------------------------------------------------------------------------------------------


def test_cosmo_recipe_runs_end_to_end_on_coco_mini_with_tiny_models(shared_data, tmp_path):
    register_recipe_task(RECIPE_TASK, replace=True)
    tok = _tok()
    lm_dir = tmp_path / "lm"
    _lm(len(tok)).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    recipe = load_recipe(
        "trainers/cosmo-coco-mini.yaml",
        [
            "--model.name_or_path", str(lm_dir),
            "--model.vision_config", "{model_type: vit, image_size: 16, patch_size: 8, hidden_size: 24, "
            "num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 48}",
            "--model.num_latents", "3", "--model.resampler_heads", "2", "--model.resampler_dim_head", "8",
            "--model.cross_attn_heads", "2", "--model.cross_attn_dim_head", "8", "--model.contrastive_dim", "12",
            "--model.pooler_heads", "4", "--method.unimodal_depth", "1",
            "--data.max_eval_images", "3", "--data.ppl_captions", "1",
            "--args.max_steps", "1", "--args.per_device_train_batch_size", "4", "--args.use_cpu", "true",
            "--args.disable_tqdm", "true", "--args.output_dir", str(tmp_path / "out"), "--args.max_length", "8",
        ],
    )  # fmt: skip
    results = run_recipe(recipe)
    assert results["train_rows"] == 400 and results["eval_images"] == 3
    assert results["cross_attention_layers"] == [1, 3]
    for when in ("before", "after"):
        assert (
            math.isfinite(results[when]["perplexity"]) and 0 <= results[when]["image_to_text_recall@1"] <= 100
        )
    final = CosmoForCausalLM.from_pretrained(results["output"])
    assert final.config.contrastive_weight == 1.0 and final.config.unimodal_depth == 1
    assert "perplexity" in (Path(results["output"]) / "README.md").read_text()
