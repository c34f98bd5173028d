"""Adversarial perturbations of input embeddings for fine-tuning: FreeLB (Zhu et al. 2020) and SMART's
smoothness-inducing regulariser (Jiang et al. 2020), plus the symmetric KL they use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import upcast

__all__ = ["initial_perturbation", "normalized_ascent", "project_perturbation", "symmetric_kl"]

FREELB_CITATION = """@inproceedings{zhu2020freelb,
  title     = {{FreeLB}: Enhanced Adversarial Training for Natural Language Understanding},
  author    = {Zhu, Chen and Cheng, Yu and Gan, Zhe and Sun, Siqi and Goldstein, Tom and Liu, Jingjing},
  booktitle = {International Conference on Learning Representations},
  year      = {2020}
}"""

SMART_CITATION = """@inproceedings{jiang2020smart,
  title     = {{SMART}: Robust and Efficient Fine-Tuning for Pre-trained Natural Language Models through Principled
               Regularized Optimization},
  author    = {Jiang, Haoming and He, Pengcheng and Chen, Weizhu and Liu, Xiaodong and Gao, Jianfeng and Zhao, Tuo},
  booktitle = {Proceedings of ACL 2020},
  year      = {2020}
}"""


def initial_perturbation(
    embeds: torch.Tensor, mask: torch.Tensor, magnitude: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""FreeLB's start: :math:`\delta_0 \sim U(-1, 1) \cdot \epsilon_0 / \sqrt{L_i H}` on each row's real tokens
    (:math:`L_i` of them, hidden size :math:`H`), zero on padding; all zeros when `magnitude` is 0.

    Args:
        embeds (`torch.Tensor` of shape `[B, L, H]`): the input embeddings.
        mask (`torch.Tensor` of shape `[B, L]`): 1 on real tokens.
        magnitude (`float`): :math:`\epsilon_0`.
        generator (`torch.Generator`, *optional*): random source.
    """
    mask = mask.to(embeds.dtype).unsqueeze(-1)
    if magnitude <= 0:
        return torch.zeros_like(embeds)
    noise = torch.rand(embeds.shape, generator=generator, dtype=embeds.dtype).to(embeds.device) * 2 - 1
    dims = mask.sum((1, 2)).clamp(min=1) * embeds.shape[-1]
    return noise * mask * (magnitude / dims.sqrt()).view(-1, 1, 1)


def normalized_ascent(delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    r"""One ascent step :math:`\delta + \alpha\, g / \lVert g \rVert_F`, the norm taken per row (FreeLB).

    Args:
        delta (`torch.Tensor` of shape `[B, L, H]`): the perturbation.
        grad (`torch.Tensor` of shape `[B, L, H]`): the loss's gradient with respect to it.
        step_size (`float`): :math:`\alpha`.
    """
    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return delta + step_size * grad / norm


def project_perturbation(delta: torch.Tensor, max_norm: float) -> torch.Tensor:
    r"""Project each row onto the Frobenius ball of radius `max_norm` (no projection when it is 0).

    Args:
        delta (`torch.Tensor` of shape `[B, L, H]`): the perturbation.
        max_norm (`float`): :math:`\epsilon`.
    """
    if max_norm <= 0:
        return delta
    norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1)
    return delta * torch.clamp(max_norm / norm.clamp(min=1e-12), max=1.0)


def symmetric_kl(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(p \| q) + \mathrm{KL}(q \| p)` averaged over rows, where each direction's target is
    detached (SMART's `stable_kl` pair): the gradient moves `logits` towards `other` and `other` towards `logits`.

    Args:
        logits (`torch.Tensor` of shape `[B, C]`): one set of logits.
        other (`torch.Tensor` of shape `[B, C]`): the other.
    """
    log_p = F.log_softmax(upcast(logits), dim=-1)
    log_q = F.log_softmax(upcast(other), dim=-1)
    forward = (log_q.detach().exp() * (log_q.detach() - log_p)).sum(-1)
    backward = (log_p.detach().exp() * (log_p.detach() - log_q)).sum(-1)
    return (forward + backward).mean()
