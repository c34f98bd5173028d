from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertModel

from faithfulness.helpers import tiny_causal_lm
from hf_contrastive.faithfulness.arithmetic.lora import (
    LoraTaskVector,
    adapter_delta_weights,
    combine_adapters,
    negate_adapter,
)
from hf_contrastive.faithfulness.arithmetic.task_vectors import TaskVector


def _perturbed(model, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    other = tiny_causal_lm(model.config.vocab_size)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def test_dense_task_vector_matches_state_dict_arithmetic():
    base = tiny_causal_lm(40)
    ft1, ft2 = _perturbed(base, 1), _perturbed(base, 2)
    sd0, sd1, sd2 = base.state_dict(), ft1.state_dict(), ft2.state_dict()
    tau1, tau2 = TaskVector.from_models(base, ft1), TaskVector.from_models(base, ft2)
    combo = tau1 - 0.3 * tau2 + (-tau1) * 0.5
    edited = combo.state_dict_for(base, scale=2.0)
    for k in sd0:
        want = sd0[k] + 2.0 * ((sd1[k] - sd0[k]) - 0.3 * (sd2[k] - sd0[k]) - 0.5 * (sd1[k] - sd0[k]))
        assert torch.allclose(edited[k], want, atol=1e-6), k
    # in place, with a negative scale: theta_0 - lam * tau
    target = tiny_causal_lm(40)
    tau1.apply_to(target, scale=-0.7)
    for k, v in target.state_dict().items():
        assert torch.allclose(v, sd0[k] - 0.7 * (sd1[k] - sd0[k]), atol=1e-6), k
    assert (tau1 + tau2).norm() > 0


def test_dense_task_vector_refuses_other_architectures_and_shapes():
    base = tiny_causal_lm(40)
    with pytest.raises(ValueError, match="Shape mismatch"):
        TaskVector.from_models(base, tiny_causal_lm(41))
    bert = BertModel(
        BertConfig(
            vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37
        )
    )
    with pytest.raises(ValueError, match="architectures|parameter names"):
        TaskVector.from_models(base, bert)
    tau = TaskVector.from_models(base, _perturbed(base, 1))
    with pytest.raises(ValueError):
        tau.apply_to(bert)
    with pytest.raises(ValueError, match="Shape mismatch"):
        tau + TaskVector.from_models(tiny_causal_lm(41), tiny_causal_lm(41, seed=1))
    with pytest.raises(TypeError):
        tau * "2"


def _lora_model(seed=0):
    model = tiny_causal_lm(40)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg, adapter_name="sft")
    cfg2 = LoraConfig(
        r=2, lora_alpha=6, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    torch.manual_seed(seed + 1)
    peft_model.add_adapter("halluc", cfg2)
    with torch.no_grad():  # make the two adapters clearly different and non-zero
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.2)
    return peft_model


def _dense_weight(lin):
    return lin.base_layer.weight.detach().float()


def test_negated_adapter_is_exactly_minus_the_original():
    model = _lora_model()
    original = adapter_delta_weights(model, "halluc")
    negate_adapter(model, "halluc", "neg")
    negated = adapter_delta_weights(model, "neg")
    assert original.keys() == negated.keys() and original
    for k in original:
        assert torch.allclose(negated[k], -original[k], atol=1e-6), k
    assert model.active_adapter == "neg"


