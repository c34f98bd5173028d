"""A 2-process step (gloo, CPU) gives the loss and gradients of one process on the doubled batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
from distributed_run import run_two_processes

WORKER = Path(__file__).with_name("two_process_worker.py")
SCENARIOS = [
    "pairs",
    "hard_negatives",
    "multi_positive_learnable",
    "false_negative_masking",
    "unequal_batches",
    "empty_rank",
    "cosent",
]

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
    ),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("two_proc") / "results.json"
    run_two_processes(WORKER, out, timeout=240)
    return json.loads(out.read_text())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_loss_and_gradients(results, scenario):
    r = results[scenario]
    assert r["loss_abs_diff"] < 1e-12, r
    assert r["per_rank_loss_abs_diff"] < 1e-12, r
    assert r["grad_max_abs_diff"] < 1e-12 * max(1.0, r["grad_max_abs"]), r
    if scenario != "empty_rank":  # (there every row lives on one rank: no gathering needed)
        # without cross-device negatives the two-process loss is different: the check has teeth
        assert r["control_no_gather_loss_abs_diff"] > 1e-3, r


def test_masking_active_across_ranks(results):
    r = results["false_negative_masking"]
    assert r["masked_single"] >= 2  # the planted cross-rank near-duplicates
    assert r["masked_two_process"] == pytest.approx(r["masked_single"])


def test_gather_helpers(results):
    h = results["helpers"]
    assert h["rank_world"] == [0, 2, True]
    assert h["gather_shape"] == [5, 3]  # unequal local batches 2 + 3
    assert h["gather_values_ok"] and h["gather_grad_ok"]
    assert h["no_grad_gather"] == [0, 1]
    assert h["mean_factor"] == pytest.approx(2 * 2 / 5)
    assert "rank 0: (2, 3), rank 1: (2, 4)" in h["shape_error"]
    assert "N=1" in h["negatives_error"] and "N=2" in h["negatives_error"]
