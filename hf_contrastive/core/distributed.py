"""Cross-device helpers for in-batch contrastive losses.

In-batch losses get better with more negatives. When training runs on several processes
(DDP through `transformers.Trainer` / Accelerate, `torchrun`), every process can see the
embeddings of all the others: [`gather_with_grad`] concatenates them along the batch
dimension while keeping the autograd graph of the local slice, so the gradient of every
candidate flows back to the process that produced it.

All helpers fall back cleanly: without an initialised process group (or with one process)
they are no-ops and return their input unchanged.

Gradient convention (what DDP needs)
------------------------------------
`torch.distributed.nn.functional.all_gather` back-propagates by *summing* the gradients that
every rank computed for a slice and handing the sum to the slice's owner. If each rank's loss
is the mean over its **local** anchors (what the losses of `hf_contrastive.core.losses`
return), then the gradient each rank receives is `d(sum_r loss_r)/d(local params)`, and
DDP's gradient *average* over `W` ranks gives `d((1/W) sum_r loss_r)/d params`: exactly the
gradient of the single-process loss on the concatenated batch when every rank has the same
local batch size. So: do not multiply the loss by the world size, and do not divide it.

With unequal local batch sizes `B_r` (the last, smaller batch of an epoch without
`drop_last`), the global mean is `sum_r B_r loss_r / sum_r B_r`; scale the local loss by
[`global_mean_factor`] (`W * B_r / sum_r B_r`) before `backward` to keep the
equivalence exact. Every rank must call the same collectives in the same order: a loss that
gathers must run on all ranks at every step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_sizes",
    "average_gradients",
    "collective_device",
    "gather_no_grad",
    "gather_with_grad",
    "global_mean_factor",
    "is_distributed",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """True when `torch.distributed` is available, initialised, and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_gather_sizes(local_size: int | Sequence[int], device: torch.device | str = "cpu") -> list[list[int]]:
    """Gather a small vector of integers (sizes, shape fields) from every rank.

    Args:
        local_size (`int | Sequence[int]`): one integer or a sequence of integers, the same length on every rank.
        device (`torch.device | str`, *optional*, defaults to `"cpu"`): where the exchange tensor lives (`cuda` for NCCL, `cpu` for gloo).

    Returns:
        One list of integers per rank, in rank order. On one process: `[[local_size...]]`.
    """
    values = [int(local_size)] if isinstance(local_size, int) else [int(v) for v in local_size]
    if not is_distributed():
        return [values]
    local = torch.tensor(values, dtype=torch.long, device=device)
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [t.tolist() for t in out]


def collective_device(t: torch.Tensor) -> torch.device:
    """Device on which to exchange `t`: its own, except CPU when the backend is gloo."""
    # gloo only moves CPU tensors, NCCL only CUDA ones; follow the input except for gloo+cuda.
    if t.device.type != "cpu" and dist.get_backend() == dist.Backend.GLOO:
        return torch.device("cpu")
    return t.device


def _check_sizes(sizes: Sequence[int] | None, t: torch.Tensor) -> list[int]:
    if sizes is None:
        per_rank = all_gather_sizes(list(t.shape), device=collective_device(t))
        trailing = {tuple(s[1:]) for s in per_rank}
        if len(trailing) > 1:
            found = ", ".join(f"rank {r}: {tuple(s)}" for r, s in enumerate(per_rank))
            raise ValueError(
                "gather_with_grad: every rank must contribute tensors that differ only in the first "
                f"(batch) dimension; found {found}"
            )
        return [s[0] for s in per_rank]
    sizes = [int(s) for s in sizes]
    if len(sizes) != world_size():
        raise ValueError(f"gather_with_grad: got {len(sizes)} sizes for a world of {world_size()} processes")
    if sizes[rank()] != t.shape[0]:
        raise ValueError(
            f"gather_with_grad: sizes[{rank()}] = {sizes[rank()]} but the local tensor has "
            f"{t.shape[0]} rows (shape {tuple(t.shape)})"
        )
    return sizes


