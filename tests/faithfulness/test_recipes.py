from __future__ import annotations

import json

import pytest

from faithfulness.helpers import tiny_causal_lm, word_tokenizer
from hf_contrastive.recipes.registry import RECIPE_TASKS, load_recipe, run_recipe

ROWS = [
    {"document": f"dog runs in park {i} . cat sleeps on sofa 5", "summary": f"dog runs in park {i}"}
    for i in (1, 2, 3, 4)
] + [
    {"document": "the woman plays guitar in paris . it rains today", "summary": "the woman was in paris"},
    {"document": "a man is eating food in london", "summary": "a man is eating food"},
    {"document": "a man is eating food in berlin 3", "summary": "a man is eating food 3"},
    {"document": "the cat is big 2 . the dog is small", "summary": "the cat is big"},
]


@pytest.fixture
def tiny_recipe_setup(tmp_path):
    tok = word_tokenizer()
    model_dir = tmp_path / "model"
    tiny_causal_lm(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "summaries.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    return tmp_path, model_dir, data


def _overrides(tmp_path, model_dir, data, name):
    return [
        "--model.name_or_path", str(model_dir),
        "--data.path", str(data),
        "--data.n_train", "4",
        "--data.n_test", "2",
        "--span.max_length", "48",
        "--span.instruction", "summarize",
        "--lora.target_modules", "[q_proj, v_proj]",
        "--lora.r", "2",
        "--args.output_dir", str(tmp_path / name),
        "--args.max_steps", "2",
        "--args.disable_tqdm", "true",
    ]  # fmt: skip


def test_packaged_faithful_recipes_resolve():
    for name in ("faithful-unlikelihood", "faithful-task-negation"):
        recipe = load_recipe(name)
        assert recipe["task"] in RECIPE_TASKS
        assert "${" not in json.dumps(recipe)
        assert recipe["data"]["path"].endswith("summarization/xsum/test.jsonl")


def test_unlikelihood_recipe_runs_on_a_tiny_model(tiny_recipe_setup):
    tmp_path, model_dir, data = tiny_recipe_setup
    recipe = load_recipe("faithful-unlikelihood", _overrides(tmp_path, model_dir, data, "ul"))
    out = run_recipe(recipe)
    for key in ("before", "after"):
        assert {"unfaithful_span_logprob", "faithful_token_logprob", "reference_perplexity"} <= set(out[key])
    assert out["after"]["unfaithful_span_logprob"] != out["before"]["unfaithful_span_logprob"]
    assert (tmp_path / "ul" / "adapter_model.safetensors").exists()


def test_negation_recipe_picks_lambda_on_validation(tiny_recipe_setup):
    tmp_path, model_dir, data = tiny_recipe_setup
    overrides = _overrides(tmp_path, model_dir, data, "neg") + [
        "--data.n_validation", "2",
        "--negation.lambdas", "[0.0, 0.5]",
        "--negation.max_perplexity_increase", "10.0",
    ]  # fmt: skip
    out = run_recipe(load_recipe("faithful-task-negation", overrides))
    assert out["lambda"] in (0.0, 0.5)
    scores = out["validation"]
    best = min(scores, key=lambda k: scores[k]["unfaithful_span_logprob"])
    assert float(best) == out["lambda"]
    assert (tmp_path / "neg" / "negated" / "adapter_model.safetensors").exists()
    bad = load_recipe("faithful-task-negation", [*overrides, "--data.n_validation", "0"])
    with pytest.raises(ValueError, match="validation"):
        run_recipe(bad)
