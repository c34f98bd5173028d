"""On one process (no process group) the helpers are no-ops."""

from __future__ import annotations

import torch

from hf_contrastive.core import distributed
from hf_contrastive.core.losses import InfoNCELoss


def test_helpers_without_process_group():
    assert distributed.rank() == 0 and distributed.world_size() == 1 and not distributed.is_distributed()
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.gather_no_grad(x) is x
    assert distributed.all_gather_sizes(3) == [[3]]
    assert distributed.all_gather_sizes([3, 1, 2]) == [[3, 1, 2]]
    assert distributed.global_mean_factor(3) == 1.0


def test_losses_do_not_gather_on_one_process():
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    on = InfoNCELoss(gather_across_devices=True)(a, p).loss
    off = InfoNCELoss(gather_across_devices=False)(a, p).loss
    assert on.item() == off.item()