def _gather(t: torch.Tensor, sizes: Sequence[int] | None, with_grad: bool) -> torch.Tensor:
    if t.dim() == 0:
        raise ValueError("gather_with_grad expects a tensor with a batch dimension, got a 0-d tensor")
    if not is_distributed():
        return t
    sizes = _check_sizes(sizes, t)
    longest = max(sizes)
    local = t
    if t.shape[0] < longest:
        # all_gather needs equal shapes: pad with zeros, strip the padding after the exchange.
        # Padded rows receive no gradient because they are never used downstream.
        pad = t.new_zeros((longest - t.shape[0], *t.shape[1:]))
        local = torch.cat([t, pad], dim=0)
    comm_device = collective_device(t)
    local = local.to(comm_device)
    if with_grad:
        with warnings.catch_warnings():
            # The autograd-aware all_gather is flagged as deprecated in favour of a private
            # functional API; it is still the documented way to keep gradients across ranks.
            warnings.simplefilter("ignore", category=FutureWarning)
            from torch.distributed.nn.functional import all_gather as _autograd_all_gather

            parts = list(_autograd_all_gather(local))
    else:
        local = local.detach()
        parts = [torch.empty_like(local) for _ in sizes]
        dist.all_gather(parts, local)
    me = rank()
    if with_grad:
        # The autograd all_gather returns this rank's slice as a copy; splice the original
        # tensor back in so its gradient does not depend on the communication path.
        parts[me] = local
    parts = [p[:n] for p, n in zip(parts, sizes)]
    return torch.cat(parts, dim=0).to(t.device)


def gather_with_grad(t: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate `t` from every process along dim 0, keeping gradients.

    The result is `cat([t_rank0, t_rank1, ...])`. Backward sums, over ranks, the gradient
    computed for each slice and returns it to the rank that owns the slice (see the module
    docstring for what that means under DDP).

    Args:
        t (`torch.Tensor`): `[B_r, ...]` tensor; trailing dimensions must match on every rank, the batch
            dimension `B_r` may differ (rows are padded for the exchange and stripped after).
        sizes (`Sequence[int] | None`, *optional*): the batch sizes of every rank, when already known (skips one small collective;
            see [`all_gather_sizes`]).

    Returns:
        `[sum_r B_r, ...]`; `t` itself when not distributed.
    """
    return _gather(t, sizes, with_grad=True)


def gather_no_grad(t: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Like [`gather_with_grad`] but detached: for labels, scores, reference embeddings."""
    return _gather(t, sizes, with_grad=False)


def global_mean_factor(local_size: int, sizes: Sequence[int] | None = None) -> float:
    """Factor `W * B_r / sum_r B_r` that turns a local-mean loss into the DDP-exact global mean.

    Equal to 1.0 when all ranks have the same batch size (or when not distributed). Multiply
    the per-rank loss by it before `backward` when local batch sizes can differ.
    """
    if not is_distributed():
        return 1.0
    if sizes is None:
        sizes = [s[0] for s in all_gather_sizes(local_size)]
    total = sum(sizes)
    if total == 0:
        raise ValueError("global_mean_factor: every rank reported an empty batch")
    return len(sizes) * local_size / total


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average, in place, the gradients of parameters that DDP does not manage over every process.

    A loss module's own parameters (a learnable temperature, the projection heads of a recipe) live outside the
    DDP-wrapped model, so DDP leaves their gradients per process; without this the processes' copies drift
    apart. Call it after each backward on every process (a no-op when not distributed). Averaging is linear,
    so calling it after every micro-batch of a gradient-accumulation step gives the average of the sum.

    Args:
        parameters (`Iterable[torch.nn.Parameter]`): the parameters; those without a gradient are skipped.
    """
    if not is_distributed():
        return
    for p in parameters:
        if p.requires_grad and p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size()
