"""Worker of the image-text two-process tests: ``torchrun --nproc_per_node 2 THIS OUT.json``.

Every rank builds the same tiny models and the same global batch. Rank 0 writes, per scenario, the gap between
two processes (each with half of the batch, DDP averaging gradients) and one process on the whole batch, and
the gap between our losses and open_clip's `ClipLoss` / `SigLipLoss` run with the same world size.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hf_contrastive.vision.data import ImageTextCollator
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss
from hf_contrastive.vision.modeling import dual_encoder_forward, logit_scale_and_bias
from tests.distributed_run import end_worker
from tests.vision.tiny_vision import tiny_dual, tiny_processor, tiny_siglip, write_images

torch.set_default_dtype(torch.float64)
N = 8


def open_clip_losses():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class Step(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):
        out = dual_encoder_forward(
            self.model, batch["pixel_values"], batch["input_ids"], batch.get("attention_mask")
        )
        return out.image_embeds, out.text_embeds


def model_step(build, loss, batch, rank, world, gather):
    """Loss and gradients: one process on the whole batch, and DDP over the ranks' slices."""
    single = build()
    two = copy.deepcopy(single)
    s = Step(single)
    img, txt = s(batch)
    scale, bias = logit_scale_and_bias(single)
    args = (img, txt, scale) if bias is None else (img, txt, scale, bias)
    ref = type(loss)(gather=False)(*args).loss
    ref.backward()
    ddp = DistributedDataParallel(Step(two))
    rows = slice(rank * N // world, (rank + 1) * N // world)
    local = {k: v[rows] for k, v in batch.items()}
    img, txt = ddp(local)
    scale, bias = logit_scale_and_bias(two)
    args = (img, txt, scale) if bias is None else (img, txt, scale, bias)
    out = type(loss)(gather=gather)(*args).loss
    out.backward()
    losses = torch.stack([out.detach()])
    gathered = [torch.zeros_like(losses) for _ in range(world)]
    dist.all_gather(gathered, losses)
    mean_loss = torch.cat(gathered).mean()
    grads_ref = {n: p.grad for n, p in single.named_parameters() if p.grad is not None}
    grads_two = {n: p.grad for n, p in two.named_parameters() if p.grad is not None}
    gap = max(float((grads_ref[n] - grads_two[n]).abs().max()) for n in grads_ref)
    return {
        "loss_abs_diff": abs(float(mean_loss) - float(ref.detach())),
        "grad_max_abs_diff": gap,
        "grad_max_abs": max(float(g.abs().max()) for g in grads_ref.values()),
        "n_grads": len(grads_ref),
        "missing_grads": sorted(set(grads_ref) ^ set(grads_two)),
    }


def anchor_parity(oc, rank, world):
    """Our losses vs open_clip's on the same features, each rank holding its slice."""
    g = torch.Generator().manual_seed(0)
    feats_i = nn.functional.normalize(torch.randn(N, 12, generator=g), dim=-1)
    feats_t = nn.functional.normalize(torch.randn(N, 12, generator=g), dim=-1)
    rows = slice(rank * N // world, (rank + 1) * N // world)
    out = {}
    for name in ("clip", "siglip", "clip_naive"):
        results = []
        for impl in ("ours", "anchor"):
            i = feats_i[rows].clone().requires_grad_(True)
            t = feats_t[rows].clone().requires_grad_(True)
            s = torch.tensor(13.0, requires_grad=True)
            b = torch.tensor(-4.0, requires_grad=True)
            if name == "clip":
                loss = (
                    CLIPLoss()(i, t, s).loss
                    if impl == "ours"
                    else oc.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)(
                        i, t, s
                    )
                )
            elif name == "siglip":
                loss = (
                    SigLIPLoss()(i, t, s, b).loss
                    if impl == "ours"
                    else oc.SigLipLoss(rank=rank, world_size=world)(i, t, s, b)
                )
            else:  # every rank computes the full N x N loss on gathered features: the trap
                loss = (
                    CLIPLoss()(i, t, s).loss
                    if impl == "ours"
                    else oc.ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world)(
                        i, t, s
                    )
                )
            loss.backward()
            grads = torch.cat([i.grad.flatten(), t.grad.flatten()])
            # DDP would average parameter gradients over ranks; the features' gradients are per rank already
            results.append((loss.detach(), grads, s.grad.detach().clone()))
        (l1, g1, s1), (l2, g2, s2) = results
        rec = {
            "loss_abs_diff": float((l1 - l2).abs()),
            "feature_grad_max_abs_diff": float((g1 - g2).abs().max()),
            "feature_grad_max_abs": float(g1.abs().max()),
            "scale_grad_abs_diff": float((s1 - s2).abs()),
        }
        if name == "clip_naive":
            rec["anchor_over_ours_grad_ratio"] = float(g2.norm() / g1.norm())
        out[name] = rec
    return out


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tmp = Path(tempfile.mkdtemp(prefix=f"vision2p-{rank}-"))
    processor = tiny_processor(tmp / "tok")
    vocab = len(processor.tokenizer)
    paths = write_images(tmp / "images", N, seed=1)
    words = "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa".split()
    rows = [{"image": p, "captions": [" ".join(words[k : k + 3 + k % 4])]} for k, p in enumerate(paths)]
    results = {}
    for name, build, loss, family in (
        ("clip_dual_encoder", lambda: tiny_dual(vocab, seed=3).double(), CLIPLoss(), "dual"),
        ("siglip", lambda: tiny_siglip(vocab, seed=4).double(), SigLIPLoss(), "siglip"),
    ):
        batch = ImageTextCollator(processor, family=family, max_length=12, caption_sampling="first")(rows)
        results[name] = model_step(build, loss, batch, rank, world, gather=True)
        results[name]["control_no_gather_loss_abs_diff"] = model_step(
            build, loss, batch, rank, world, gather=False
        )["loss_abs_diff"]
    oc = open_clip_losses()
    results["open_clip"] = anchor_parity(oc, rank, world) if oc is not None else None
    if rank == 0:
        Path(sys.argv[1]).write_text(json.dumps(results, indent=1))
    end_worker()


if __name__ == "__main__":
    main()
