"""Worker of the two-process test of the improved CLIP loss: ``torchrun --nproc_per_node 2 THIS OUT.json``.

Every rank builds the same tiny towers (linear image and text "backbones", global projections, a learnable
scale) and the same [`ImprovedCLIPLoss`] (its view heads with BatchNorm, its add-ons), and the same global
batch of a global pair plus two augmented views per row. Each scenario compares

* one process on the whole batch, nothing gathered (computed on every rank), with
* DDP over two processes, each with half the batch: negatives, BatchNorm statistics, Sinkhorn sums and Barlow
  Twins' cross-correlation over both processes, gradients averaged by DDP;

after one SGD step it compares the parameters again (and, with BYOLIP, the EMA target after
`update_target()`). float64 throughout. Rank 0 writes the figures to the JSON file.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hf_contrastive.vision.improved import ImprovedCLIPConfig, ImprovedCLIPLoss
from tests.distributed_run import end_worker

torch.set_default_dtype(torch.float64)
IMG_IN, TXT_IN, IMG_POOL, TXT_POOL, EMBED, VIEWS, GLOBAL_BATCH = 6, 5, 8, 7, 4, 2, 8

SMALL = dict(
    projection_dim=4,
    projector_hidden_size=6,
    simclr_hidden_size=6,
    simclr_dim=4,
    barlip_hidden_size=6,
    barlip_dim=5,
    siamlip_hidden_size=6,
    siamlip_dim=4,
    swalip_hidden_size=6,
    swalip_dim=4,
    swalip_prototypes=5,
)

SCENARIOS = {
    # global + local terms with label smoothing, SimCLR and Barlow Twins (a whole-batch term)
    "cl2l_simclr_barlip": dict(label_smoothing=0.1, use_simclr=True, use_barlip=True),
    # SiamLIP (per-row term after cross-device BatchNorm), averaged CL2L
    "cl2l_siamlip_avg": dict(label_smoothing=0.1, use_siamlip=True, loss_avg_or_sum="avg"),
    # BYOLIP (EMA target) and SwALIP (Sinkhorn over both processes), no smoothing as SwALIP requires
    "cl2l_byolip_swalip": dict(label_smoothing=0.0, use_byolip=True, use_swalip=True),
}


class Step(nn.Module):
    """Towers + loss in one module, so DDP averages the gradients of the loss's heads too."""

    def __init__(self, settings: dict, gather: bool | None) -> None:
        super().__init__()
        torch.manual_seed(0)  # same initial weights in every copy and on every rank
        self.image_tower = nn.Sequential(nn.Linear(IMG_IN, IMG_POOL), nn.Tanh())
        self.text_tower = nn.Sequential(nn.Linear(TXT_IN, TXT_POOL), nn.Tanh())
        self.image_projection = nn.Linear(IMG_POOL, EMBED, bias=False)
        self.text_projection = nn.Linear(TXT_POOL, EMBED, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        config = ImprovedCLIPConfig(**SMALL, **settings, gather=gather)
        self.loss = ImprovedCLIPLoss(IMG_POOL, TXT_POOL, config)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image_pooled = self.image_tower(batch["image"])
        text_pooled = self.text_tower(batch["text"])
        image_views = [self.image_tower(v) for v in batch["image_views"].unbind(0)]
        text_views = [self.text_tower(v) for v in batch["text_views"].unbind(0)]
        out = self.loss(
            self.image_projection(image_pooled),
            self.text_projection(text_pooled),
            self.log_scale.exp(),
            image_views,
            text_views,
            image_global_pooled=image_pooled,
            text_global_pooled=text_pooled,
        )
        self.components = out.components
        return out.loss


def make_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    image = torch.randn(GLOBAL_BATCH, IMG_IN, generator=g)
    text = image[:, :TXT_IN] + 0.5 * torch.randn(GLOBAL_BATCH, TXT_IN, generator=g)
    return {
        "image": image,
        "text": text,
        "image_views": image + 0.3 * torch.randn(VIEWS, GLOBAL_BATCH, IMG_IN, generator=g),
        "text_views": text + 0.3 * torch.randn(VIEWS, GLOBAL_BATCH, TXT_IN, generator=g),
    }


def local_slice(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: (v[:, start:stop] if k.endswith("_views") else v[start:stop]) for k, v in batch.items()}


def mean_over_ranks(value: torch.Tensor) -> float:
    t = value.detach().clone().reshape(1)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def max_over_ranks(value: float) -> float:
    t = torch.tensor([value])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def run(settings: dict) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = make_batch()
    per_rank = GLOBAL_BATCH // world
    local = local_slice(batch, rank * per_rank, (rank + 1) * per_rank)

    ref = Step(settings, gather=False)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref_loss = ref(batch)
    ref_loss.backward()
    ref_grads = {k: p.grad.clone() for k, p in ref.named_parameters() if p.grad is not None}

    step = Step(settings, gather=None)
    ddp = DistributedDataParallel(step)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    loss = ddp(local)
    loss.backward()
    grads = {k: p.grad for k, p in step.named_parameters() if p.grad is not None}

    missing = sorted(k for k, p in ref.named_parameters() if p.requires_grad and k not in ref_grads)
    grad_diff = max(float((grads[k] - g).abs().max()) for k, g in ref_grads.items())
    grad_scale = max(float(g.abs().max()) for g in ref_grads.values())
    # BatchNorm running statistics of the views' image head (updated by the forward)
    bn_ref, bn_two = ref.loss.image_projector[1], step.loss.image_projector[1]
    running_diff = float((bn_ref.running_mean - bn_two.running_mean).abs().max())
    running_diff = max(running_diff, float((bn_ref.running_var - bn_two.running_var).abs().max()))
    component_diffs = {
        name: abs(mean_over_ranks(value) - float(ref.components[name]))
        for name, value in step.components.items()
        if name not in ("accuracy",)
    }

    # one optimiser step, then the EMA target (BYOLIP)
    ref_opt.step()
    opt.step()
    ref.loss.update_target()
    step.loss.update_target()
    ref_state, two_state = ref.state_dict(), step.state_dict()
    param_diff = max(
        float((ref_state[k] - two_state[k]).abs().max())
        for k in ref_state
        if ref_state[k].is_floating_point()
    )

    # control: the same two processes without gathering give a different loss
    control = Step(settings, gather=False)
    control_loss = mean_over_ranks(control(local))

    logged = mean_over_ranks(loss)
    return {
        "loss_single": float(ref_loss.detach()),
        "loss_two_process": logged,
        "loss_abs_diff": abs(logged - float(ref_loss.detach())),
        "grad_max_abs_diff": max_over_ranks(grad_diff),
        "grad_max_abs": grad_scale,
        "n_grads": len(ref_grads),
        "missing_grads": missing,
        "bn_running_stats_diff": max_over_ranks(running_diff),
        "component_abs_diffs": component_diffs,
        "param_after_step_diff": max_over_ranks(param_diff),
        "has_target": any(k.startswith("loss.siamlip.image_target") for k in ref_state),
        "control_no_gather_loss_abs_diff": abs(control_loss - float(ref_loss.detach())),
    }


def main(path: str) -> None:
    dist.init_process_group("gloo")
    results = {name: run(settings) for name, settings in SCENARIOS.items()}
    if dist.get_rank() == 0:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    end_worker()


if __name__ == "__main__":
    main(sys.argv[1])
