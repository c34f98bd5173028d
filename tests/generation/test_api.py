"""Behaviour of the generate integration: registration, validation, EOS/stopping, streamer, outputs, processor."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessorList,
    MistralConfig,
    MistralForCausalLM,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

import hf_contrastive
from hf_contrastive.generation import registration
from hf_contrastive.generation.contrastive_search import _degeneration_penalty, _normalize_fp32

CS = dict(penalty_alpha=0.6, top_k=4)
PROMPT = torch.tensor([[17, 45, 99, 3, 150, 77, 12]])
BATCH = torch.tensor([[0, 0, 0, 8, 120, 250, 31], [17, 45, 99, 3, 150, 77, 12]])
BATCH_MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])


def _cs(model, ids=PROMPT, **kw):
    kw = {**CS, "max_new_tokens": 12, "pad_token_id": model.config.pad_token_id, **kw}
    kw.setdefault("attention_mask", torch.ones_like(ids))
    return model.generate(ids, custom_generate=hf_contrastive.contrastive_search, **kw)


# --- registration ---------------------------------------------------------------------------------------------


def test_enable_disable_are_idempotent_and_reversible(tiny_models):
    model = tiny_models["gpt2"]
    expected = _cs(model)
    assert hf_contrastive.contrastive_search_enabled()
    try:
        hf_contrastive.disable_contrastive_search()
        hf_contrastive.disable_contrastive_search()
        assert not hf_contrastive.contrastive_search_enabled()
        from transformers.pipelines.base import Pipeline

        assert not hasattr(Pipeline._prepare_generate_kwargs, "__hf_contrastive__")
        assert not hasattr(type(model), "_contrastive_search")
        # transformers' own behaviour again: remote code required
        with pytest.raises(ValueError, match="trust_remote_code"):
            model.generate(PROMPT, max_new_tokens=4, pad_token_id=0, **CS)
    finally:
        hf_contrastive.enable_contrastive_search()
        hf_contrastive.enable_contrastive_search()
    assert hf_contrastive.contrastive_search_enabled()
    assert registration._saved is not None
    out = model.generate(
        PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=12, pad_token_id=0, **CS
    )
    assert torch.equal(out, expected)


def test_hub_repo_id_runs_local_code_offline(tiny_models):
    model = tiny_models["llama"]
    expected = _cs(model)
    out = model.generate(
        PROMPT,
        attention_mask=torch.ones_like(PROMPT),
        custom_generate=hf_contrastive.HUB_REPO_ID,
        trust_remote_code=True,
        max_new_tokens=12,
        pad_token_id=0,
        **CS,
    )
    assert torch.equal(out, expected)


def test_contrastive_differs_from_greedy(tiny_models):
    for name in ("llama", "gpt2", "t5", "bart"):
        model = tiny_models[name]
        greedy = model.generate(
            PROMPT, max_new_tokens=12, do_sample=False, pad_token_id=model.config.pad_token_id
        )
        assert not torch.equal(_cs(model, penalty_alpha=0.9), greedy), name


# --- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k"),
        ({"penalty_alpha": 1.5}, ValueError, r"\[0, 1\]"),
        ({"penalty_alpha": -0.1}, ValueError, r"\[0, 1\]"),
        ({"penalty_alpha": "0.6"}, TypeError, None),  # transformers' own mode check raises first
        ({"penalty_alpha": None}, ValueError, "penalty_alpha"),
        ({"use_cache": False}, ValueError, "cache"),
        ({"cache_implementation": "static"}, ValueError, "DynamicCache"),
        ({"contrastive_layout": "diagonal"}, ValueError, "contrastive_layout"),
    ],
)
def test_bad_input_raises_clear_error(tiny_models, kwargs, error, match):
    with pytest.raises(error, match=match):
        _cs(tiny_models["llama"], **kwargs)


def test_validator_messages():
    with pytest.raises(TypeError, match="penalty_alpha.*str"):
        hf_contrastive.validate_contrastive_arguments("0.6", 4)
    with pytest.raises(TypeError, match="top_k.*float"):
        hf_contrastive.validate_contrastive_arguments(0.6, 4.0)
    with pytest.raises(ValueError, match="top_k"):
        hf_contrastive.validate_contrastive_arguments(0.6, None)
    assert hf_contrastive.validate_contrastive_arguments(1, 1) == (1.0, 1)


def test_sliding_window_cache_is_rejected():
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=4,
        pad_token_id=0,
    )
    model = MistralForCausalLM(config).eval()
    with pytest.raises(ValueError, match="sliding-window"):
        _cs(model, ids=torch.tensor([[5, 6, 7, 8, 9, 10]]))


def test_recurrent_model_is_rejected():
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    model = MambaForCausalLM(
        MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=1)
    ).eval()
    with pytest.raises(ValueError, match="recurrent"):
        _cs(model, ids=torch.tensor([[5, 6, 7]]))


def test_num_return_sequences_is_rejected_as_deterministic(tiny_models):
    # Contrastive search is deterministic: n return sequences would be n identical copies. transformers rejects
    # num_return_sequences > 1 for every non-sampling mode, and so does this integration.
    with pytest.raises(ValueError, match="num_return_sequences"):
        tiny_models["gpt2"].generate(PROMPT, max_new_tokens=4, num_return_sequences=2, pad_token_id=0, **CS)


# --- stopping, EOS, padding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2", "bart"])
def test_eos_stops_row_and_pads_finished_rows(tiny_models, name):
    model = tiny_models[name]
    pad = model.config.pad_token_id
    free = _cs(model, ids=BATCH, attention_mask=BATCH_MASK, max_new_tokens=10, eos_token_id=None)
    start = 0 if model.config.is_encoder_decoder else BATCH.shape[1]
    gen0 = free[0, start:].tolist()
    eos = gen0[3]  # make row 0's 4th new token the EOS
    if eos in free[1, start : start + 4].tolist():
        pytest.skip("chosen EOS also appears early in row 1")
    out = _cs(model, ids=BATCH, attention_mask=BATCH_MASK, max_new_tokens=10, eos_token_id=eos)
    row0 = out[0, start:].tolist()
    first = row0.index(eos)
    assert row0[: first + 1] == gen0[: first + 1]
    assert all(t == pad for t in row0[first + 1 :])


def test_max_new_tokens_and_custom_stopping_criteria(tiny_models):
    model = tiny_models["llama"]
    assert _cs(model, max_new_tokens=5).shape[1] == PROMPT.shape[1] + 5

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full(
                (input_ids.shape[0],), input_ids.shape[1] >= PROMPT.shape[1] + 3, dtype=torch.bool
            )

    out = _cs(model, max_new_tokens=20, stopping_criteria=StoppingCriteriaList([StopAfter()]))
    assert out.shape[1] == PROMPT.shape[1] + 3
    assert torch.equal(out, _cs(model, max_new_tokens=3))


# --- streamer and outputs -------------------------------------------------------------------------------------


class _Collect(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []
        self.ended = False

    def put(self, value):
        self.chunks.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_prompt_then_each_token(tiny_models):
    model = tiny_models["gpt2"]
    streamer = _Collect()
    out = model.generate(PROMPT, max_new_tokens=6, pad_token_id=0, streamer=streamer, **CS)
    assert streamer.ended
    assert streamer.chunks[0] == PROMPT[0].tolist()
    assert [c[0] for c in streamer.chunks[1:]] == out[0, PROMPT.shape[1] :].tolist()


@pytest.mark.parametrize("layout", [None, "expand"])
def test_return_dict_scores_logits_hidden_states_cache(tiny_models, layout):
    model = tiny_models["llama"]
    new = 6
    res = _cs(
        model,
        ids=BATCH,
        attention_mask=BATCH_MASK,
        max_new_tokens=new,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        output_hidden_states=True,
        contrastive_layout=layout,
    )
    plain = _cs(model, ids=BATCH, attention_mask=BATCH_MASK, max_new_tokens=new)
    assert torch.equal(res.sequences, plain)
    assert len(res.scores) == len(res.logits) == len(res.hidden_states) == new
    vocab = model.config.vocab_size
    assert res.scores[0].shape == (2, vocab) and res.scores[0].dtype == torch.float32
    layers = model.config.num_hidden_layers + 1
    assert len(res.hidden_states[0]) == layers and res.hidden_states[0][-1].shape[:2] == (2, BATCH.shape[1])
    assert all(h[-1].shape[:2] == (2, 1) for h in res.hidden_states[1:])
    # each chosen token is among the top-k of the processed scores
    for step, scores in enumerate(res.scores):
        chosen = res.sequences[:, BATCH.shape[1] + step]
        topk = scores.topk(4, dim=-1).indices
        assert (topk == chosen[:, None]).any(dim=-1).all()
    # the step-t logits are the LM head on the winner's last hidden state recorded for step t
    head = model.get_output_embeddings()
    for step in range(1, new):
        torch.testing.assert_close(
            head(res.hidden_states[step][-1][:, -1]), res.logits[step], rtol=1e-4, atol=1e-4
        )
    assert res.cache.get_seq_length() == res.sequences.shape[1] - 1


def test_return_dict_attentions_and_encoder_decoder(tiny_models):
    model = tiny_models["bart"]
    res = _cs(
        model,
        max_new_tokens=5,
        return_dict_in_generate=True,
        output_scores=True,
        output_hidden_states=True,
        output_attentions=True,
    )
    assert torch.equal(res.sequences, _cs(model, max_new_tokens=5))
    assert len(res.decoder_hidden_states) == len(res.scores) == res.sequences.shape[1] - 1
    assert res.encoder_hidden_states is not None and res.encoder_attentions is not None
    assert len(res.cross_attentions) == len(res.decoder_attentions) == len(res.scores)
    llama = tiny_models["llama"]
    r2 = _cs(llama, max_new_tokens=4, return_dict_in_generate=True, output_attentions=True)
    assert len(r2.attentions) == 4 and torch.equal(r2.sequences, _cs(llama, max_new_tokens=4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_scores_cosine_in_fp32(tiny_models, dtype):
    from hf_contrastive.generation.contrastive_search import _probe_shared_layout

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, pad_token_id=0)).eval()
    model = model.to(dtype)
    assert _probe_shared_layout(model)[0] in ("shared", "expand")
    out = _cs(model, ids=torch.tensor([[5, 6, 7, 8]]), max_new_tokens=6)
    assert out.shape == (1, 10)
    h = torch.randn(2, 3, 16, dtype=dtype)
    h[0, 0] = 0  # a zero state (Llama-family pad position) must not produce NaN
    n = _normalize_fp32(h)
    assert n.dtype == torch.float32 and torch.isfinite(n).all()
    pen = _degeneration_penalty(n, torch.tensor([[False, True, True], [True, True, True]]), n[:, :2])
    assert pen.dtype == torch.float32 and torch.isfinite(pen).all()


# --- pipeline -------------------------------------------------------------------------------------------------


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3}
    for i in range(4, 256):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>"
    )


def test_pipeline_text_generation(tiny_models):
    from transformers import pipeline

    tok = _tiny_tokenizer()
    model = tiny_models["gpt2"]
    text = "w17 w45 w99 w30 w150"
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    got = pipe(text, max_new_tokens=8, return_full_text=False, **CS)[0]["generated_text"]
    ids = tok(text, return_tensors="pt").input_ids
    direct = _cs(model, ids=ids, max_new_tokens=8)
    assert got.strip() == tok.decode(direct[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert got.strip()


# --- logits processor form ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_logits_processor_matches_decoding_loop(tiny_models, name):
    model = tiny_models[name]
    proc = hf_contrastive.ContrastiveSearchLogitsProcessor(
        model, penalty_alpha=0.6, top_k=4, attention_mask=BATCH_MASK
    )
    out = model.generate(
        BATCH,
        attention_mask=BATCH_MASK,
        do_sample=False,
        max_new_tokens=12,
        pad_token_id=0,
        logits_processor=LogitsProcessorList([proc]),
    )
    assert torch.equal(out, _cs(model, ids=BATCH, attention_mask=BATCH_MASK, max_new_tokens=12))
    # the processor resets for a new prompt
    proc.prompt_mask = None
    out1 = model.generate(PROMPT, do_sample=False, max_new_tokens=8, pad_token_id=0, logits_processor=[proc])
    assert torch.equal(out1, _cs(model, max_new_tokens=8))


def test_logits_processor_rejects_bad_input(tiny_models):
    with pytest.raises(ValueError, match="decoder-only"):
        hf_contrastive.ContrastiveSearchLogitsProcessor(tiny_models["t5"])
    with pytest.raises(ValueError, match="top_k"):
        hf_contrastive.ContrastiveSearchLogitsProcessor(tiny_models["gpt2"], top_k=0)
    with pytest.raises(TypeError):
        hf_contrastive.ContrastiveSearchLogitsProcessor(object())
