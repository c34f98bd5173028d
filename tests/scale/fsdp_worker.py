"""Sharded side of the engine equality tests: ``torchrun --nproc_per_node 2 THIS [--device D] --engine E OUT name...``.

Every rank runs each named scenario of `scenarios.py` for one optimiser step on engine E (`fsdp2`, `ddp`,
`zero1`, `zero2`, `zero3`); rank 0 writes `OUT/<name>.pt` (weights after the step, gradients, counters). The
model of the first scenario is also saved with the trainer's `save_model` into `OUT/<name>/saved`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from scenarios import run  # noqa: E402

from tests.distributed_run import end_worker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--engine", default="fsdp2")
    p.add_argument("out")
    p.add_argument("names", nargs="+")
    a = p.parse_args()
    if a.engine.startswith("zero") and a.device == "cpu":
        # DeepSpeed's CPU accelerator compiles a shared-memory all-reduce kernel at start; it only speeds up
        # collectives that gloo also does, and needs a compiler on the machine: mark it unavailable.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if a.device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    out = Path(a.out)
    for i, name in enumerate(a.names):
        workdir = out / name
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(name, workdir, engine=a.engine, device=a.device, save=i == 0)
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save(result, out / f"{name}.pt")
    end_worker()


if __name__ == "__main__":
    main()
