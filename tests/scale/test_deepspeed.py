"""DeepSpeed ZeRO-1/2/3 through accelerate on two CPU processes (gloo) = one process on the whole batch.

InfoNCE with hard negatives gathered across processes, one SGD step (see `scenarios.py`); the weights after the
step are compared. DeepSpeed keeps its own float32 copy of the weights (the optimiser's partitions), so the
bound is a float32 one. What the engine cannot run is refused before training starts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_run import run_two_processes
from tiny_models import summation_tolerance

from hf_contrastive.core.engines import EngineError, EngineInfo
from scale.scenarios import build, run

WORKER = Path(__file__).with_name("fsdp_worker.py")
HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
DEVICE = os.environ.get("HF_CONTRASTIVE_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    return run("infonce_hard_negatives", out, engine="single", device=DEVICE)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_two_processes_equal_one_process(single, tmp_path, stage, require_resource):
    if not HAVE_DEEPSPEED:
        require_resource("deepspeed", "pip install -e '.[dev]' installs it")
    run_two_processes(
        WORKER,
        "--device",
        DEVICE,
        "--engine",
        f"zero{stage}",
        tmp_path,
        "infonce_hard_negatives",
        timeout=600,
    )
    got = torch.load(tmp_path / "infonce_hard_negatives.pt", weights_only=False)
    assert got["engine"] == f"deepspeed ZeRO-{stage} on 2 processes"
    ref = single["weights"]
    assert set(got["weights"]) == set(ref)
    scale = max(1.0, max(float(v.abs().max()) for v in ref.values()))
    diff = max(float((ref[k] - got["weights"][k]).abs().max()) for k in ref)
    assert diff <= summation_tolerance(torch.float32, scale, depth=256), diff
    # the step moved the weights by far more than the bound: the comparison has teeth
    moved = max(float(v.abs().max()) for v in single["grads"].values())
    assert moved > 100 * summation_tolerance(torch.float32, scale, depth=256)


class _FakeDeepSpeedState:
    def __init__(self, stage: int) -> None:
        self.num_processes = 2
        self.mixed_precision = "no"
        self.deepspeed_plugin = type("P", (), {"deepspeed_config": {"zero_optimization": {"stage": stage}}})()


@pytest.mark.parametrize(
    ("scenario", "message"),
    [("gradcache", "GradCache cannot run under deepspeed ZeRO-2"), ("learnable_temperature", "learnable")],
)
def test_refused_before_training(tmp_path, monkeypatch, scenario, message):
    """The checks read the engine from the accelerator state; a ZeRO-2 state is enough to trigger them."""
    cls, kw = build(scenario, tmp_path, 1, "single")
    trainer = cls(**kw)
    monkeypatch.setattr(type(trainer), "engine", property(lambda self: EngineInfo("deepspeed", 2, 2)))
    with pytest.raises(EngineError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0


def test_engine_detection_reads_the_accelerate_state():
    from hf_contrastive.core.engines import detect_engine

    acc = type("A", (), {"state": _FakeDeepSpeedState(3)})()
    info = detect_engine(acc)
    assert (info.name, info.zero_stage, info.shards) == ("deepspeed", 3, True)
    assert info.describe() == "deepspeed ZeRO-3 on 2 processes"
