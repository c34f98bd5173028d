"""Print the engine equality figures: sharded / multi-node runs against one process on the whole batch.

Runs the scenarios of ``tests/scale/scenarios.py`` (one SGD step, float64 models) on one process, then on two
processes for each engine, and prints the largest weight and gradient differences next to the largest
gradient. The tests in ``tests/scale/`` assert the same comparisons; this script shows the figures.

Usage::

    python benchmarks/engine_equality.py                       # FSDP2, ZeRO-1/2/3, two nodes (CPU, gloo)
    python benchmarks/engine_equality.py --engines fsdp2 --device cuda   # on two GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "tests" / "scale"
for p in (str(ROOT), str(SCALE), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
from scenarios import SCENARIOS, run  # noqa: E402

WORKER = SCALE / "fsdp_worker.py"
ENGINE_SCENARIOS = {
    "fsdp2": SCENARIOS,
    "zero1": ("infonce_hard_negatives",),
    "zero2": ("infonce_hard_negatives",),
    "zero3": ("infonce_hard_negatives",),
    "two-nodes": ("infonce_hard_negatives", "gradcache", "learnable_temperature"),
}


def launch(engine: str, out: Path, names: tuple[str, ...], device: str) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run_engine = "ddp" if engine == "two-nodes" else engine
    tail = [str(WORKER), "--device", device, "--engine", run_engine, str(out), *names]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if engine != "two-nodes":
        subprocess.run(
            [*torchrun, "--standalone", "--nproc_per_node", "2", *tail],
            env=env,
            check=True,
            capture_output=True,
        )
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [
        subprocess.Popen(
            [*torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(r), "--master_addr",
             "127.0.0.1", "--master_port", str(port), *tail],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for r in (0, 1)
    ]  # fmt: skip
    for p in nodes:
        _, err = p.communicate(timeout=600)
        if p.returncode:
            raise RuntimeError(err.decode()[-3000:])


def compare(ref: dict, got: dict) -> dict[str, float]:
    scale = max(float(v.abs().max()) for v in ref["grads"].values())
    out = {"grad_max_abs": scale}
    for key in ("weights", "grads"):
        common = [k for k in ref[key] if k in got[key]]
        if common:
            out[f"{key}_max_abs_diff"] = max(float((ref[key][k] - got[key][k]).abs().max()) for k in common)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default=",".join(ENGINE_SCENARIOS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    a = p.parse_args()
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        singles: dict[str, dict] = {}
        for engine in a.engines.split(","):
            names = ENGINE_SCENARIOS[engine]
            for name in names:
                if name not in singles:
                    (tmp / "single" / name).mkdir(parents=True)
                    singles[name] = run(name, tmp / "single" / name, device=a.device)
            out = tmp / engine
            launch(engine, out, names, a.device)
            for name in names:
                got = torch.load(out / f"{name}.pt", weights_only=False)
                figures[f"{engine}/{name}"] = compare(singles[name], got)
    print(f"{'engine/scenario':45s} {'max |dgrad|':>12s} {'max |dweight|':>14s} {'max |grad|':>11s}")
    for k, v in figures.items():
        print(
            f"{k:45s} {v.get('grads_max_abs_diff', float('nan')):12.3e} "
            f"{v.get('weights_max_abs_diff', float('nan')):14.3e} {v['grad_max_abs']:11.3e}"
        )
    if a.output:
        a.output.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
