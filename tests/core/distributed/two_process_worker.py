"""Worker for the two-process equivalence test: ``torchrun --nproc_per_node 2 THIS OUT.json``.

Every rank builds the same tiny encoder and the same global batch. Each scenario compares

* one process, the whole batch, no gathering (computed locally on every rank), with
* DDP over two processes, each with its own slice of the batch, negatives gathered across
  ranks by the loss, gradients averaged by DDP.

Convention under test: each rank's loss is the mean over its local anchors (InfoNCE family)
or the loss of the whole gathered batch (CoSENT), backward through the gathered tensors sums
gradients over ranks, DDP averages; with unequal local batches the local loss is multiplied by
``global_mean_factor``. Rank 0 writes the figures to the JSON file.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hf_contrastive.core import distributed
from hf_contrastive.core.losses import CoSENTLoss, InfoNCELoss, MultiCSRLoss
from tests.distributed_run import end_worker

torch.set_default_dtype(torch.float64)
IN, OUT = 6, 8


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(IN, 16), nn.Tanh(), nn.Linear(16, OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Step(nn.Module):
    """Encoder + loss in one module, so DDP also averages a learnable temperature."""

    def __init__(self, encoder: nn.Module, loss: nn.Module, kind: str) -> None:
        super().__init__()
        self.encoder, self.loss, self.kind = encoder, loss, kind

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        enc = self.encoder
        if self.kind == "cosent":
            out = self.loss(enc(batch["a"]), enc(batch["p"]), batch["scores"])
            self.components = out.components
            return out.loss
        kw = {}
        if "ra" in batch:
            kw = {
                "reference_anchor": batch["ra"],
                "reference_positive": batch["rp"],
                "reference_negatives": batch["rn"],
            }
        out = self.loss(enc(batch["a"]), enc(batch["p"]), enc(batch["n"]), **kw)
        self.components = out.components
        return out.loss


def make_batch(G: int, P: int, N: int, masking: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    a = torch.randn(G, IN, generator=g)
    p = a[:, None] + 0.7 * torch.randn(G, P, IN, generator=g)
    n = torch.randn(G, N, IN, generator=g)
    batch = {"a": a, "p": p if P > 1 else p[:, 0], "n": n, "scores": torch.rand(G, generator=g) * 5}
    if masking:
        # near-duplicates across the two halves: the reference encoder flags them
        p[G - 1, 0] = a[0] + 1e-3
        n[1, 0] = a[G - 2] - 1e-3
        batch["p"] = p if P > 1 else p[:, 0]
        frozen = nn.Linear(IN, 5)
        # seeded explicitly: the global RNG state may differ between ranks
        nn.init.normal_(frozen.weight, generator=torch.Generator().manual_seed(7))
        nn.init.normal_(frozen.bias, generator=torch.Generator().manual_seed(8))
        with torch.no_grad():
            batch["ra"], batch["rp"], batch["rn"] = frozen(a), frozen(batch["p"]), frozen(n)
    return batch


SCENARIOS = {
    "pairs": dict(P=1, N=0, loss=lambda g: InfoNCELoss(gather_across_devices=g)),
    "hard_negatives": dict(
        P=1,
        N=2,
        loss=lambda g: InfoNCELoss(hard_negative_weight=0.5, symmetric=True, gather_across_devices=g),
    ),
    "multi_positive_learnable": dict(
        P=2, N=1, loss=lambda g: InfoNCELoss(learnable_scale=True, symmetric=True, gather_across_devices=g)
    ),
    "false_negative_masking": dict(
        P=1, N=1, masking=True, loss=lambda g: MultiCSRLoss(hard_negative_weight=0.3, gather_across_devices=g)
    ),
    "unequal_batches": dict(P=1, N=1, sizes=(3, 5), loss=lambda g: InfoNCELoss(gather_across_devices=g)),
    "empty_rank": dict(
        P=1, N=2, sizes=(0, 5), loss=lambda g: InfoNCELoss(symmetric=True, gather_across_devices=g)
    ),
    "cosent": dict(P=1, N=0, kind="cosent", loss=lambda g: CoSENTLoss(gather_across_devices=g)),
}


def run(name: str, spec: dict, encoder0: nn.Module) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = spec.get("sizes", (4, 4))
    G = sum(sizes)
    kind = spec.get("kind", "nce")
    batch = make_batch(G, spec["P"], spec["N"], spec.get("masking", False))

    # one process, the whole batch
    ref = Step(copy.deepcopy(encoder0), spec["loss"](False), kind)
    ref_loss = ref(batch)
    ref_loss.backward()
    ref_grads = {k: v.grad.clone() for k, v in ref.named_parameters()}

    # two processes, half the batch each
    start = sum(sizes[:rank])
    local = {k: v[start : start + sizes[rank]] for k, v in batch.items()}
    step = Step(copy.deepcopy(encoder0), spec["loss"](None), kind)
    ddp = DistributedDataParallel(step)
    loss = ddp(local)
    factor = 1.0 if kind == "cosent" else distributed.global_mean_factor(sizes[rank])
    (loss * factor).backward()

    # the global loss value as a trainer would log it
    logged = loss.detach().clone() * (sizes[rank] if kind != "cosent" else 1.0 / world)
    dist.all_reduce(logged)
    if kind != "cosent":
        logged /= G
    grad_diff = max(float((p.grad - ref_grads[k]).abs().max()) for k, p in step.named_parameters())
    grad_scale = max(float(g.abs().max()) for g in ref_grads.values())
    diffs = torch.tensor(
        [grad_diff, abs(float(loss.detach()) - float(ref_loss.detach())) if kind == "cosent" else 0.0]
    )
    dist.all_reduce(diffs, op=dist.ReduceOp.MAX)

    # control: without gathering the two-process loss differs (the test is sensitive)
    control = Step(copy.deepcopy(encoder0), spec["loss"](False), kind)
    if sizes[rank]:
        c = control(local).detach() * (sizes[rank] if kind != "cosent" else 1.0 / world)
    else:  # without gathering an empty rank has nothing to compute
        c = torch.zeros(())
    dist.all_reduce(c)
    if kind != "cosent":
        c /= G
    masked = step.components.get("masked", torch.tensor(0.0)).reshape(1) * sizes[rank]
    dist.all_reduce(masked)
    return {
        "masked_single": float(ref.components.get("masked", 0.0)) * G,
        "masked_two_process": float(masked),
        "loss_single": float(ref_loss.detach()),
        "loss_two_process": float(logged),
        "loss_abs_diff": abs(float(logged) - float(ref_loss.detach())),
        "per_rank_loss_abs_diff": float(diffs[1]),
        "grad_max_abs_diff": float(diffs[0]),
        "grad_max_abs": grad_scale,
        "control_no_gather_loss_abs_diff": abs(float(c) - float(ref_loss.detach())),
    }


def check_gather_helpers() -> dict:
    rank = dist.get_rank()
    out = {"rank_world": [distributed.rank(), distributed.world_size(), distributed.is_distributed()]}
    # unequal sizes, gradient of the local slice = sum over ranks of d(loss_r)/d(slice)
    n = 2 + rank
    x = torch.full((n, 3), float(rank + 1), requires_grad=True)
    y = distributed.gather_with_grad(x)
    weights = torch.arange(15.0).reshape(5, 3)
    (y * weights).sum().backward()
    start = 0 if rank == 0 else 2
    expected = 2 * weights[start : start + n]
    out["gather_shape"] = list(y.shape)
    out["gather_values_ok"] = bool(
        torch.equal(y.detach()[:2], torch.ones(2, 3)) and torch.equal(y.detach()[2:], 2 * torch.ones(3, 3))
    )
    out["gather_grad_ok"] = bool(torch.equal(x.grad, expected))
    out["no_grad_gather"] = distributed.gather_no_grad(torch.tensor([rank])).tolist()
    out["mean_factor"] = distributed.global_mean_factor(n)
    # mismatched trailing shapes: every rank gets a clear error (no hang)
    try:
        distributed.gather_with_grad(torch.zeros(2, 3 + rank))
        out["shape_error"] = None
    except ValueError as e:
        out["shape_error"] = str(e)
    # mismatched number of hard negatives across ranks
    try:
        InfoNCELoss()(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 1 + rank, 4))
        out["negatives_error"] = None
    except ValueError as e:
        out["negatives_error"] = str(e)
    return out


def main(path: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    encoder0 = Encoder()
    results = {"helpers": check_gather_helpers()}
    for name, spec in SCENARIOS.items():
        results[name] = run(name, spec, encoder0)
    if dist.get_rank() == 0:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    end_worker()


if __name__ == "__main__":
    main(sys.argv[1])
