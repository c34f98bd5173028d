"""Engine detection and the refusals at start: FSDP where accelerate does not shard, launch configs that cannot
run, more processes than GPUs; the shipped accelerate configs are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig
from distributed_run import run_two_processes

from hf_contrastive.core import engines
from hf_contrastive.core.engines import EngineError, check_launch_config
from scale.scenarios import build

WORKER = Path(__file__).with_name("fsdp_worker.py")
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "trainers" / "accelerate").glob("*.yaml"))


def test_shipped_accelerate_configs_are_valid():
    assert {p.stem for p in CONFIGS} >= {"multi-gpu", "multi-node", "fsdp2", "deepspeed-zero2"}
    for path in CONFIGS:
        config = check_launch_config(path, gpus_per_node=8)
        accelerate_view = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader takes it
        assert accelerate_view.num_processes == config["num_processes"]
        text = path.read_text()
        assert "accelerate launch --config_file trainers/accelerate/" + path.name in text  # the launch line
    fsdp = check_launch_config(next(p for p in CONFIGS if p.stem == "fsdp2"), gpus_per_node=8)
    assert fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("distributed_type: MULTI_GPU\nnum_processes: 16\nnum_machines: 1\n", "set num_processes to 8"),
        ("distributed_type: MULTI_GPU\nnum_processes: 9\nnum_machines: 2\n", "does not split evenly"),
        (
            "distributed_type: MULTI_CPU\nnum_processes: 2\nmixed_precision: fp16\n",
            "fp16 mixed precision needs a GPU",
        ),
        ("distributed_type: FSDP\nnum_processes: 2\nuse_cpu: true\n", "use MULTI_CPU"),
        ("distributed_type: TPU_POD\n", "is not one of"),
    ],
)
def test_bad_launch_configs_are_refused(tmp_path, settings, message):
    path = tmp_path / "config.yaml"
    path.write_text(settings)
    with pytest.raises(EngineError, match=message):
        check_launch_config(path, gpus_per_node=8)


@pytest.mark.distributed
def test_fsdp_asked_on_cpu_is_refused_not_silently_ddp(tmp_path):
    """On two CPU processes accelerate would run DDP when FSDP is asked for: the library refuses before training.

    (On one process transformers itself refuses FSDP.) Run in subprocesses: `TrainingArguments(fsdp=...)` sets
    `ACCELERATE_USE_FSDP` in the environment of the process that builds it.
    """
    with pytest.raises(AssertionError) as failed:
        run_two_processes(WORKER, "--engine", "fsdp2-args", tmp_path, "infonce_hard_negatives", timeout=300)
    assert "EngineError: FSDP was asked for" in str(failed.value)
    assert "falls back to DDP on CPU" in str(failed.value)
    assert not (tmp_path / "infonce_hard_negatives.pt").exists()


def test_more_processes_than_gpus_is_refused(tmp_path, monkeypatch):
    cls, kw = build("infonce_hard_negatives", tmp_path, 1, "single")
    trainer = cls(**kw)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(type(trainer.accelerator), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(EngineError, match="4 processes per node were launched but this node has 2"):
        trainer.check_engine()


def test_every_library_trainer_carries_the_engine_rules():
    """Every `Trainer` subclass the package defines (found by importing each of its modules) has the engine
    rules, and the known ones are among those found (so the search itself cannot come back empty)."""
    import importlib
    import pkgutil

    import transformers

    import hf_contrastive

    found = set()
    for info in pkgutil.walk_packages(hf_contrastive.__path__, "hf_contrastive."):
        if info.name in ("hf_contrastive.__main__", "hf_contrastive._deprecated"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, transformers.Trainer)
                and value.__module__.startswith("hf_contrastive.")
            ):
                found.add(value)
    known = {
        "ContrastiveTrainer", "CrossEncoderTeacherTrainer", "DSETrainer", "Text2TokenTrainer",
        "SpanUnlikelihoodTrainer", "SimCTGTrainer", "RelationClassificationTrainer", "RerankerTrainer",
        "CLOSETrainer", "HydraTrainer", "ImageTextContrastiveTrainer", "ContinualTrainer",
        "ClassificationTrainer",
    }  # fmt: skip
    assert known <= {cls.__name__ for cls in found}, known - {cls.__name__ for cls in found}
    missing = sorted(cls.__qualname__ for cls in found if not issubclass(cls, engines.EngineMixin))
    assert not missing, f"trainers without EngineMixin: {missing}"


@pytest.mark.parametrize(
    ("engine", "refused"), [("fsdp2", True), ("zero3", True), ("zero2", False), ("ddp", False)]
)
def test_moco_key_encoder_refused_where_weights_are_sharded(tmp_path, monkeypatch, engine, refused):
    from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
    from hf_contrastive.core.engines import EngineInfo

    cls, kw = build("infonce_hard_negatives", tmp_path, 1, "single")
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "moco"), loss="moco", per_device_train_batch_size=4, queue_size=8,
        max_steps=1, report_to="none", save_strategy="no", use_cpu=True,
    )  # fmt: skip
    pairs = kw["train_dataset"].remove_columns("negative")
    trainer = ContrastiveTrainer(model=kw["model"], args=args, train_dataset=pairs)
    info = {
        "fsdp2": EngineInfo("fsdp2", 2),
        "zero3": EngineInfo("deepspeed", 2, 3),
        "zero2": EngineInfo("deepspeed", 2, 2),
        "ddp": EngineInfo("ddp", 2),
    }[engine]
    monkeypatch.setattr(type(trainer), "engine", property(lambda self: info))
    if refused:
        with pytest.raises(EngineError, match="momentum"):
            trainer.check_engine()
    else:
        trainer.check_engine()
