"""CoSENT (Su 2022; Huang et al. 2024): ranking loss on the cosine similarities of scored pairs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core import distributed
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, resolve_scale, upcast

__all__ = ["CoSENTLoss"]

_COSENT_CITATION = """@article{huang2024cosent,
  title   = {{CoSENT}: Consistent Sentence Embedding via Similarity Ranking},
  author  = {Huang, Xiang and Peng, Hao and Zou, Dongcheng and Liu, Zhiwei and Li, Jianxin and
             Liu, Kay and Wu, Jia and Su, Jianlin and Yu, Philip S.},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  year    = {2024},
  doi     = {10.1109/TASLP.2024.3402087}
}"""


class CoSENTLoss(ContrastiveLoss):
    r"""CoSENT: every pair whose gold score is higher must also get the higher cosine.

    For pairs :math:`(u_i, v_i)` with gold scores :math:`y_i` and cosine :math:`c_i`:

    .. math::
        \mathcal{L} = \log\Big(1 + \sum_{(i, j):\, y_i > y_j} e^{\lambda (c_j - c_i)}\Big)

    with scale :math:`\lambda = 20` (sentence-transformers' default). Only the order of the
    scores matters, so any scale of labels (0-5, 0-1, binary) works. The sum runs over all
    ordered pairs of the batch; when distributed (and `gather_across_devices` is not
    `False`), the cosines and scores of every process are gathered with gradient and each
    process computes the loss of the whole global batch (identical on all ranks; DDP's average
    then gives the single-process gradient).

    Inputs:

        ============  ==========  ===================================
        argument      shape       meaning
        ============  ==========  ===================================
        `anchor`    `[B, D]`  first sentence of each pair
        `positive`  `[B, D]`  second sentence of each pair
        `scores`    `[B]`     gold similarity (float, int or bool)
        ============  ==========  ===================================

    Args:
        scale (`float | None`, *optional*): :math:`\lambda` (default 20). `temperature` (`1 / scale`) may be given instead.
        gather_across_devices (`bool | None`, *optional*): `None` (default): gather when distributed with >1 process.

    Returns:
        [`LossOutput`] with component `cosent`.
    """

    citation = _COSENT_CITATION

    def __init__(
        self,
        scale: float | None = None,
        temperature: float | None = None,
        gather_across_devices: bool | None = None,
    ) -> None:
        super().__init__()
        self.scale = resolve_scale(temperature, scale, default_temperature=0.05)
        self.gather_across_devices = gather_across_devices

    def config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity": "cosine",
            "gather_across_devices": "auto"
            if self.gather_across_devices is None
            else self.gather_across_devices,
        }

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, scores: torch.Tensor) -> LossOutput:
        owner = type(self).__name__
        check_2d("anchor", anchor, owner)
        check_2d("positive", positive, owner)
        if anchor.shape != positive.shape:
            raise ValueError(
                f"{owner}: anchor and positive must have the same shape, got {tuple(anchor.shape)} and "
                f"{tuple(positive.shape)}"
            )
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(scores, device=anchor.device)
        if scores.numel() != anchor.shape[0]:
            raise ValueError(
                f"{owner}: expected one score per pair ({anchor.shape[0]}), got scores of shape {tuple(scores.shape)}"
            )
        scores = scores.reshape(-1).to(device=anchor.device)
        if not scores.is_floating_point():
            scores = scores.to(torch.float32)  # bool/int labels: only their order matters
        self._check_finite(anchor=anchor, positive=positive, scores=scores)

        cos = F.cosine_similarity(upcast(anchor), upcast(positive), dim=-1)  # [B]
        scores = scores.to(cos.dtype)
        if self._resolve_gather(self.gather_across_devices):
            packed = distributed.gather_with_grad(torch.stack([cos, scores], dim=1))
            cos, scores = packed[:, 0], packed[:, 1].detach()
        # diff[i, j] = scale * (c_j - c_i), kept where y_i > y_j.
        diff = self.scale * (cos[None, :] - cos[:, None])
        higher = scores[:, None] > scores[None, :]
        terms = torch.cat([diff.new_zeros(1), diff[higher]])
        loss = torch.logsumexp(terms, dim=0)
        return LossOutput(loss=loss, components={"cosent": loss.detach()})
