"""Rows of documents, summaries and unfaithful spans for the faithfulness tests."""

from __future__ import annotations

from tiny_models import CHAT_TEMPLATE, tiny_causal_lm, word_tokenizer  # noqa: F401

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
