from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from faithfulness.helpers import INSTRUCTION, tiny_causal_lm, word_tokenizer
from faithfulness.helpers import ROWS as SPAN_ROWS
from hf_contrastive.faithfulness import evaluation
from hf_contrastive.faithfulness import recipes as faithful_recipes
from hf_contrastive.faithfulness.arithmetic import negation
from hf_contrastive.faithfulness.arithmetic.lora import adapter_delta_weights
from hf_contrastive.faithfulness.spans import SpanFeatureBuilder
from hf_contrastive.recipes import RECIPE_TASKS, load_recipe, run_recipe

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
        "--method.max_length", "48",
        "--method.instruction", "summarize",
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
    overrides = _overrides(tmp_path, model_dir, data, "ul") + ["--method.sft_steps", "1"]
    recipe = load_recipe("faithful-unlikelihood", overrides)
    out = run_recipe(recipe)
    for key in ("before", "after"):
        assert {"unfaithful_span_logprob", "faithful_token_logprob", "reference_perplexity"} <= set(out[key])
    assert out["after"]["unfaithful_span_logprob"] != out["before"]["unfaithful_span_logprob"]
    assert (tmp_path / "ul" / "adapter_model.safetensors").exists()


def test_unlikelihood_recipe_sft_stage_and_mixed_rows(tiny_recipe_setup, monkeypatch):
    tmp_path, model_dir, data = tiny_recipe_setup
    seen = []

    class Recording(faithful_recipes.SpanUnlikelihoodTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rows = kwargs["train_dataset"]
            seen.append(
                (len(rows), sum(bool(r["spans"]) for r in rows), self.args.objective, self.args.max_steps)
            )
            seen.append((self.loss_fn.span_weighting, self.args.bf16 and not torch.cuda.is_available()))

    monkeypatch.setattr(faithful_recipes, "SpanUnlikelihoodTrainer", Recording)
    overrides = _overrides(tmp_path, model_dir, data, "ul-sft") + [
        "--method.sft_steps", "1",
        "--method.mix_faithful", "true",
        "--method.span_weighting", "position",
    ]  # fmt: skip
    out = run_recipe(load_recipe("faithful-unlikelihood", overrides))
    # stage 1: NLL on the 4 faithful references; stage 2: the 4 perturbed summaries + the 4 references
    assert seen[0][:3] == (4, 0, "nll") and seen[0][3] == 1
    assert seen[2][:3] == (8, 4, "unlikelihood") and seen[2][3] == 2
    assert seen[3] == ("position", False)  # the weighting reaches the loss; no bf16 autocast on CPU
    assert "sft" in out and "after" in out
    with pytest.raises(ValueError, match="sft_steps"):
        run_recipe(load_recipe("faithful-unlikelihood", [*overrides, "--method.sft_steps", "-1"]))


def test_negation_recipe_picks_lambda_on_validation(tiny_recipe_setup):
    tmp_path, model_dir, data = tiny_recipe_setup
    overrides = _overrides(tmp_path, model_dir, data, "neg") + [
        "--data.n_validation", "2",
        "--method.lambdas", "[0.0, 0.5]",
        "--method.max_perplexity_increase", "10.0",
    ]  # fmt: skip
    out = run_recipe(load_recipe("faithful-task-negation", overrides))
    assert out["lambda"] in (0.0, 0.5)
    scores = out["validation"]
    best = min(scores, key=lambda k: scores[k]["unfaithful_span_logprob"])
    assert float(best) == out["lambda"]
    assert (tmp_path / "neg" / "adapter_model.safetensors").exists()  # the negated adapter alone, at the top
    bad = load_recipe("faithful-task-negation", [*overrides, "--data.n_validation", "0"])
    with pytest.raises(ValueError, match="validation"):
        run_recipe(bad)


def _scripted_validation(monkeypatch, figures):
    """Replace the validation scoring by fixed figures, one per scale in the order they are tried."""
    calls = iter(figures)

    def fake(*args, **kwargs):
        return dict(next(calls))

    monkeypatch.setattr(negation, "evaluate_faithfulness", fake, raising=False)
    monkeypatch.setattr(evaluation, "evaluate_faithfulness", fake)
    return calls


@pytest.mark.parametrize(
    ("max_increase", "want"),
    [
        (0.05, 0.5),  # lam = 1 has the lowest unfaithful log-prob but +10% perplexity: the guard rejects it
        (0.01, 0.0),  # both scales raise perplexity by more than 1%: only lam = 0 is left
        (0.20, 1.0),  # a looser guard lets lam = 1 through
    ],
)
def test_negation_scale_perplexity_guard_rejects_a_scale(monkeypatch, max_increase, want):
    tok = word_tokenizer()
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(tiny_causal_lm(len(tok)), lora, adapter_name="halluc")
    builder = SpanFeatureBuilder(tok, max_length=64, instruction=INSTRUCTION)
    halluc = adapter_delta_weights(model, "halluc")
    calls = _scripted_validation(
        monkeypatch,
        [  # lambdas are tried in ascending order: 0.0, 0.5, 1.0
            {"unfaithful_span_logprob": -1.0, "reference_perplexity": 10.0},
            {"unfaithful_span_logprob": -2.0, "reference_perplexity": 10.4},
            {"unfaithful_span_logprob": -5.0, "reference_perplexity": 11.0},
        ],
    )
    out = negation.select_negation_scale(
        model, "halluc", builder, SPAN_ROWS, lambdas=[1.0, 0.0, 0.5], max_perplexity_increase=max_increase
    )
    assert next(calls, None) is None  # each scale scored exactly once
    assert out["lambda"] == want and out["adapter"] == "negated"
    assert sorted(out["scores"]) == [0.0, 0.5, 1.0]
    assert model.active_adapter == "negated"
    chosen = adapter_delta_weights(model, "negated")
    assert chosen.keys() == halluc.keys()
    for k, delta in halluc.items():  # the kept adapter is theta_0 - lam * tau with the chosen lam
        assert torch.allclose(chosen[k], -want * delta, atol=1e-6 * max(1.0, float(delta.abs().max()))), k
