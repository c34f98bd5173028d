"""FSDP2 (`fully_shard` through accelerate) on two CPU processes = one process on the whole batch.

For each scenario of `scenarios.py` (InfoNCE with hard negatives and gathered negatives, GradCache, a learnable
temperature that lives in the loss, LoRA, the span unlikelihood objective, the listwise reranker) one SGD step
of learning rate 1 is run sharded on two processes and on one process; the weights after the step (= w0 -
gradient), the gradients before it and the saved folder must agree. Everything is float64: the bound is a
float64 summation bound on the gradient magnitudes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_run import run_two_processes
from safetensors.torch import load_file
from tiny_models import summation_tolerance

from scale.scenarios import SCENARIOS, run

WORKER = Path(__file__).with_name("fsdp_worker.py")
# `cuda` (the GPU benchmark suite sets it) runs the scenarios on two GPUs through `TrainingArguments(fsdp=...)`.
DEVICE = os.environ.get("HF_CONTRASTIVE_TEST_DEVICE", "cpu")

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
    ),
]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp2")
    run_two_processes(WORKER, "--device", DEVICE, "--engine", "fsdp2", out, *SCENARIOS, timeout=600)
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    results = {}
    for i, name in enumerate(SCENARIOS):
        (out / name).mkdir()
        results[name] = run(name, out / name, engine="single", device=DEVICE, save=i == 0)
    results["_dir"] = out
    return results


def max_diff(a: dict, b: dict) -> tuple[float, float]:
    assert set(a) == set(b), set(a) ^ set(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(v.abs().max()) for v in a.values())
    return diff, scale


def compute_dtype(name: str, key: str) -> torch.dtype:
    """The precision a value was computed in: the models are float64, the loss's own parameters float32, and
    the span objective's fused LM head takes its log-softmax in float32."""
    return torch.float32 if name == "span" or key.startswith("loss.") else torch.float64


def assert_close(name: str, ref: dict, got: dict) -> None:
    assert ref and set(ref) == set(got), set(ref) ^ set(got)
    scale = max(1.0, max(float(v.abs().max()) for v in ref.values()))
    for k in ref:
        diff = float((ref[k] - got[k]).abs().max())
        bound = summation_tolerance(compute_dtype(name, k), scale, depth=4096)
        assert diff <= bound, (name, k, diff, bound)


@pytest.mark.parametrize("name", SCENARIOS)
def test_fsdp2_two_processes_equal_one_process(single, sharded, name):
    ref, got = single[name], torch.load(sharded / f"{name}.pt", weights_only=False)
    assert got["engine"] == "fsdp2 on 2 processes" and ref["engine"] == "single on 1 process"
    # weights after one SGD step of lr 1 (and the loss's own parameters), and the gradients before it
    assert_close(name, ref["weights"], got["weights"])
    assert_close(name, ref["grads"], got["grads"])
    # the Trainer accumulates the logged loss in float32
    assert abs(ref["loss"] - got["loss"]) <= 8 * torch.finfo(torch.float32).eps * max(1.0, abs(ref["loss"]))
    # the step changed something: the comparison is not between two untouched models
    assert any(v.abs().max() > 0 for v in ref["grads"].values())


def test_learnable_temperature_is_trained_under_fsdp2(single, sharded):
    got = torch.load(sharded / "learnable_temperature.pt", weights_only=False)
    scale_keys = [k for k in got["grads"] if k.startswith("loss.")]
    assert scale_keys, "the loss's learnable scale got no gradient"
    init = math.log(1 / 0.05)
    assert all(abs(float(got["weights"][k]) - init) > 1e-6 for k in scale_keys), "the scale was not stepped"


def test_gradcache_replays_without_gradient_sync_but_the_last(sharded):
    got = torch.load(sharded / "gradcache.pt", weights_only=False)
    # 4 rows per process x 3 roles = 12 rows in mini-batches of 2: 6 replays, sync switched off for 5
    assert got["syncs_off"] == 5


def test_saved_folder_equals_single_process_folder(single, sharded):
    ref_dir = single["_dir"] / SCENARIOS[0] / "saved"
    got_dir = sharded / SCENARIOS[0] / "saved"
    assert sorted(p.name for p in ref_dir.iterdir()) == sorted(p.name for p in got_dir.iterdir())
    ref_w, got_w = load_file(ref_dir / "model.safetensors"), load_file(got_dir / "model.safetensors")
    diff, scale = max_diff(ref_w, got_w)
    assert diff <= summation_tolerance(torch.float64, max(1.0, scale), depth=4096)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (ref_dir / name).read_text() == (got_dir / name).read_text(), name
    ref_card = (ref_dir / "README.md").read_text().replace(str(ref_dir.resolve()), "<dir>")
    got_card = (got_dir / "README.md").read_text().replace(str(got_dir.resolve()), "<dir>")
    assert ref_card == got_card
