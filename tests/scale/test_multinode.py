"""The multi-node path, proven on this machine: two node ranks on localhost (two `torchrun --nnodes 2` launches
with one process each, static rendezvous at 127.0.0.1), against one process on the whole batch.

Two workers run on the two "nodes": the loss-level DDP worker of `tests/core/distributed` (every in-batch loss,
gathered negatives, unequal batches) and the Trainer-level scenario worker (`ContrastiveTrainer`, InfoNCE with
hard negatives, one SGD step). Both compare in float64.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny_models import summation_tolerance

from scale.scenarios import run

ROOT = Path(__file__).resolve().parents[2]
LOSS_WORKER = ROOT / "tests" / "core" / "distributed" / "two_process_worker.py"
TRAINER_WORKER = Path(__file__).with_name("fsdp_worker.py")

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed/gloo missing"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(worker: Path, *args: object, timeout: int = 300) -> None:
    """`torchrun --nnodes 2 --nproc_per_node 1 --node_rank {0,1}` on localhost, both launches at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run",
                "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                "--master_addr", "127.0.0.1", "--master_port", str(port),
                str(worker), *map(str, args),
            ],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for node in (0, 1)
    ]  # fmt: skip
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {node} failed ({p.returncode}):\n{out[-2000:]}\n{err[-4000:]}"


def test_loss_level_two_nodes_equal_one_process(tmp_path):
    out = tmp_path / "results.json"
    two_nodes(LOSS_WORKER, out)
    results = json.loads(out.read_text())
    assert results["helpers"]["rank_world"] == [0, 2, True]
    for name in ("pairs", "hard_negatives", "multi_positive_learnable", "unequal_batches", "cosent"):
        r = results[name]
        assert r["loss_abs_diff"] < 1e-12 and r["per_rank_loss_abs_diff"] < 1e-12, (name, r)
        assert r["grad_max_abs_diff"] < 1e-12 * max(1.0, r["grad_max_abs"]), (name, r)
        assert r["control_no_gather_loss_abs_diff"] > 1e-3, (name, r)  # without gathering it would differ


@pytest.mark.slow
def test_trainer_two_nodes_equal_one_process(tmp_path):
    two_nodes(TRAINER_WORKER, "--engine", "ddp", tmp_path / "nodes", "infonce_hard_negatives")
    got = torch.load(tmp_path / "nodes" / "infonce_hard_negatives.pt", weights_only=False)
    (tmp_path / "single").mkdir()
    ref = run("infonce_hard_negatives", tmp_path / "single", engine="single")
    assert got["engine"] == "ddp on 2 processes"
    scale = max(1.0, max(float(v.abs().max()) for v in ref["grads"].values()))
    for key in ("weights", "grads"):
        assert set(ref[key]) == set(got[key])
        diff = max(float((ref[key][k] - got[key][k]).abs().max()) for k in ref[key])
        assert diff <= summation_tolerance(torch.float64, scale, depth=4096), (key, diff)
