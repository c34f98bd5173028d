"""Momentum contrast: InfoNCE against a queue of keys from a slowly moving encoder (MoCo, Contriever, CCP)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, resolve_scale

__all__ = ["MomentumContrastLoss"]

_MOCO_CITATION = """@inproceedings{he2020momentum,
  title     = {Momentum Contrast for Unsupervised Visual Representation Learning},
  author    = {He, Kaiming and Fan, Haoqi and Wu, Yuxin and Xie, Saining and Girshick, Ross},
  booktitle = {CVPR},
  year      = {2020}
}
@article{izacard2022unsupervised,
  title   = {Unsupervised Dense Information Retrieval with Contrastive Learning},
  author  = {Izacard, Gautier and Caron, Mathilde and Hosseini, Lucas and Riedel, Sebastian and
             Bojanowski, Piotr and Joulin, Armand and Grave, Edouard},
  journal = {Transactions on Machine Learning Research},
  year    = {2022}
}"""

_CCP_CITATION = """@inproceedings{wu2022unsupervised,
  title     = {Unsupervised Context Aware Sentence Representation Pretraining for Multi-lingual Dense Retrieval},
  author    = {Wu, Ning and Liang, Yaobo and Ren, Houxing and Shou, Linjun and Duan, Nan and Gong, Ming and
               Jiang, Daxin},
  booktitle = {IJCAI},
  year      = {2022}
}"""


class MomentumContrastLoss(ContrastiveLoss):
    r"""InfoNCE of queries against their key and a queue of past keys (MoCo; Contriever's pre-training).

    The query encoder is trained; the key encoder is an exponential moving average of it (see
    [`hf_contrastive.core.momentum.MomentumEncoder`]) and gets no gradient. For query
    :math:`q_i`, its key :math:`k_i` and the queue :math:`\{u_j\}_{j=1}^{K}`:

    .. math::
        \ell_i = -\log \frac{e^{q_i \cdot k_i / \tau}}{e^{q_i \cdot k_i / \tau} + \sum_j e^{q_i \cdot u_j / \tau}}

    with L2-normalised vectors. After each step the keys of the whole (gathered) batch replace the
    oldest entries of the queue ([`enqueue`]). The queue starts as random unit vectors drawn with
    `seed` (as MoCo and Contriever), so the first steps already have `K` (easy) negatives.

    **CCP (Wu et al. 2022).** `num_queues > 1` keeps one queue per language: a query draws its
    negatives from the queue of its own language (`queue_ids`), so a cross-lingual model cannot
    separate languages instead of meanings. `query_batch_norm=True` adds a batch-norm layer on the
    query side only (the asymmetric batch normalisation that CCP uses against collapse); its
    parameters belong to this module (the trainer adds them to the optimiser).

    Args:
        dim (`int`): embedding size.
        queue_size (`int`, *optional*, defaults to `65536`): keys per queue `K` (65536 by default, MoCo's; Contriever uses 131072).
        temperature (`float | None`, *optional*): :math:`\tau` (0.05, Contriever's). Give this or `scale`.
        scale (`float | None`, *optional*): `1 / temperature`.
        num_queues (`int`, *optional*, defaults to `1`): number of queues (one per language for CCP; 1 by default).
        query_batch_norm (`bool`, *optional*, defaults to `False`): batch-norm the queries before normalisation (CCP; default False).
        seed (`int`, *optional*, defaults to `0`): seed of the random initial queue.

    Inputs: `query` `[B, D]` (with gradient), `key` `[B, D]` (detached), `queue_ids`
    `[B]` (long, in `[0, num_queues)`; default all 0).

    Returns:
        [`LossOutput`] with components `moco` and `acc` (fraction of queries whose key
        out-scores every queue entry).
    """

    citation = _MOCO_CITATION
    uses_momentum_encoder = True

    def __init__(
        self,
        dim: int,
        queue_size: int = 65536,
        temperature: float | None = None,
        scale: float | None = None,
        num_queues: int = 1,
        query_batch_norm: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("queue_size", queue_size), ("num_queues", num_queues)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.scale = resolve_scale(temperature, scale, default_temperature=0.05)
        self.dim, self.queue_size, self.num_queues = dim, queue_size, num_queues
        self.query_batch_norm = query_batch_norm
        self.seed = seed
        g = torch.Generator().manual_seed(int(seed))
        queue = F.normalize(torch.randn(num_queues, queue_size, dim, generator=g), dim=-1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros(num_queues, dtype=torch.long))
        self.bn = nn.BatchNorm1d(dim) if query_batch_norm else None
        if query_batch_norm or num_queues > 1:
            self.citation = _MOCO_CITATION + "\n" + _CCP_CITATION

    def config_dict(self) -> dict[str, Any]:
        return {
            "temperature": 1.0 / self.scale,
            "queue_size": self.queue_size,
            "num_queues": self.num_queues,
            "query_batch_norm": self.query_batch_norm,
        }

    def _queue_ids(self, queue_ids: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if queue_ids is None:
            if self.num_queues > 1:
                raise ValueError(
                    f"{type(self).__name__} has {self.num_queues} queues: pass queue_ids (one per row)."
                )
            return torch.zeros(batch, dtype=torch.long, device=device)
        queue_ids = torch.as_tensor(queue_ids, device=device).long().reshape(-1)
        if queue_ids.numel() != batch:
            raise ValueError(f"queue_ids has {queue_ids.numel()} entries for a batch of {batch}.")
        if batch and (int(queue_ids.min()) < 0 or int(queue_ids.max()) >= self.num_queues):
            raise ValueError(
                f"queue_ids must lie in [0, {self.num_queues}), got {sorted(set(queue_ids.tolist()))}."
            )
        return queue_ids

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, queue_ids: torch.Tensor | None = None
    ) -> LossOutput:
        owner = type(self).__name__
        check_2d("query", query, owner)
        check_2d("key", key, owner)
        if query.shape != key.shape or query.shape[1] != self.dim:
            raise ValueError(
                f"{owner}: query and key must both have shape [B, {self.dim}], got {tuple(query.shape)} and "
                f"{tuple(key.shape)}."
            )
        self._check_finite(query=query, key=key)
        ids = self._queue_ids(queue_ids, query.shape[0], query.device)
        q = query.float()
        if self.bn is not None:
            q = self.bn(q)
        q = F.normalize(q, dim=-1)
        k = F.normalize(key.detach().float(), dim=-1)
        pos = (q * k).sum(-1, keepdim=True)
        # (a copy: enqueue() writes into the buffer before backward needs it)
        queue = self.queue.detach().clone().to(q.device)
        neg = q.new_empty(q.shape[0], self.queue_size)
        for qid in ids.unique().tolist():
            rows = (ids == qid).nonzero(as_tuple=True)[0]
            neg[rows] = q[rows] @ queue[qid].T
        logits = torch.cat([pos, neg], dim=1) * self.scale
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=1) == 0).float().mean() if q.shape[0] else q.new_zeros(())
        return LossOutput(loss=loss, components={"moco": loss.detach(), "acc": acc.detach()})

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, queue_ids: torch.Tensor | None = None) -> None:
        """Write `keys` `[N, D]` (every process's keys of this step) over the oldest queue entries."""
        keys = F.normalize(keys.detach().float(), dim=-1).to(self.queue.device)
        ids = self._queue_ids(queue_ids, keys.shape[0], self.queue.device)
        for qid in ids.unique().tolist():
            rows = keys[ids == qid][-self.queue_size :]
            start = int(self.queue_ptr[qid])
            slots = (start + torch.arange(rows.shape[0], device=self.queue.device)) % self.queue_size
            self.queue[qid, slots] = rows.to(self.queue.dtype)
            self.queue_ptr[qid] = (start + rows.shape[0]) % self.queue_size
