"""Tiny fast word-level tokenizer with a chat template, and tiny causal LMs, for the faithfulness tests."""

from __future__ import annotations

import torch
from foundation.tiny import WORDS, tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

EXTRA = "user assistant system summary summarize : , . 1 2 3 4 5 paris london berlin not was".split()
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m.role }} : {{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def word_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer whose tokens are words (offsets exact), ``<pad>`` = 0 and ``<eos>`` = 1."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for w in [*sorted(set(WORDS)), *EXTRA]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama causal LM (the config of ``foundation.tiny.tiny_llama``)."""
    config = tiny_llama(seed).config
    config.vocab_size = vocab_size
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


INSTRUCTION = "summarize :"
ROWS = [
    {
        "document": "the woman plays guitar in paris . it rains today",
        "summary": "the woman plays guitar in london",
        "spans": [[26, 32]],
        "reference": "the woman plays guitar in paris",
    },
    {
        "document": "a man is eating food in the big green park",
        "summary": "a man was not eating food",
        "spans": [[6, 13]],
        "reference": "a man is eating food",
    },
    {
        "document": "dog runs in park . cat sleeps on sofa",
        "summary": "dog runs in park",
        "spans": [],
        "reference": "dog runs in park",
    },
]
