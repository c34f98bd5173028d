"""Image-text losses on two processes (gloo, CPU) give the loss and gradients of one process on the whole
batch, and equal open_clip's `ClipLoss` / `SigLipLoss` at the same world size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
from safetensors.torch import load_file

from tests.distributed_run import run_two_processes
from tests.vision.trainer_worker import N, one_step

WORKER = Path(__file__).with_name("two_process_worker.py")

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
    ),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vision_two_proc") / "results.json"
    run_two_processes(WORKER, out)
    return json.loads(out.read_text())


@pytest.mark.parametrize("scenario", ["clip_dual_encoder", "siglip"])
def test_two_processes_equal_one_process(results, scenario):
    r = results[scenario]
    # float64 throughout: the gap is summation-order noise, far below 1e-12 of the largest gradient
    assert r["loss_abs_diff"] < 1e-12, r
    assert r["grad_max_abs_diff"] < 1e-12 * max(1.0, r["grad_max_abs"]), r
    assert r["n_grads"] > 10 and not r["missing_grads"], r
    # without cross-device negatives the loss differs: the comparison has teeth
    assert r["control_no_gather_loss_abs_diff"] > 1e-3, r


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_equal_to_open_clip_on_two_processes(results, name):
    if results["open_clip"] is None:
        pytest.skip("open_clip is not installed (pip install --no-deps open-clip-torch==3.3.0)")
    r = results["open_clip"][name]
    assert r["loss_abs_diff"] < 1e-12, r
    assert r["feature_grad_max_abs_diff"] < 1e-12 * max(1.0, r["feature_grad_max_abs"]), r
    assert r["scale_grad_abs_diff"] < 1e-12, r


def test_full_loss_on_every_rank_has_the_same_feature_gradients(results):
    """open_clip's `local_loss=False` (each rank the full N x N loss on gathered features): with the summing
    backward of torch's autograd all_gather, its feature gradients equal ours (ratio 1), and its per-rank loss
    is the global one, not the local one; the local loss only saves the W-fold logits."""
    if results["open_clip"] is None:
        pytest.skip("open_clip is not installed")
    r = results["open_clip"]["clip_naive"]
    assert abs(r["anchor_over_ours_grad_ratio"] - 1.0) < 1e-12, r
    assert r["loss_abs_diff"] > 1e-3, r


TRAINER_MODES = ("clip", "clip-gradcache", "siglip-gradcache")


@pytest.fixture(scope="module")
def trainer_steps(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vision_trainer_two_proc")
    run_two_processes(Path(__file__).with_name("trainer_worker.py"), out, *TRAINER_MODES, timeout=400)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", TRAINER_MODES)
def test_trainer_step_on_two_processes_equals_one_process(trainer_steps, tmp_path, mode):
    """One SGD step of the trainer under DDP (2 x 4 pairs, GradCache with gradient sync on the last re-forward
    only) gives the weights of one process on the 8 pairs."""
    two = load_file(str(trainer_steps / f"{mode}.safetensors"))
    one = one_step(tmp_path / "single", mode, per_device=N)
    assert set(one) == set(two)  # (one_step refuses a step that changed no weight)
    gap = max(float((one[n] - two[n]).abs().max()) for n in one)
    # float64; lr 0.5 times gradients of order 1: the gap is summation-order noise
    assert gap < 1e-12, gap
