"""Boundary errors of recipes and the command line: keys and values checked against each task's schema,
one-line CLI errors with exit status 2 (usage) or 1 (runtime), the traceback with --debug."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hf_contrastive.cli import main
from hf_contrastive.recipes import RecipeError, load_recipe, run_recipe


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--method.temperature", "abc"], r"method\.temperature must be a number, got 'abc'"),
        (["--args.learning_rate", "fast"], r"args\.learning_rate must be a number, got 'fast'"),
        (["--args.num_train_epochs", "[1, 2]"], r"args\.num_train_epochs must be a number, got \[1, 2\]"),
        (["--lora.r", "big"], r"lora\.r must be an integer, got 'big'"),
        (["--model.normalize", "sometimes"], r"model\.normalize must be a boolean"),
        (["--data.eval_sts", "[1]"], r"data\.eval_sts must be a string"),
    ],
)
def test_values_of_the_wrong_type_are_refused(overrides, message):
    recipe = "mnrl-pairs" if overrides[0].startswith("--lora") else "simcse-unsup"
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, overrides)


def test_numeric_strings_become_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    # YAML 1.1 reads 1e-4 (no dot) and 3e1 as strings.
    path.write_text(
        "model: {name_or_path: x}\ndata: {train: {type: text, path: t.txt}}\n"
        "method: {temperature: 5e-2}\nargs: {learning_rate: 1e-4, num_train_epochs: 3e1, seed: '7'}\n",
        encoding="utf-8",
    )
    recipe = load_recipe(path)
    assert recipe["args"]["learning_rate"] == pytest.approx(1e-4)
    assert recipe["args"]["num_train_epochs"] == pytest.approx(30.0)
    assert recipe["args"]["seed"] == 7
    assert recipe["method"]["temperature"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("recipe", "override", "message"),
    [
        ("simcse-unsup", "--data.eval_stss", r"\['eval_stss'\] in the data section.*data\.eval_sts\?"),
        ("retrieval-finetune", "--data.hard_negative", r"\['hard_negative'\].*data\.hard_negatives\?"),
        ("reranker-sft", "--data.num_negative", r"\['num_negative'\].*data\.num_negatives\?"),
        ("faithful-unlikelihood", "--data.n_tran", r"\['n_tran'\].*data\.n_train\?"),
        ("re-finetune", "--data.evaluation", r"\['evaluation'\] in the data section of task 'relation'"),
    ],
)
def test_unknown_data_keys_are_refused(recipe, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, [override, "1"])


@pytest.mark.parametrize(
    ("recipe", "key"),
    [("simcse-unsup", "poolng"), ("contriever-pretrain", "query_promt"), ("reranker-sft", "dropout")],
)
def test_unknown_model_keys_are_refused_with_the_accepted_ones(recipe, key):
    # Before: passed on to the backbone's from_pretrained (and silently set on its config).
    with pytest.raises(
        RecipeError, match=rf"\['{key}'\] in the model section.*accepted keys: \[.*'name_or_path'"
    ):
        load_recipe(recipe, [f"--model.{key}", "x"])


def test_tkre_pretraining_refuses_classifier_model_settings():
    recipe = load_recipe("tkre-pretrain", ["--model.max_seq_length", "64"])
    with pytest.raises(RecipeError, match=r"\['max_seq_length'\] do not apply to TKRE pretraining"):
        run_recipe(recipe)


def test_cli_prints_one_line_and_exits_2_for_a_recipe_error(capsys):
    status = main(["train", "simcse-unsup", "--print-recipe", "--method.temperature", "abc"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == [
        "hf-contrastive: error: method.temperature must be a number, got 'abc'. "
        "(run with --debug for the traceback)"
    ]


def test_cli_runtime_error_exits_1_and_debug_shows_the_traceback(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"model: {{name_or_path: {tmp_path / 'missing'}}}\ndata: {{train: {{type: text, path: t.txt}}}}\n"
        f"args: {{output_dir: {tmp_path / 'out'}}}\n",
        encoding="utf-8",
    )
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="does not exist"):
        main(["train", str(path), "--debug"])


def test_cli_subprocess_one_line_exit_2():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "hf_contrastive", "train", "simcse-unsup", "--data.eval_stss", "dev"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hf-contrastive: error:")]
    assert len(lines) == 1 and "data.eval_sts?" in lines[0]
    assert "Traceback" not in proc.stderr
