"""Recipes, the train verb (one process and two with torchrun), and the main job on a tiny model."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from peft import PeftModel
from tiny_models import WORDS, bert_config, bert_tokenizer
from transformers import BertModel

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.cli import main
from hf_contrastive.continual import ContinualConfig
from hf_contrastive.core.peft import apply_peft
from hf_contrastive.core.recipes import RecipeTask, build_args, lora_config
from hf_contrastive.core.utils import resource_dir
from hf_contrastive.embeddings.dse import DSETrainingArguments
from hf_contrastive.embeddings.recipes import ContrastiveMethod
from hf_contrastive.embeddings.text2token import Text2TokenConfig
from hf_contrastive.embeddings.trainer import ContrastiveConfig
from hf_contrastive.faithfulness.recipes import SpanUnlikelihoodMethod, TaskNegationMethod
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig
from hf_contrastive.quickstart import EVAL_PHRASINGS, TRAIN_PHRASINGS, help_desk_data
from hf_contrastive.recipes import (
    RECIPE_TASKS,
    apply_overrides,
    load_recipe,
    recipe_path,
    register_recipe_task,
    run_recipe,
)
from hf_contrastive.relation.recipes import RelationMethod
from hf_contrastive.relation.tkre import RelationFinetuneConfig, TKREConfig
from hf_contrastive.retrieval.recipes import RerankerMethod
from hf_contrastive.retrieval.rerankers.trainer import RerankerConfig
from hf_contrastive.vision.close import CLOSETrainingArguments
from hf_contrastive.vision.cosmo import CosmoTrainingArguments
from hf_contrastive.vision.dense.dito import DITOTrainingArguments
from hf_contrastive.vision.dense.pixpro import PixProTrainingArguments
from hf_contrastive.vision.hydra import HydraTrainingArguments
from hf_contrastive.vision.pixel_linguist import PixelLinguistTrainingArguments
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig

PACKAGED = sorted(p.stem for p in resource_dir("recipes").glob("*.yaml"))

# The TrainingArguments class(es) whose fields a task's args section may hold.
ARGS_CLASSES = {
    "contrastive": (ContrastiveConfig,),
    "debcse": (ContrastiveConfig,),
    "multicsr-data": (ContrastiveConfig,),
    "dse": (DSETrainingArguments,),
    "moe": (ContrastiveConfig,),
    "text2token": (Text2TokenConfig,),
    "retrieval": (ContrastiveConfig,),
    "reranker": (RerankerConfig,),
    "faithful-unlikelihood": (SpanUnlikelihoodConfig,),
    "faithful-task-negation": (SpanUnlikelihoodConfig,),
    "relation": (TKREConfig, RelationFinetuneConfig),
    "image-text": (ImageTextContrastiveConfig,),
    "hydra": (HydraTrainingArguments,),
    "dito": (DITOTrainingArguments,),
    "cosmo": (CosmoTrainingArguments,),
    "pixpro": (PixProTrainingArguments,),
    "close": (CLOSETrainingArguments,),
    "pixel-linguist": (PixelLinguistTrainingArguments,),
    "continual": (ContinualConfig,),
}


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


def test_every_task_is_registered_with_real_callables():
    assert set(RECIPE_TASKS) == set(ARGS_CLASSES)
    for name, task in RECIPE_TASKS.items():
        assert task.name == name and callable(task.runner) and dataclasses.is_dataclass(task.method)
    assert {"simcse-unsup", "simcse-sup", "mnrl-pairs", "tkre-pretrain", "reranker-cl"} <= set(PACKAGED)
    with pytest.raises(ValueError, match="packaged recipes"):
        recipe_path("no-such-recipe")


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_recipe_resolves_into_its_method_dataclass(name, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # packaged recipes use no deprecated section
        recipe = load_recipe(name)
    assert "${" not in json.dumps(recipe)
    task = RECIPE_TASKS[recipe["task"]]
    assert set(recipe) <= {"task", "model", "data", "method", "args", "lora"}
    method = task.read_method(recipe)
    assert isinstance(method, task.method)
    for key, value in recipe.get("method", {}).items():
        assert getattr(method, key) == value, (name, key)
    allowed = set().union(*(c.__dataclass_fields__ for c in ARGS_CLASSES[recipe["task"]]))
    assert set(recipe["args"]) <= allowed, (name, set(recipe["args"]) - allowed)
    assert not set(recipe["args"]) & set(task.method_fields), "method settings belong in method:"
    lora_config(recipe.get("lora"))
    assert main(["train", name, "--print-recipe"]) == 0
    assert json.loads(capsys.readouterr().out) == recipe


@pytest.mark.parametrize(
    "method_cls, config_cls",
    [
        (ContrastiveMethod, ContrastiveConfig),
        (RerankerMethod, RerankerConfig),
        (SpanUnlikelihoodMethod, SpanUnlikelihoodConfig),
        (TaskNegationMethod, SpanUnlikelihoodConfig),
        (RelationMethod, TKREConfig),
        (RelationMethod, RelationFinetuneConfig),
    ],
)
def test_method_defaults_match_the_trainer_configs(method_cls, config_cls):
    config_fields = {f.name: f for f in dataclasses.fields(config_cls)}
    shared = [f for f in dataclasses.fields(method_cls) if f.name in config_fields]
    assert shared
    for f in shared:
        mine = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        other = config_fields[f.name]
        theirs = (
            other.default_factory() if other.default_factory is not dataclasses.MISSING else other.default
        )
        assert mine == theirs, (method_cls.__name__, f.name, mine, theirs)


def test_unknown_method_args_and_lora_keys_are_refused():
    with pytest.raises(ValueError, match=r"Unknown method setting\(s\) \['tempreature'\]"):
        load_recipe("simcse-unsup", ["--method.tempreature", "0.1"])
    with pytest.raises(ValueError, match=r"Unknown method setting\(s\) \['objectiv'\] of task 'reranker'"):
        load_recipe("reranker-sft", ["--method.objectiv", "cl"])
    with pytest.raises(ValueError, match=r"Unknown LoRA setting\(s\) \['rank'\]"):
        load_recipe("mnrl-pairs", ["--lora.rank", "4"])
    with pytest.raises(ValueError, match=r"Unknown training argument\(s\) \['lr'\]"):
        build_args(ContrastiveConfig, {"output_dir": "x", "lr": 1.0})
    with pytest.raises(ValueError, match=r"Unknown training argument\(s\) \['bogus'\]"):
        run_recipe(load_recipe("reranker-sft", ["--args.bogus", "1"]))
    config = lora_config({"r": 2, "target_modules": ["q_proj"]}, task_type="CAUSAL_LM")
    assert config.r == 2 and config.task_type == "CAUSAL_LM" and lora_config(None) is None


def test_method_settings_reach_the_training_arguments():
    method = ContrastiveMethod(loss="moco", queue_size=16, temperature=0.1)
    section = {"output_dir": "x", "use_cpu": True, "per_device_train_batch_size": 8}
    args = build_args(ContrastiveConfig, section, method=method)
    assert (args.loss, args.queue_size, args.temperature) == ("moco", 16, 0.1)


def test_old_section_names_still_read_with_a_future_warning(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(
        "task: faithful-task-negation\n"
        "model: {name_or_path: smollm2}\n"
        "data: {path: x.jsonl}\n"
        "span: {max_length: 64}\n"
        "negation: {lambdas: [0.0, 0.5], target: spans}\n"
        "eval: {batch_size: 2}\n"
        "lora: {r: 2, target_modules: all-linear}\n"
    )
    with pytest.warns(FutureWarning, match="'span' section") as record:
        recipe = load_recipe(old)
    messages = " ".join(str(w.message) for w in record)
    assert "'negation' section" in messages and "'eval' section" in messages
    assert "span" not in recipe and "negation" not in recipe and "eval" not in recipe
    assert recipe["method"] == {"max_length": 64, "lambdas": [0.0, 0.5], "target": "spans"}
    assert recipe["data"]["eval_batch_size"] == 2
    assert RECIPE_TASKS[recipe["task"]].read_method(recipe).lambdas == [0.0, 0.5]

    tkre = tmp_path / "tkre.yaml"
    tkre.write_text("task: relation\ntkre: {p_between: 0.7}\n")
    with pytest.warns(FutureWarning, match="'tkre' section"):
        assert load_recipe(tkre)["method"] == {"p_between": 0.7}

    args_loss = tmp_path / "args_loss.yaml"
    args_loss.write_text("args: {loss: moco, learning_rate: 0.1}\n")
    with pytest.warns(FutureWarning, match="under 'args'"):
        recipe = load_recipe(args_loss, ["--args.temperature", "0.2"])
    assert recipe["method"] == {"loss": "moco", "temperature": 0.2} and recipe["args"] == {
        "learning_rate": 0.1
    }

    both = tmp_path / "both.yaml"
    both.write_text("task: reranker\nmethod: {objective: cl}\nreranker: {objective: sft}\n")
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="given both in reranker and in method"):
        load_recipe(both)
    wrong_task = tmp_path / "wrong.yaml"
    wrong_task.write_text("task: reranker\nspan: {eps: 1.0}\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_recipe(wrong_task)


def test_apply_peft_checks_target_modules():
    torch.manual_seed(0)
    model = BertModel(bert_config(40))
    with pytest.raises(ValueError, match=r"\['qeury'\] do not exist.*Linear layers it has: \[.*'query'"):
        apply_peft(model, lora_config({"r": 2, "target_modules": ["qeury", "value"]}))
    wrapped = apply_peft(
        BertModel(bert_config(40)), lora_config({"r": 2, "target_modules": ["query", "value"]})
    )
    assert isinstance(wrapped, PeftModel)
    everything = apply_peft(BertModel(bert_config(40)), lora_config({"r": 2, "target_modules": "all-linear"}))
    names = [n for n, _ in everything.named_modules() if n.endswith("lora_A")]
    assert any("intermediate.dense" in n for n in names) and any("attention.self.key" in n for n in names)


@dataclasses.dataclass
class _EchoMethod:
    scale: float = 2.0


def _echo_runner(recipe):
    return {"scale": RECIPE_TASKS["echo"].read_method(recipe).scale, "data": recipe.get("data")}


def test_register_recipe_task_adds_a_runnable_task(tmp_path):
    task = RecipeTask(name="echo", runner=_echo_runner, method=_EchoMethod)
    register_recipe_task(task)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_recipe_task(task)
        p = tmp_path / "echo.yaml"
        p.write_text("task: echo\nmethod: {scale: 3.0}\ndata: {root: '${data}'}\n")
        recipe = load_recipe(p, ["--scale", "5"])  # a bare key naming a method setting goes to method
        assert recipe["method"] == {"scale": 5.0} and "${" not in recipe["data"]["root"]
        assert run_recipe(recipe)["scale"] == 5.0
        with pytest.raises(ValueError, match=r"Unknown method setting\(s\) \['size'\] of task 'echo'"):
            load_recipe(p, ["--method.size", "1"])
    finally:
        RECIPE_TASKS.pop("echo")
    with pytest.raises(ValueError, match="Unknown recipe task 'echo'"):
        load_recipe(p)
    with pytest.raises(TypeError, match="dataclass"):
        RecipeTask(name="bad", runner=_echo_runner, method=dict)


def test_old_module_path_is_an_alias_of_the_registry(monkeypatch):
    monkeypatch.delitem(sys.modules, "hf_contrastive.trainers.recipes", raising=False)
    with pytest.warns(FutureWarning, match="hf_contrastive.trainers.recipes"):
        old = importlib.import_module("hf_contrastive.trainers.recipes")
    assert old.load_recipe is load_recipe and old.RECIPE_TASKS is RECIPE_TASKS


def test_overrides():
    r = apply_overrides(
        {"args": {"learning_rate": 1.0}},
        ["--learning_rate", "2e-5", "--model.pooling=cls", "--eval_strategy", "no", "--args.bf16", "true"],
    )
    assert r == {
        "args": {"learning_rate": 2e-5, "eval_strategy": "no", "bf16": True},
        "model": {"pooling": "cls"},
    }
    fields = ("temperature",)
    r = apply_overrides({}, ["--temperature", "0.1", "--seed", "3"], method_fields=fields)
    assert r == {"method": {"temperature": 0.1}, "args": {"seed": 3}}
    with pytest.warns(FutureWarning, match="--method.temperature"):
        r = apply_overrides({}, ["--args.temperature", "0.2"], method_fields=fields)
    assert r == {"method": {"temperature": 0.2}}
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
    capsys.readouterr()
    # A bad recipe is a usage error: one line naming the unknown key, exit status 2, no traceback.
    assert main(["train", str(recipe), "--lr", "1"]) == 2
    err = capsys.readouterr().err
    assert "Unknown training argument(s) ['lr']" in err and "Traceback" not in err


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
