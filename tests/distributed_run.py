"""Run a test worker on two CPU processes (`torch.distributed.run`, gloo) with this checkout on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_two_processes(worker: Path, *args: str, timeout: int = 300) -> None:
    """`torchrun --standalone --nproc_per_node 2 worker *args`; fails the test with the workers' output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
    ]
    proc = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        # The first rank to fail is the cause; the others only report a closed connection.
        ranks = {
            r: "\n".join(line for line in proc.stderr.splitlines() if line.startswith(f"[rank{r}]"))[-4000:]
            for r in (0, 1)
        }
        raise AssertionError(
            f"torchrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n--- rank 0 ---\n{ranks[0]}\n"
            f"--- rank 1 ---\n{ranks[1]}\n--- end of stderr ---\n{proc.stderr[-2000:]}"
        )


def end_worker() -> None:
    """End a worker process: wait for every rank, destroy the process group, then leave without interpreter teardown.

    Gloo's C++ threads can still be joinable when the interpreter finalises; their destructor then calls
    `std::terminate` ("terminate called without an active exception", SIGABRT) after the worker has done and
    written everything. `os._exit` skips that teardown, so a finished worker always exits 0.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
