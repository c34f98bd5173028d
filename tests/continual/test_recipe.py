"""The `continual` recipe on the real MiniLM and SemEval-2010 (a few sentences per class, one step per task)."""

from __future__ import annotations

import json

import pytest

from hf_contrastive.continual.recipes import relation_description, semeval_incremental_split
from hf_contrastive.recipes import RecipeError, load_recipe, run_recipe


def test_semeval_split_and_descriptions(shared_data):
    classes, train, dev, test = semeval_incremental_split(per_class=5, dev_per_class=2, min_train_rows=100)
    assert len(classes) == 15 and "Other" not in classes and "Entity-Destination(e2,e1)" not in classes
    assert len(train) == 75 and len(dev) == 30
    assert not {e.id for e in train} & {e.id for e in dev}
    assert {e.label for e in test} == set(classes)
    assert relation_description("Cause-Effect(e1,e2)").startswith("the first entity causes or produces")


def test_recipe_runs_every_task_and_saves_the_classifier(tmp_path, shared_data, minilm_path):
    recipe = load_recipe(
        "coconut-semeval",
        [
            f"--args.output_dir={tmp_path / 'out'}",
            "--args.max_steps=1",
            "--args.per_device_train_batch_size=8",
            "--data.per_class=4",
            "--data.dev_per_class=2",
            "--data.eval=dev",
            "--method.buffer_size=15",
        ],
    )
    result = run_recipe(recipe)
    assert [len(r) for r in result["accuracy_matrix"]] == [1, 2, 3]
    assert result["eval_rows"] == 30 and len(result["classes"]) == 15
    saved = json.loads((tmp_path / "out" / "final" / "config.json").read_text())
    assert sorted(saved["id2label"].values()) == sorted(result["classes"])
    assert "forgetting" in (tmp_path / "out" / "final" / "README.md").read_text()


def test_recipe_bad_sections(tmp_path):
    with pytest.raises(RecipeError, match="data.eval"):
        run_recipe(load_recipe("coconut-semeval", ["--data.eval=train", f"--args.output_dir={tmp_path}"]))
    with pytest.raises(RecipeError, match="remove the lora section"):
        recipe = load_recipe("coconut-semeval", [f"--args.output_dir={tmp_path}"])
        recipe["lora"] = {"r": 4}
        run_recipe(recipe)
