"""Recipes, the train verb (one process and two with torchrun), and the main job on a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.cli import main
from hf_contrastive.core.utils import resource_dir
from hf_contrastive.quickstart import EVAL_PHRASINGS, TRAIN_PHRASINGS, help_desk_data
from hf_contrastive.recipes.registry import apply_overrides, load_recipe, recipe_path


@pytest.fixture
def tiny_setup(tmp_path):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    model.save_pretrained(tmp_path / "model")
    g = torch.Generator().manual_seed(1)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for _ in range(24):
            a, p = (
                " ".join(WORDS[i] for i in torch.randint(len(WORDS), (5,), generator=g).tolist())
                for _ in "ap"
            )
            f.write(json.dumps({"anchor": a, "positive": p}) + "\n")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"model: {{name_or_path: {tmp_path / 'model'}}}\n"
        f"data: {{train: {{type: files, format: json, path: {tmp_path / 'pairs.jsonl'}}}}}\n"
        f"args: {{output_dir: {tmp_path / 'out'}, per_device_train_batch_size: 4, max_steps: 2, "
        "save_strategy: 'no', report_to: 'none', disable_tqdm: true, learning_rate: 0.001}\n"
    )
    return tmp_path, recipe


def test_packaged_recipes_resolve():
    names = sorted(p.stem for p in resource_dir("recipes").glob("*.yaml"))
    assert {"simcse-unsup", "simcse-sup", "mnrl-pairs"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert "${" not in json.dumps(recipe)
        from hf_contrastive import ContrastiveConfig

        bad = set(recipe["args"]) - set(ContrastiveConfig.__dataclass_fields__)
        assert not bad, (name, bad)
    with pytest.raises(ValueError, match="packaged recipes"):
        recipe_path("no-such-recipe")


def test_overrides():
    r = apply_overrides(
        {"args": {"learning_rate": 1.0}},
        ["--learning_rate", "2e-5", "--model.pooling=cls", "--eval_strategy", "no", "--args.bf16", "true"],
    )
    assert r == {
        "args": {"learning_rate": 2e-5, "eval_strategy": "no", "bf16": True},
        "model": {"pooling": "cls"},
    }
    with pytest.raises(ValueError, match="has no value"):
        apply_overrides({}, ["--learning_rate"])


def test_unknown_section_and_argument(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("modle: {}\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_recipe(p)


def test_train_verb_end_to_end(tiny_setup, capsys):
    tmp_path, recipe = tiny_setup
    assert main(["train", str(recipe), "--args.max_steps", "3"]) == 0
    assert "Hub-ready model" in capsys.readouterr().out
    final = tmp_path / "out" / "final"
    assert (final / "README.md").exists() and (final / "model.safetensors").exists()
    SentenceEncoder.from_pretrained(final).encode(["a man"])
    with pytest.raises(ValueError, match="Unknown training argument"):
        main(["train", str(recipe), "--lr", "1"])


@pytest.mark.distributed
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_train_verb_under_torchrun_two_processes(tiny_setup):
    tmp_path, recipe = tiny_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            "torchrun",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29613",
            "-m",
            "hf_contrastive",
            "train",
            str(recipe),
            "--args.logging_steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "final" / "model.safetensors").exists(), (
        sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")),
        proc.stdout[-1500:],
        proc.stderr[-1500:],
    )
    out = proc.stdout + proc.stderr
    # 24 rows, 4 per process, 2 processes: one step covers a third of an epoch (alone it would be a sixth),
    # and only the main process logs and saves.
    assert out.count("'epoch': '0.3333'") == 1 and "'epoch': '0.1667'" not in out
    assert out.count("Hub-ready model") == 1


def test_quickstart_data_keeps_phrasings_apart():
    data = help_desk_data()
    assert set(TRAIN_PHRASINGS).isdisjoint(EVAL_PHRASINGS)
    assert len(data["articles"]) == 96 and len(data["eval_queries"]) == 192
    assert set(data["train"]["anchor"]).isdisjoint(data["eval_queries"])
    for pos, neg in zip(data["train"]["positive"], data["train"]["negative"]):
        assert pos != neg


def test_quickstart_runs_on_a_tiny_model(tiny_setup, capsys):
    tmp_path, _ = tiny_setup
    assert (
        main(
            [
                "quickstart",
                "--model",
                str(tmp_path / "model"),
                "--output-dir",
                str(tmp_path / "qs"),
                "--max-steps",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "before: accuracy@1" in out and "after:  accuracy@1" in out
    results = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert results["steps"] == 2
    card = (tmp_path / "qs" / "model" / "README.md").read_text()
    assert "accuracy@1" in card and "model-index" in card