def test_sft_minus_lambda_halluc_equals_dense_computation():
    model = _lora_model()
    lam = 0.6
    d_sft, d_h = adapter_delta_weights(model, "sft"), adapter_delta_weights(model, "halluc")
    name = (LoraTaskVector(model, "sft") - lam * LoraTaskVector(model, "halluc")).add_to(model, "edited")
    assert name == "edited"
    got = adapter_delta_weights(model, "edited")
    for k in d_sft:
        assert torch.allclose(got[k], d_sft[k] - lam * d_h[k], atol=1e-6), k
    # the model's output equals a dense model with W0 + dW_sft - lam dW_halluc, base weights untouched
    x = torch.randint(3, 40, (2, 7))
    model.set_adapter("edited")
    with torch.no_grad():
        out = model(input_ids=x).logits
    dense = tiny_causal_lm(40)
    dense.load_state_dict(
        {
            k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in model.state_dict().items()
            if "lora_" not in k
        }
    )
    with torch.no_grad():
        for k in d_sft:
            mod = dense.get_submodule(k.replace("base_model.model.", ""))
            mod.weight.add_(d_sft[k] - lam * d_h[k])
        want = dense(input_ids=x).logits
    assert torch.allclose(out, want, atol=1e-5)
    # PEFT's "linear" combination of two adapters is not this (cross terms B_i A_j): the reason for "cat"
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    model.add_adapter("sft2", cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n and ".sft2." in n:
                p.normal_(0, 0.2)
    d_sft2 = adapter_delta_weights(model, "sft2")
    model.add_weighted_adapter(["sft", "sft2"], [1.0, -lam], "linear_combo", combination_type="linear")
    linear = adapter_delta_weights(model, "linear_combo")
    k = next(iter(linear))
    assert not torch.allclose(linear[k], d_sft[k] - lam * d_sft2[k], atol=1e-3)


def test_combination_refuses_existing_and_missing_adapters():
    model = _lora_model()
    with pytest.raises(ValueError, match="already exists"):
        negate_adapter(model, "halluc", "sft")
    with pytest.raises(ValueError, match="do not exist"):
        negate_adapter(model, "nope", "neg")
    with pytest.raises(ValueError, match="do not exist"):
        LoraTaskVector(model, "nope")
    with pytest.raises(TypeError, match="peft model"):
        combine_adapters(tiny_causal_lm(40), {"a": 1.0}, "b")
    with pytest.raises(ValueError, match="without '.'"):
        negate_adapter(model, "halluc", "lam0.5")
    with pytest.raises(ValueError, match="zero"):
        (LoraTaskVector(model, "sft") - LoraTaskVector(model, "sft")).add_to(model, "z")


def test_combination_verification_passes_for_cat():
    model = _lora_model()
    d_sft, d_h = adapter_delta_weights(model, "sft"), adapter_delta_weights(model, "halluc")
    assert combine_adapters(model, {"sft": 1.0, "halluc": -0.25}, "checked", verify=True) == "checked"
    got = adapter_delta_weights(model, "checked")
    assert got.keys() == d_sft.keys() and got
    for k in got:
        assert torch.allclose(got[k], d_sft[k] - 0.25 * d_h[k], atol=1e-6), k


def test_combination_verification_rejects_a_wrong_combination(monkeypatch):
    model = _lora_model()
    add = model.add_weighted_adapter

    def rescaled(adapters, weights, adapter_name, **kwargs):  # e.g. an alpha / r convention that changed
        return add(adapters, [1.5 * w for w in weights], adapter_name, **kwargs)

    monkeypatch.setattr(model, "add_weighted_adapter", rescaled)
    with pytest.raises(RuntimeError, match="differs from the weighted sum"):
        combine_adapters(model, {"sft": 1.0, "halluc": -0.5}, "wrong", verify=True)


def test_combination_verification_fails_when_there_is_nothing_to_verify(monkeypatch):
    model = _lora_model()

    def config_only(adapters, weights, adapter_name, **kwargs):  # registers the name, adds no LoRA layer
        model.peft_config[adapter_name] = copy.deepcopy(model.peft_config[adapters[0]])

    monkeypatch.setattr(model, "add_weighted_adapter", config_only)
    with pytest.raises(RuntimeError, match="Nothing to verify"):
        combine_adapters(model, {"sft": 1.0}, "empty", activate=False, verify=True)
    # without verify the same empty adapter goes through: verification is what catches it
    assert combine_adapters(model, {"sft": 1.0}, "empty2", activate=False) == "empty2"
