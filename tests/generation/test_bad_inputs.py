"""Contrastive-search arguments that used to decode greedily without a word on the plain `generate` path.

transformers runs contrastive search only for `penalty_alpha > 0` and `top_k > 1`; `penalty_alpha=-0.1`,
`penalty_alpha=nan` or `top_k=0` fell through to greedy decoding, while `custom_generate=` refused the same
values. Every path now refuses them; `penalty_alpha=None` or `0` still means plain greedy decoding.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, GenerationMixin, PreTrainedTokenizerFast, pipeline

import hf_contrastive
from hf_contrastive.generation import registration

PROMPT = torch.tensor([[17, 45, 99, 3, 150]])
KW = dict(attention_mask=torch.ones_like(PROMPT), max_new_tokens=4, pad_token_id=0)
BAD = [
    (-0.1, 4, "penalty_alpha"),
    (float("nan"), 4, "penalty_alpha"),
    (1.5, 4, "penalty_alpha"),
    (0.6, 0, "top_k"),
    (0.6, -1, "top_k"),
]


@pytest.mark.parametrize("alpha, top_k, what", BAD)
@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_plain_generate_refuses_bad_contrastive_arguments(tiny_models, name, alpha, top_k, what):
    model = tiny_models[name]
    with pytest.raises(ValueError, match=f"`{what}` must be"):
        model.generate(PROMPT, penalty_alpha=alpha, top_k=top_k, **KW)


@pytest.mark.parametrize("alpha, top_k, what", BAD)
def test_custom_generate_and_the_hub_repo_id_refuse_the_same_values(tiny_models, alpha, top_k, what):
    model = tiny_models["gpt2"]
    with pytest.raises(ValueError, match=f"`{what}` must be"):
        model.generate(
            PROMPT, custom_generate=hf_contrastive.contrastive_search, penalty_alpha=alpha, top_k=top_k, **KW
        )
    with pytest.raises(ValueError, match=f"`{what}` must be"):
        model.generate(
            PROMPT,
            custom_generate=registration.HUB_REPO_ID,
            trust_remote_code=True,
            penalty_alpha=alpha,
            top_k=top_k,
            **KW,
        )


@pytest.mark.parametrize("alpha, top_k, what", BAD)
def test_logits_processor_refuses_the_same_values(tiny_models, alpha, top_k, what):
    with pytest.raises(ValueError, match=f"`{what}` must be"):
        hf_contrastive.ContrastiveSearchLogitsProcessor(tiny_models["gpt2"], penalty_alpha=alpha, top_k=top_k)


def test_sampling_still_refuses_an_impossible_penalty_alpha(tiny_models):
    with pytest.raises(ValueError, match="`penalty_alpha` must be"):
        tiny_models["gpt2"].generate(PROMPT, do_sample=True, penalty_alpha=-0.1, top_k=4, **KW)
    # top_k=0 means "no top-k filter" when sampling: allowed.
    torch.manual_seed(0)
    tiny_models["gpt2"].generate(PROMPT, do_sample=True, penalty_alpha=0.6, top_k=0, **KW)


@pytest.mark.parametrize("alpha", [None, 0, 0.0])
def test_penalty_alpha_none_or_zero_keeps_meaning_greedy(tiny_models, alpha):
    model = tiny_models["gpt2"]
    greedy = model.generate(PROMPT, do_sample=False, **KW)
    got = model.generate(PROMPT, do_sample=False, penalty_alpha=alpha, top_k=0, **KW)
    assert torch.equal(got, greedy)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3}
    for i in range(4, 256):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"
    )


@pytest.mark.parametrize("alpha, top_k, what", BAD)
def test_pipeline_refuses_the_same_values(tiny_models, alpha, top_k, what):
    pipe = pipeline("text-generation", model=tiny_models["gpt2"], tokenizer=_tiny_tokenizer())
    with pytest.raises(ValueError, match=f"`{what}` must be"):
        pipe("w17 w45 w99", max_new_tokens=4, penalty_alpha=alpha, top_k=top_k)


def test_check_contrastive_request_directly():
    registration.check_contrastive_request(GenerationConfig())
    registration.check_contrastive_request(GenerationConfig(penalty_alpha=0.0, top_k=0))
    registration.check_contrastive_request(GenerationConfig(penalty_alpha=0.6, top_k=1))
    with pytest.raises(ValueError, match="top_k"):
        registration.check_contrastive_request(GenerationConfig(penalty_alpha=0.6, top_k=0))
    with pytest.raises(ValueError, match="penalty_alpha"):
        registration.check_contrastive_request(GenerationConfig(penalty_alpha=-0.5, num_beams=2, top_k=4))


def test_disable_puts_the_original_mode_check_back():
    assert getattr(GenerationMixin._validate_generation_mode, "__hf_contrastive__", False)
    try:
        hf_contrastive.disable_contrastive_search()
        assert not hasattr(GenerationMixin._validate_generation_mode, "__hf_contrastive__")
    finally:
        hf_contrastive.enable_contrastive_search()
    assert getattr(GenerationMixin._validate_generation_mode, "__hf_contrastive__", False)
