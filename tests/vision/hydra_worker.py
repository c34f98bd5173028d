"""Worker for the two-process Hydra test: `torchrun --standalone --nproc_per_node 2 THIS OUT.json`.

Every rank builds the same module and the same global batch (float64). Each scenario compares one process on
the whole batch (no gathering) with DDP over two processes, each holding a slice of the batch, the loss
gathering rows across processes. Rank 0 writes the figures to the JSON file.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import ViTConfig

from hf_contrastive.vision.hydra import HydraLoss, HydraModel
from tests.distributed_run import end_worker

torch.set_default_dtype(torch.float64)
IN, HIDDEN, DIM, CLASSES = 6, 12, 8, 4


class Step(nn.Module):
    """Encoder, a BatchNorm-free gate (so per-process statistics do not enter), probe and learnable scale."""

    def __init__(self, loss: HydraLoss) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh())
        self.projector = nn.Linear(HIDDEN, DIM)
        self.labels = nn.Embedding(CLASSES, 5)
        self.gate = nn.Linear(5, DIM)
        self.probe = nn.Linear(HIDDEN, CLASSES)
        self.log_scale = nn.Parameter(torch.tensor(2.3))
        self.loss = loss

    def forward(self, x, y1, y2):
        h = self.encoder(x)
        g = torch.sigmoid(self.gate((self.labels(y1) + self.labels(y2)) / 2))
        scale = self.log_scale.exp() if self.loss.logit_variant == "gated_scaled" else None
        out = self.loss(self.projector(h), g, y1, y2, logit_scale=scale, probe_logits=self.probe(h.detach()))
        if scale is None:
            out.loss = out.loss + 0.0 * self.log_scale  # every parameter takes part (DDP)
        return out.loss


def batch(size: int):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(size, IN, generator=g)
    y1 = torch.randint(0, CLASSES, (size,), generator=g)
    y2 = torch.randint(0, CLASSES, (size,), generator=g)
    return x, y1, y2


def compare(make, inputs, sizes) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    total = sum(sizes)
    ref = make(False)
    ref_loss = ref(*inputs)
    ref_loss.backward()
    ref_grads = {k: p.grad.clone() for k, p in ref.named_parameters() if p.grad is not None}

    start = sum(sizes[:rank])
    local = [t[start : start + sizes[rank]] for t in inputs]
    module = make(None)
    ddp = DistributedDataParallel(module)
    loss = ddp(*local)
    loss.backward()
    logged = loss.detach().clone()
    dist.all_reduce(logged)
    logged /= world  # the per-rank losses average to the global one
    grad_diff = max(
        float((p.grad - ref_grads[k]).abs().max()) for k, p in module.named_parameters() if k in ref_grads
    )
    missing = sorted(k for k, p in module.named_parameters() if (k in ref_grads) != (p.grad is not None))
    diff = torch.tensor([grad_diff])
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)

    control = make(False)
    c = control(*local).detach()
    dist.all_reduce(c)
    c /= world
    return {
        "rows": total,
        "loss_single": float(ref_loss.detach()),
        "loss_two_process": float(logged),
        "loss_abs_diff": abs(float(logged) - float(ref_loss.detach())),
        "grad_max_abs_diff": float(diff),
        "grad_max_abs": max(float(g.abs().max()) for g in ref_grads.values()),
        "grads_missing": missing,
        "control_no_gather_loss_abs_diff": abs(float(c) - float(ref_loss.detach())),
    }


def loss_scenario(variant: str, sizes) -> dict:
    torch.manual_seed(0)
    base = Step(HydraLoss(CLASSES, logit_variant=variant, probe_weight=0.7))

    def make(gather):
        step = copy.deepcopy(base)
        step.loss.gather = gather
        return step

    return compare(make, batch(sum(sizes)), sizes)


class ModelStep(nn.Module):
    def __init__(self, model: HydraModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels, y1, y2):
        return self.model(pixel_values=pixels, labels=y1, target_labels=y2).loss


def model_scenario(sizes) -> dict:
    torch.manual_seed(0)
    vit = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
    )
    model = HydraModel.from_backbone(
        vit,
        num_labels=CLASSES,
        logit_variant="gated_scaled",
        label_embedding_dim=6,
        gate_hidden_size=8,
        projector_hidden_size=12,
        feature_dim=DIM,
    ).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics; eval mode uses them on every process alike
        for module in model.gate.mlp:
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(generator=torch.Generator().manual_seed(3))
                module.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    model.eval()
    g = torch.Generator().manual_seed(5)
    total = sum(sizes)
    inputs = (
        torch.randn(total, 3, 16, 16, generator=g),
        torch.randint(0, CLASSES, (total,), generator=g),
        torch.randint(0, CLASSES, (total,), generator=g),
    )

    def make(gather):
        step = ModelStep(copy.deepcopy(model))
        step.model.gather = gather
        return step

    return compare(make, inputs, sizes)


def main(path: str) -> None:
    dist.init_process_group("gloo")
    results = {
        "gated_cosine": loss_scenario("gated_cosine", (5, 5)),
        "gated_scaled": loss_scenario("gated_scaled", (5, 5)),
        "unequal_batches": loss_scenario("gated_cosine", (3, 7)),
        "model_eval": model_scenario((3, 3)),
    }
    if dist.get_rank() == 0:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    end_worker()


if __name__ == "__main__":
    main(sys.argv[1])
