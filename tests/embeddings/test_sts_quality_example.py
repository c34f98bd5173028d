"""Smoke test of examples/sts_quality.py on tiny random models and a few rows of the real data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny_models import bert_tokenizer, save_tiny_bert, tiny_llama

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sts_quality.py"

pytestmark = pytest.mark.integration  # reads ../shared/data


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("sts_quality_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_folders(tmp_path):
    bert = tmp_path / "bert"
    save_tiny_bert(bert)
    llama = tmp_path / "llama"
    tiny_llama().save_pretrained(llama)
    tok = bert_tokenizer(tmp_path / "llama-vocab")
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(llama)
    return bert, llama


def test_supervised_runs_both_trainers(example, tiny_folders, shared_data, tmp_path):
    bert, _ = tiny_folders
    out = tmp_path / "out"
    res = example.main(
        [
            "supervised",
            "--model",
            str(bert),
            "--train-limit",
            "24",
            "--test-limit",
            "40",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--output-dir",
            str(out),
        ]
    )["supervised"]
    for side in ("ours", "sentence_transformers"):
        assert set(res[side]) >= {"before", "after", "train_seconds"}
    for side in ("ours", "sentence_transformers"):
        assert all(-100.0 <= res[side][k] <= 100.0 for k in ("before", "after"))  # Spearman x 100
    # The two "before" figures are rank statistics of near-degenerate random embeddings: they move with
    # the kernels' summation order, so they are not compared. What must agree is what both libraries
    # compute from the same untrained folder: the embeddings, to float32 tolerance.
    from sentence_transformers import SentenceTransformer

    from hf_contrastive import SentenceEncoder

    texts = ["a man is eating food.", "the woman plays guitar", "dog runs in park"]
    ours = SentenceEncoder.from_pretrained(bert, pooling="mean").encode(texts)
    theirs = torch.as_tensor(SentenceTransformer(str(bert), device="cpu").encode(texts))
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=0, atol=1e-5 * max(scale, 1.0))
    assert json.loads((out / "supervised.json").read_text())["settings"]["steps"] == 2


def test_simcse_runs_encoder_and_lora_causal_lm(example, tiny_folders, shared_data, tmp_path):
    bert, llama = tiny_folders
    out = tmp_path / "out"
    res = example.main(
        [
            "simcse",
            "--model",
            str(bert),
            "--llm",
            str(llama),
            "--sentences",
            "24",
            "--batch-size",
            "8",
            "--max-steps",
            "2",
            "--test-limit",
            "30",
            "--lora-layers",
            "1",
            "--lora-r",
            "4",
            "--lora-modules",
            "attention",
            "--llm-pooling",
            "last_token",
            "--llm-prompt-template",
            example.PROMPT_EOL,
            "--eval-split",
            "dev",
            "--output-dir",
            str(out),
        ]
    )["simcse"]
    assert set(res["backbones"]) == {"minilm", "smollm2"}
    for run in res["backbones"].values():
        assert run["steps"] == 2 and all(torch.isfinite(torch.tensor(x)) for x in run["logged_losses"])
    assert "prompt template" in res["backbones"]["smollm2"]["model"]
    assert json.loads((out / "simcse.json").read_text())["settings"]["eval_split"] == "dev"


def test_simcse_dev_selection_keeps_the_best_checkpoint(example, tiny_folders, shared_data, tmp_path):
    """`--dev-eval-steps`: STS-B dev is scored every N steps, training stops after `--dev-patience` scores without a
    gain, and the checkpoint with the best dev score is the model that test is scored on."""
    _, llama = tiny_folders
    out = tmp_path / "out"
    res = example.main(
        [
            "simcse",
            "--backbones",
            "smollm2",
            "--llm",
            str(llama),
            "--sentences",
            "96",
            "--batch-size",
            "8",
            "--max-steps",
            "8",
            "--test-limit",
            "30",
            "--lora-r",
            "4",
            "--llm-lr",
            "5e-2",  # large enough that the dev score moves between evaluations
            "--dev-eval-steps",
            "2",
            "--dev-sample",
            "40",
            "--dev-patience",
            "2",
            "--skip-before",
            "--output-dir",
            str(out),
        ]
    )["simcse"]
    sel = res["backbones"]["smollm2"]["dev_selection"]
    steps = [step for step, _ in sel["curve"]]
    scores = [score for _, score in sel["curve"]]
    assert sel["dev_pairs"] == 40 and steps == list(range(2, 2 * len(steps) + 1, 2))
    best = max(range(len(scores)), key=scores.__getitem__)
    assert sel["best_dev"] == pytest.approx(scores[best], abs=1e-9)
    assert sel["best_checkpoint"].endswith(f"checkpoint-{steps[best]}")
    # Early stopping: the run ends `patience` evaluations after the best one, or at max_steps.
    assert len(steps) == min(best + 1 + 2, 4)
    # The model scored on test is the best checkpoint, reloaded: scoring it on dev again gives the best score.
    assert sel["dev_after_reload"] == pytest.approx(sel["best_dev"], abs=1e-6)
