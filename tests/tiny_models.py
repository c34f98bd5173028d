"""Tiny random models and tokenizers built from configs (seconds, no network), shared by every test folder.

`tests/conftest.py` exposes the common ones as fixtures; tests that need a parameter (a seed, a vocabulary
size) call the builders directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    PreTrainedTokenizerFast,
)

WORDS = (
    "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa "
    "children are playing outside it rains today sun shines bright quick brown fox jumps over lazy "
    "bread piece of music loud quiet car drives fast slow red blue green house big small"
).split()


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), "."]
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def bert_tokenizer(folder: Path) -> BertTokenizerFast:
    tokens = write_vocab(folder).read_text(encoding="utf-8").split()
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def bert_config(vocab_size: int = 80, layers: int = 2) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )


def save_tiny_bert(folder: Path, seed: int = 0) -> tuple[BertModel, BertTokenizerFast]:
    """A random BertModel + tokenizer saved as a plain transformers folder."""
    tok = bert_tokenizer(folder / "_vocab")
    torch.manual_seed(seed)
    model = BertModel(bert_config(vocab_size=len(tok))).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def tiny_llama(seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=90,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return LlamaModel(cfg).eval()


TEXTS = [
    "a man is eating food.",
    "the woman plays guitar",
    "dog runs in park",
    "a quick brown fox jumps over the lazy dog in the big green park",
    "cat sleeps",
    "it rains today",
]


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
    """A random 2-layer Llama causal LM (the config of `tiny_llama`)."""
    config = tiny_llama(seed).config
    config.vocab_size = vocab_size
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def summation_tolerance(dtype: torch.dtype, scale: float, depth: int, safety: float = 8.0) -> float:
    """Largest gap expected between two evaluations of the same float computation in another order.

    Summing ``depth`` terms of magnitude about ``scale`` in another order (other kernels, other mini-batches)
    moves the result by up to about ``depth * eps * scale`` (the recursive-summation error bound);
    ``safety`` covers the few chained operations (matmul, softmax, normalisation) around the sum. Tests
    compare in float64 where they can, so that this bound stays far below any real discrepancy.
    """
    return safety * depth * torch.finfo(dtype).eps * scale


def adam_weight_tolerance(grad_gap: float, lr: float, steps: int, adam_eps: float = 1e-8) -> float:
    """Weight gap after ``steps`` Adam(W) steps when each step's gradients differ by at most ``grad_gap``.

    Adam's update ``m / (sqrt(v) + eps)`` has slope at most ``1 / eps`` in the gradient, and is bounded
    by about 1 in size: each step moves a weight by at most ``lr * min(2, grad_gap / eps)`` more.
    """
    return steps * lr * min(2.0, grad_gap / adam_eps)


def sentence_transformers_folder(folder: Path, bert_tok) -> Path:
    """A sentence-transformers folder written by hand: BERT at the top, mean pooling in `1_Pooling`."""
    torch.manual_seed(3)
    BertModel(bert_config(len(bert_tok))).save_pretrained(folder)
    bert_tok.save_pretrained(folder)
    vocab = sorted(bert_tok.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 64}', encoding="utf-8")
    return folder
