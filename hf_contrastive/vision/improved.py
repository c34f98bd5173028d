"""The improved CLIP recipe (CLIP🚀, Fini et al. 2023) as one loss with its own training-only heads.

Each image-caption pair comes as a global view (a mildly cropped image with a weakly augmented caption) and
`V` augmented views (strongly augmented images, each with a strongly augmented caption; see
[`hf_contrastive.vision.augment`]). The towers embed the global pair with their own projections as usual; the
augmented views' pooled features go through separate projection heads of this loss (3-layer MLPs, 4096
hidden, BatchNorm + ReLU) with their own learnable scale (initialised to 1/0.1). The objective (CL2L):

- `L_g = 1/2 [CE(s z_I z_T^T) + CE(s z_T z_I^T)]` on the global embeddings, without label smoothing;
- `L_loc` = the mean over all `V x V` (augmented image, augmented caption) pairs of the same symmetric
  cross-entropy on the heads' embeddings, with label smoothing 0.1 (these terms only);
- `L = (L_g + V L_loc) / (1 + V)`, multiplied by 2 with `loss_avg_or_sum="sum"` (the reference's per-side
  combination averaged over the two sides is the same number).

Self-supervised add-ons, each switched on in [`ImprovedCLIPConfig`] and added to `L` with its weight:
SimCLR between augmented images ([`SimCLRImageLoss`]), Barlow Twins between image and text features
([`BarlowTwinsLoss`], "BarLIP"), SimSiam-style prediction of the other modality ([`SiamLIPLoss`], "SiamLIP"),
the same against a momentum (EMA) target projector ("BYOLIP"), and swapped prediction of Sinkhorn-Knopp
cluster assignments over learnt prototypes ([`SwALIPLoss`], "SwALIP"). The image-text add-ons compare the
global pair (when its pooled features are given) and every (augmented image, augmented caption) pair.

Cross-device (same convention as `hf_contrastive.core.losses.infonce`, see `hf_contrastive.core.distributed`):
the contrastive terms, SimCLR, SiamLIP/BYOLIP and SwALIP are means over this process's rows against the
features of every process (gathered with gradient); the Sinkhorn normalisation sums over every process;
Barlow Twins' cross-correlation is a whole-batch statistic, computed identically on every process (CoSENT's
convention); the heads' BatchNorm layers use the statistics of the whole batch ([`CrossDeviceBatchNorm1d`],
what `SyncBatchNorm` does on GPUs, on any backend). With equal local batch sizes, DDP's gradient average of
these per-process losses is the gradient of one process on the whole batch.

Readings of the paper and its code (Fini et al. 2023; `facebookresearch/clip-rocket`) taken here: the heads
see the towers' pooled features only, so BYOLIP's momentum target is an EMA copy of the add-on projectors (the
reference keeps an EMA copy of the whole model); SwALIP uses learnt prototypes (3000, tau 0.1; the reference
also has a variant that uses the batch itself as prototypes) and needs `label_smoothing=0`, as in the
reference; the SimCLR head follows SLIP (3-layer MLP, 4096 hidden, 256-d, temperature 0.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hf_contrastive.core import distributed
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast
from hf_contrastive.core.momentum import MomentumEncoder
from hf_contrastive.vision.losses import CLIPLoss

__all__ = [
    "BarlowTwinsLoss",
    "CrossDeviceBatchNorm1d",
    "ImprovedCLIPConfig",
    "ImprovedCLIPLoss",
    "SiamLIPLoss",
    "SimCLRImageLoss",
    "SwALIPLoss",
    "barlow_twins_loss",
    "negative_cosine_loss",
    "nt_xent_loss",
    "projection_mlp",
    "sinkhorn_knopp",
    "swapped_prediction_loss",
]

IMPROVED_CLIP_CITATION = """@article{fini2023improved,
  title   = {Improved baselines for vision-language pre-training},
  author  = {Fini, Enrico and Astolfi, Pietro and Romero-Soriano, Adriana and Verbeek, Jakob and
             Drozdzal, Michal},
  journal = {Transactions on Machine Learning Research},
  year    = {2023}
}"""

SIMCLR_CITATION = """@inproceedings{chen2020simclr,
  title     = {A Simple Framework for Contrastive Learning of Visual Representations},
  author    = {Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},
  booktitle = {Proceedings of the 37th International Conference on Machine Learning},
  year      = {2020}
}"""

BARLOW_TWINS_CITATION = """@inproceedings{zbontar2021barlow,
  title     = {Barlow Twins: Self-Supervised Learning via Redundancy Reduction},
  author    = {Zbontar, Jure and Jing, Li and Misra, Ishan and LeCun, Yann and Deny, St{\\'e}phane},
  booktitle = {Proceedings of the 38th International Conference on Machine Learning},
  year      = {2021}
}"""

SIMSIAM_CITATION = """@inproceedings{chen2021simsiam,
  title     = {Exploring Simple Siamese Representation Learning},
  author    = {Chen, Xinlei and He, Kaiming},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2021}
}"""

BYOL_CITATION = """@inproceedings{grill2020byol,
  title     = {Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning},
  author    = {Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin and
               Richemond, Pierre H. and Buchatskaya, Elena and Doersch, Carl and Pires, Bernardo Avila and
               Guo, Zhaohan Daniel and Azar, Mohammad Gheshlaghi and Piot, Bilal and Kavukcuoglu, Koray and
               Munos, R{\\'e}mi and Valko, Michal},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2020}
}"""

SWAV_CITATION = """@inproceedings{caron2020swav,
  title     = {Unsupervised Learning of Visual Features by Contrasting Cluster Assignments},
  author    = {Caron, Mathilde and Misra, Ishan and Mairal, Julien and Goyal, Priya and Bojanowski, Piotr and
               Joulin, Armand},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2020}
}"""


# ----------------------------------------------------------------------------------------------------------
# cross-device helpers
# ----------------------------------------------------------------------------------------------------------


def _gather_on(setting: bool | None) -> bool:
    """`None`: gather when more than one process runs; `False`: never; `True`: whenever distributed."""
    if setting is None:
        return distributed.is_distributed()
    return bool(setting) and distributed.is_distributed()


def _sizes(t: torch.Tensor) -> list[int]:
    return [s[0] for s in distributed.all_gather_sizes(t.shape[0], device=distributed.collective_device(t))]


def _gather_rows(t: torch.Tensor, gather: bool) -> tuple[torch.Tensor, int]:
    """`(rows of every process, offset of this process's rows)`; `(t, 0)` when not gathering."""
    if not gather:
        return t, 0
    sizes = _sizes(t)
    return distributed.gather_with_grad(t, sizes), sum(sizes[: distributed.rank()])


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    device = distributed.collective_device(t)
    out = t.to(device)
    dist.all_reduce(out, op=op)
    return out.to(t.device)


def _logsumexp(x: torch.Tensor, dim: int, gather: bool) -> torch.Tensor:
    """`logsumexp` over `dim`, keeping it; with `gather`, over the concatenation along `dim` of every
    process."""
    if not gather:
        return torch.logsumexp(x, dim=dim, keepdim=True)
    shape = list(x.shape)
    shape[dim] = 1
    if x.shape[dim] > 0:
        top = x.amax(dim=dim, keepdim=True)
    else:
        top = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device)
    top = _all_reduce(top, dist.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = _all_reduce((x - top).exp().sum(dim=dim, keepdim=True))
    return top + total.log()


class CrossDeviceBatchNorm1d(nn.BatchNorm1d):
    """`BatchNorm1d` whose training statistics are those of the whole batch across processes.

    In training mode with more than one process the inputs of every process are gathered with gradient,
    normalised together and this process's rows returned, so the output (and the running statistics, equal
    on every process) are those of one process on the concatenated batch. Works with any backend (gloo on
    CPU too), unlike `torch.nn.SyncBatchNorm`. One process, or evaluation mode: plain `BatchNorm1d`.

    Args:
        num_features (`int`): feature size.
        eps (`float`, *optional*, defaults to `1e-5`): added to the variance.
        momentum (`float`, *optional*, defaults to `0.1`): running-statistics momentum.
        affine (`bool`, *optional*, defaults to `True`): learn a scale and a shift.
        gather (`bool | None`, *optional*): use the whole batch across processes (`None`: when distributed).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        gather: bool | None = None,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.gather = gather

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _gather_on(self.gather)):
            return super().forward(x)
        everything, start = _gather_rows(x, True)
        return super().forward(everything)[start : start + x.shape[0]]


def projection_mlp(
    in_dim: int,
    hidden_size: int,
    out_dim: int,
    num_layers: int = 3,
    bias: bool = True,
    last_batch_norm: bool = False,
    gather: bool | None = None,
) -> nn.Sequential:
    """`Linear -> BN -> ReLU` blocks then a last `Linear` (`num_layers` linear layers in all; 1: one
    `Linear`).

    Args:
        in_dim (`int`): input size.
        hidden_size (`int`): width of the hidden layers.
        out_dim (`int`): output size.
        num_layers (`int`, *optional*, defaults to `3`): number of linear layers (>= 1).
        bias (`bool`, *optional*, defaults to `True`): biases of the linear layers.
        last_batch_norm (`bool`, *optional*, defaults to `False`): end with a BatchNorm without affine
            parameters.
        gather (`bool | None`, *optional*): BatchNorm over the whole batch across processes (`None`: when
            distributed).
    """
    for name, value in (("in_dim", in_dim), ("hidden_size", hidden_size), ("out_dim", out_dim)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"projection_mlp: {name} must be an int > 0, got {value!r}.")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"projection_mlp: num_layers must be an int >= 1, got {num_layers!r}.")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers += [
            nn.Linear(width, hidden_size, bias=bias),
            CrossDeviceBatchNorm1d(hidden_size, gather=gather),
        ]
        layers.append(nn.ReLU())
        width = hidden_size
    layers.append(nn.Linear(width, out_dim, bias=bias))
    if last_batch_norm:
        layers.append(CrossDeviceBatchNorm1d(out_dim, affine=False, gather=gather))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------
# objectives as functions
# ----------------------------------------------------------------------------------------------------------


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: bool | None = None
) -> torch.Tensor:
    r"""SimCLR's NT-Xent between two views `[B, d]` of the same rows (Chen et al. 2020).

    Each of the `2N` embeddings (both views of the `N` rows of every process, L2-normalised) is an anchor
    whose positive is the other view of its row and whose negatives are the other `2N - 2`:
    `l_i = -log exp(cos(i, i+) / t) / sum_{k != i} exp(cos(i, k) / t)`. Returns the mean of `l_i` over this
    process's `2B` anchors (negatives from every process with `gather`).
    """
    a, b = F.normalize(upcast(z1), dim=-1), F.normalize(upcast(z2), dim=-1)
    gather = _gather_on(gather)
    a_all, offset = _gather_rows(a, gather)
    b_all, _ = _gather_rows(b, gather)
    targets = torch.arange(a.shape[0], device=a.device) + offset
    self_mask = F.one_hot(targets, a_all.shape[0]).bool()
    logits_a = torch.cat([a @ b_all.T, (a @ a_all.T).masked_fill(self_mask, -math.inf)], dim=1) / temperature
    logits_b = torch.cat([b @ a_all.T, (b @ b_all.T).masked_fill(self_mask, -math.inf)], dim=1) / temperature
    return (F.cross_entropy(logits_a, targets) + F.cross_entropy(logits_b, targets)) / 2


def barlow_twins_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    lambd: float = 5e-3,
    scale: float = 0.025,
    eps: float = 1e-5,
    gather: bool | None = None,
) -> torch.Tensor:
    r"""Barlow Twins' redundancy reduction between two `[B, d]` feature sets (Zbontar et al. 2021).

    Each feature is standardised over the batch (of every process, with `gather`; biased variance, `eps` as
    BatchNorm's), `C = z1n^T z2n / N`, and
    `L = scale * [sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2]`. The value is that of the whole batch,
    the same on every process.
    """
    a, b = upcast(z1), upcast(z2)
    gather = _gather_on(gather)
    a, _ = _gather_rows(a, gather)
    b, _ = _gather_rows(b, gather)
    n = a.shape[0]
    if n < 2:
        raise ValueError(
            f"barlow_twins_loss needs at least 2 rows in the (whole) batch to standardise, got {n}."
        )
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + eps)
    b = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + eps)
    c = a.T @ b / n
    diagonal = torch.diagonal(c)
    on_diagonal = (1.0 - diagonal).pow(2).sum()
    off_diagonal = c.pow(2).sum() - diagonal.pow(2).sum()
    return scale * (on_diagonal + lambd * off_diagonal)


def negative_cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`2 - 2 cos(p, sg(t))`, averaged over the rows (SimSiam / BYOL); no gradient reaches `target`."""
    p = F.normalize(upcast(prediction), dim=-1)
    t = F.normalize(upcast(target.detach()), dim=-1)
    return 2.0 - 2.0 * (p * t).sum(dim=-1).mean()


@torch.no_grad()
def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather: bool | None = None
) -> torch.Tensor:
    r"""Equipartitioned soft assignments of `B` samples to `K` prototypes (SwAV's Sinkhorn-Knopp).

    `Q = exp(scores / epsilon)^T` (`[K, N]` over the `N` samples of every process with `gather`) is scaled to
    total 1, then `iterations` times its rows (prototypes) are scaled to sum to `1/K` and its columns
    (samples) to `1/N`; the result, times `N`, gives each sample a distribution over prototypes (rows of the
    returned `[B, K]` sum to 1) while every prototype receives about `N/K` of the mass. Computed in float64
    (float32 on MPS, which has no float64) and in the log domain, so a small `epsilon` cannot overflow.

    Args:
        scores (`torch.Tensor`): `[B, K]` similarities of this process's samples to the prototypes.
        epsilon (`float`, *optional*, defaults to `0.05`): entropic regularisation (smaller: sharper).
        iterations (`int`, *optional*, defaults to `3`): normalisation rounds.
        gather (`bool | None`, *optional*): normalise over the samples of every process (`None`: when
            distributed).

    Returns:
        `torch.Tensor`: `[B, K]` assignments in the dtype of `scores`, without gradient.
    """
    check_2d("scores", scores, "sinkhorn_knopp")
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"sinkhorn_knopp: epsilon must be > 0, got {epsilon!r}.")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"sinkhorn_knopp: iterations must be an int >= 1, got {iterations!r}.")
    gather = _gather_on(gather)
    num_prototypes = scores.shape[1]
    num_samples = sum(_sizes(scores)) if gather else scores.shape[0]
    # float64 where the device has it (MPS does not; the log domain keeps float32 finite there too)
    work_dtype = torch.float32 if scores.device.type == "mps" else torch.float64
    log_q = scores.detach().to(work_dtype).T / float(epsilon)  # [K, B]
    # total mass 1 (over every process)
    log_q = log_q - _logsumexp(_logsumexp(log_q, dim=0, gather=False), dim=1, gather=gather)
    for _ in range(iterations):
        log_q = log_q - _logsumexp(log_q, dim=1, gather=gather) - math.log(num_prototypes)
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(num_samples)
    return (log_q + math.log(num_samples)).exp().T.to(scores.dtype)


def swapped_prediction_loss(
    image_scores: torch.Tensor,
    text_scores: torch.Tensor,
    image_targets: torch.Tensor,
    text_targets: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwALIP's swapped prediction: `1/2 [CE(image_scores / t, text_targets) + CE(text_scores / t,
    image_targets)]`, each a soft-target cross-entropy averaged over the rows."""
    image_term = -(text_targets * F.log_softmax(upcast(image_scores) / temperature, dim=-1)).sum(-1).mean()
    text_term = -(image_targets * F.log_softmax(upcast(text_scores) / temperature, dim=-1)).sum(-1).mean()
    return (image_term + text_term) / 2


# ----------------------------------------------------------------------------------------------------------
# add-on modules
# ----------------------------------------------------------------------------------------------------------


def _feature_list(owner: str, name: str, features: Any, dim: int) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        if features.dim() != 3:
            raise ValueError(
                f"{owner}: {name} must be a sequence of [B, {dim}] tensors or one [V, B, {dim}] tensor, "
                f"got shape {tuple(features.shape)}."
            )
        features = list(features.unbind(0))
    if not isinstance(features, (list, tuple)):
        raise TypeError(f"{owner}: {name} must be a sequence of tensors, got {type(features).__name__}.")
    out = []
    for k, t in enumerate(features):
        check_2d(f"{name}[{k}]", t, owner)
        if t.shape[1] != dim:
            raise ValueError(
                f"{owner}: {name}[{k}] has {t.shape[1]} features, expected {dim} (shape {tuple(t.shape)})."
            )
        out.append(t)
    batches = {t.shape[0] for t in out}
    if len(batches) > 1:
        raise ValueError(f"{owner}: the tensors of {name} have different batch sizes {sorted(batches)}.")
    return out


def _pair_list(
    owner: str, pairs: Sequence[tuple[int, int]] | None, n_image: int, n_text: int
) -> list[tuple[int, int]]:
    if pairs is None:
        return [(i, j) for i in range(n_image) for j in range(n_text)]
    out = []
    for pair in pairs:
        i, j = pair
        if not (0 <= i < n_image and 0 <= j < n_text):
            raise ValueError(
                f"{owner}: pair {pair!r} is out of range for {n_image} image and {n_text} text feature sets."
            )
        out.append((int(i), int(j)))
    if not out:
        raise ValueError(f"{owner}: no (image, text) pair to compare.")
    return out


class _PairedAddOn(ContrastiveLoss):
    """Shared input handling of the image-text add-ons: lists of features and the pairs to compare."""

    image_dim: int
    text_dim: int

    def _inputs(
        self, image_features: Any, text_features: Any, pairs: Sequence[tuple[int, int]] | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        owner = type(self).__name__
        # one [B, dim] tensor is one feature set
        if isinstance(image_features, torch.Tensor) and image_features.dim() == 2:
            image_features = [image_features]
        if isinstance(text_features, torch.Tensor) and text_features.dim() == 2:
            text_features = [text_features]
        images = _feature_list(owner, "image_features", image_features, self.image_dim)
        texts = _feature_list(owner, "text_features", text_features, self.text_dim)
        if not images or not texts:
            raise ValueError(f"{owner}: needs at least one image and one text feature set.")
        if images[0].shape[0] != texts[0].shape[0]:
            raise ValueError(
                f"{owner}: image features have batch size {images[0].shape[0]} but text features "
                f"{texts[0].shape[0]} (one caption per image)."
            )
        self._check_finite(**{f"image_features_{k}": t for k, t in enumerate(images)})
        self._check_finite(**{f"text_features_{k}": t for k, t in enumerate(texts)})
        return images, texts, _pair_list(owner, pairs, len(images), len(texts))


class SimCLRImageLoss(ContrastiveLoss):
    """SimCLR between augmented images of the same rows: NT-Xent on a projection head (SLIP's image add-on).

    With `V >= 2` views, the mean of [`nt_xent_loss`] over every pair of views.

    Args:
        image_dim (`int`): size of the pooled image features.
        hidden_size (`int`, *optional*, defaults to `4096`): width of the head's hidden layers.
        out_dim (`int`, *optional*, defaults to `256`): embedding size.
        num_layers (`int`, *optional*, defaults to `3`): linear layers of the head.
        temperature (`float`, *optional*, defaults to `0.1`): softmax temperature.
        gather (`bool | None`, *optional*): negatives from every process (`None`: when distributed).
    """

    citation = SIMCLR_CITATION

    def __init__(
        self,
        image_dim: int,
        hidden_size: int = 4096,
        out_dim: int = 256,
        num_layers: int = 3,
        temperature: float = 0.1,
        gather: bool | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SimCLRImageLoss: temperature must be > 0, got {temperature!r}.")
        self.image_dim, self.temperature, self.gather = image_dim, float(temperature), gather
        self.projector = projection_mlp(image_dim, hidden_size, out_dim, num_layers, gather=gather)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gather": self.gather}

    def forward(self, image_views: Sequence[torch.Tensor] | torch.Tensor) -> LossOutput:
        """Loss of `V >= 2` pooled image views `[B, image_dim]` of the same rows."""
        views = _feature_list(type(self).__name__, "image_views", image_views, self.image_dim)
        if len(views) < 2:
            raise ValueError(f"SimCLRImageLoss needs at least 2 augmented image views, got {len(views)}.")
        z = [self.projector(v) for v in views]
        terms = [
            nt_xent_loss(z[i], z[j], self.temperature, gather=self.gather)
            for i in range(len(z))
            for j in range(i + 1, len(z))
        ]
        loss = torch.stack(terms).mean()
        return LossOutput(loss, {"simclr": loss.detach()})


class BarlowTwinsLoss(_PairedAddOn):
    """BarLIP: Barlow Twins between image and text features, each through its own projection head.

    For every compared (image, text) pair, [`barlow_twins_loss`] of the two heads' outputs; the loss is the
    mean over pairs.

    Args:
        image_dim (`int`): size of the pooled image features.
        text_dim (`int`): size of the pooled text features.
        hidden_size (`int`, *optional*, defaults to `3000`): width of the heads' hidden layers.
        out_dim (`int`, *optional*, defaults to `8192`): size of the compared features.
        num_layers (`int`, *optional*, defaults to `3`): linear layers of each head.
        lambd (`float`, *optional*, defaults to `5e-3`): weight of the off-diagonal terms.
        scale (`float`, *optional*, defaults to `0.025`): factor of the whole loss.
        gather (`bool | None`, *optional*): statistics of the whole batch across processes (`None`: when
            distributed).
    """

    citation = BARLOW_TWINS_CITATION

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_size: int = 3000,
        out_dim: int = 8192,
        num_layers: int = 3,
        lambd: float = 5e-3,
        scale: float = 0.025,
        gather: bool | None = None,
    ) -> None:
        super().__init__()
        if lambd < 0 or scale <= 0:
            raise ValueError(
                f"BarlowTwinsLoss: need lambd >= 0 and scale > 0, got lambd={lambd}, scale={scale}."
            )
        self.image_dim, self.text_dim = image_dim, text_dim
        self.lambd, self.scale, self.gather = float(lambd), float(scale), gather
        self.image_projector = projection_mlp(image_dim, hidden_size, out_dim, num_layers, gather=gather)
        self.text_projector = projection_mlp(text_dim, hidden_size, out_dim, num_layers, gather=gather)

    def config_dict(self) -> dict[str, Any]:
        return {"lambd": self.lambd, "scale": self.scale, "gather": self.gather}

    def forward(
        self,
        image_features: Sequence[torch.Tensor],
        text_features: Sequence[torch.Tensor],
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> LossOutput:
        """Loss over `pairs` (indices into the two lists; default: every combination)."""
        images, texts, pairs = self._inputs(image_features, text_features, pairs)
        zi = [self.image_projector(x) for x in images]
        zt = [self.text_projector(y) for y in texts]
        terms = [
            barlow_twins_loss(zi[i], zt[j], self.lambd, self.scale, gather=self.gather) for i, j in pairs
        ]
        loss = torch.stack(terms).mean()
        return LossOutput(loss, {"barlip": loss.detach()})


class SiamLIPLoss(_PairedAddOn):
    """SiamLIP / BYOLIP: each modality predicts the other's projection, `2 - 2 cos(p, sg(v))`, both ways.

    Per modality a projector (`Linear -> BN -> ReLU -> Linear -> BN` without affine, as the reference) and a
    predictor (`Linear -> BN -> ReLU -> Linear`). For a compared pair, `2 - 2 cos(q_I(v_I), sg(v_T))` and
    `2 - 2 cos(q_T(v_T), sg(v_I))`; the loss is the mean over all these terms. With `momentum` (BYOLIP), the
    targets `v` come from EMA copies of the projectors, which [`update_target`] moves after each optimiser
    step: `target <- m target + (1 - m) online`.

    Args:
        image_dim (`int`): size of the pooled image features.
        text_dim (`int`): size of the pooled text features.
        hidden_size (`int`, *optional*, defaults to `2048`): width of the hidden layers.
        out_dim (`int`, *optional*, defaults to `128`): size of the projections.
        momentum (`float`, *optional*): EMA momentum of the target projectors (BYOLIP: 0.99); `None` (SiamLIP)
            uses the online projections, detached.
        gather (`bool | None`, *optional*): BatchNorm over the whole batch across processes (`None`: when
            distributed).
    """

    citation = SIMSIAM_CITATION

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_size: int = 2048,
        out_dim: int = 128,
        momentum: float | None = None,
        gather: bool | None = None,
    ) -> None:
        super().__init__()
        self.image_dim, self.text_dim, self.gather = image_dim, text_dim, gather
        self.momentum = None if momentum is None else float(momentum)
        self.image_projector = projection_mlp(image_dim, hidden_size, out_dim, 2, False, True, gather)
        self.text_projector = projection_mlp(text_dim, hidden_size, out_dim, 2, False, True, gather)
        self.image_predictor = projection_mlp(out_dim, hidden_size, out_dim, 2, gather=gather)
        self.text_predictor = projection_mlp(out_dim, hidden_size, out_dim, 2, gather=gather)
        if momentum is not None:
            self.citation = BYOL_CITATION + "\n" + SIMSIAM_CITATION
            self.image_target = MomentumEncoder(self.image_projector, momentum)
            self.text_target = MomentumEncoder(self.text_projector, momentum)

    def config_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "gather": self.gather}

    @torch.no_grad()
    def update_target(self) -> None:
        """Move the target projectors towards the online ones (BYOLIP; nothing to do for SiamLIP)."""
        if self.momentum is not None:
            self.image_target.update(self.image_projector)
            self.text_target.update(self.text_projector)

    def forward(
        self,
        image_features: Sequence[torch.Tensor],
        text_features: Sequence[torch.Tensor],
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> LossOutput:
        """Loss over `pairs` (indices into the two lists; default: every combination)."""
        images, texts, pairs = self._inputs(image_features, text_features, pairs)
        vi = [self.image_projector(x) for x in images]
        vt = [self.text_projector(y) for y in texts]
        pi = [self.image_predictor(v) for v in vi]
        pt = [self.text_predictor(v) for v in vt]
        if self.momentum is not None:
            ti = [self.image_target(x) for x in images]
            tt = [self.text_target(y) for y in texts]
        else:
            ti, tt = vi, vt
        terms = []
        for i, j in pairs:
            terms.append(negative_cosine_loss(pi[i], tt[j]))
            terms.append(negative_cosine_loss(pt[j], ti[i]))
        loss = torch.stack(terms).mean()
        return LossOutput(loss, {"byolip" if self.momentum is not None else "siamlip": loss.detach()})


class SwALIPLoss(_PairedAddOn):
    """SwALIP: swapped prediction of Sinkhorn-Knopp cluster assignments between image and text (SwAV's
    objective).

    Each modality's head (`Linear -> BN -> ReLU -> Linear`) is L2-normalised and scored against L2-normalised
    prototypes (`[K, out_dim]`, shared by the two modalities unless `shared_prototypes=False`); the targets of
    each side are [`sinkhorn_knopp`] of its scores (no gradient); for a compared pair the loss is
    [`swapped_prediction_loss`]: the image predicts the text's assignment and the text the image's. Mean over
    pairs.

    Args:
        image_dim (`int`): size of the pooled image features.
        text_dim (`int`): size of the pooled text features.
        hidden_size (`int`, *optional*, defaults to `2048`): width of the heads' hidden layer.
        out_dim (`int`, *optional*, defaults to `128`): size of the heads' outputs and prototypes.
        num_prototypes (`int`, *optional*, defaults to `3000`): number of prototypes `K`.
        temperature (`float`, *optional*, defaults to `0.1`): softmax temperature of the predictions.
        epsilon (`float`, *optional*, defaults to `0.05`): Sinkhorn-Knopp regularisation.
        iterations (`int`, *optional*, defaults to `3`): Sinkhorn-Knopp rounds.
        shared_prototypes (`bool`, *optional*, defaults to `True`): one set of prototypes for both modalities.
        gather (`bool | None`, *optional*): Sinkhorn and BatchNorm over the whole batch across processes
            (`None`: when distributed).
    """

    citation = SWAV_CITATION

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_size: int = 2048,
        out_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        iterations: int = 3,
        shared_prototypes: bool = True,
        gather: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_prototypes, int) or num_prototypes < 2:
            raise ValueError(f"SwALIPLoss: num_prototypes must be an int >= 2, got {num_prototypes!r}.")
        if not (temperature > 0 and epsilon > 0) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(
                "SwALIPLoss: need temperature > 0, epsilon > 0 and iterations >= 1, got "
                f"temperature={temperature}, epsilon={epsilon}, iterations={iterations}."
            )
        self.image_dim, self.text_dim, self.gather = image_dim, text_dim, gather
        self.temperature, self.epsilon, self.iterations = float(temperature), float(epsilon), iterations
        self.shared_prototypes = bool(shared_prototypes)
        self.image_projector = projection_mlp(image_dim, hidden_size, out_dim, 2, gather=gather)
        self.text_projector = projection_mlp(text_dim, hidden_size, out_dim, 2, gather=gather)
        self.image_prototypes = nn.Parameter(F.normalize(torch.randn(num_prototypes, out_dim), dim=-1))
        if not shared_prototypes:
            self.text_prototypes = nn.Parameter(F.normalize(torch.randn(num_prototypes, out_dim), dim=-1))

    def config_dict(self) -> dict[str, Any]:
        return {
            "num_prototypes": self.image_prototypes.shape[0],
            "temperature": self.temperature,
            "epsilon": self.epsilon,
            "iterations": self.iterations,
            "shared_prototypes": self.shared_prototypes,
            "gather": self.gather,
        }

    def scores(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """Cosine similarities `[B, K]` of one modality's pooled features to its prototypes."""
        if modality == "image":
            head, prototypes = self.image_projector, self.image_prototypes
        else:
            head = self.text_projector
            prototypes = self.image_prototypes if self.shared_prototypes else self.text_prototypes
        return F.normalize(head(features), dim=-1) @ F.normalize(prototypes, dim=-1).T

    def forward(
        self,
        image_features: Sequence[torch.Tensor],
        text_features: Sequence[torch.Tensor],
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> LossOutput:
        """Loss over `pairs` (indices into the two lists; default: every combination)."""
        images, texts, pairs = self._inputs(image_features, text_features, pairs)
        si = [self.scores(x, "image") for x in images]
        st = [self.scores(y, "text") for y in texts]
        qi = [sinkhorn_knopp(s, self.epsilon, self.iterations, gather=self.gather) for s in si]
        qt = [sinkhorn_knopp(s, self.epsilon, self.iterations, gather=self.gather) for s in st]
        terms = [swapped_prediction_loss(si[i], st[j], qi[i], qt[j], self.temperature) for i, j in pairs]
        loss = torch.stack(terms).mean()
        return LossOutput(loss, {"swalip": loss.detach()})


# ----------------------------------------------------------------------------------------------------------
# the improved CLIP loss
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ImprovedCLIPConfig:
    r"""Settings of [`ImprovedCLIPLoss`]; the defaults are the paper's (Fini et al. 2023, `--separate-proj`).

    Args:
        separate_projector (`bool`, *optional*, defaults to `True`): the augmented views get their own heads
            and scale. `False`: the views' inputs are taken as already projected by the towers' own
            projections (`[B, D]`, like the global embeddings) and the global scale is used.
        projection_dim (`int`, *optional*, defaults to `256`): output size of the views' heads.
        projector_hidden_size (`int`, *optional*, defaults to `4096`): width of the heads' hidden layers.
        projector_layers (`int`, *optional*, defaults to `3`): linear layers of each head (BN + ReLU between).
        aug_logit_scale_init (`float`, *optional*, defaults to `10.0`): initial scale of the views' logits
            (1/0.1).
        learn_aug_logit_scale (`bool`, *optional*, defaults to `True`): learn it (stored as its log).
        max_logit_scale (`float`, *optional*, defaults to `100.0`): clamp of the views' scale (as CLIP's).
        label_smoothing (`float`, *optional*, defaults to `0.1`): label smoothing of the augmented terms only.
        loss_avg_or_sum (`str`, *optional*, defaults to `"sum"`): `"sum"` multiplies the CL2L loss by 2 (the
            paper's runs), `"avg"` does not.
        gather (`bool | None`, *optional*): gather negatives and batch statistics from every process (`None`:
            when distributed).
        use_simclr (`bool`, *optional*, defaults to `False`): add SimCLR between augmented images.
        simclr_weight (`float`, *optional*, defaults to `1.0`): its weight.
        simclr_temperature (`float`, *optional*, defaults to `0.1`): its temperature.
        simclr_hidden_size (`int`, *optional*, defaults to `4096`): its head's hidden width.
        simclr_dim (`int`, *optional*, defaults to `256`): its head's output size.
        use_barlip (`bool`, *optional*, defaults to `False`): add Barlow Twins between image and text
            (BarLIP).
        barlip_weight (`float`, *optional*, defaults to `1.0`): its weight (the scale below is inside the
            loss).
        barlip_lambda (`float`, *optional*, defaults to `5e-3`): off-diagonal weight.
        barlip_scale (`float`, *optional*, defaults to `0.025`): factor of the Barlow Twins loss.
        barlip_hidden_size (`int`, *optional*, defaults to `3000`): its heads' hidden width.
        barlip_dim (`int`, *optional*, defaults to `8192`): its heads' output size.
        use_siamlip (`bool`, *optional*, defaults to `False`): add SiamLIP.
        siamlip_weight (`float`, *optional*, defaults to `1.0`): its weight.
        siamlip_hidden_size (`int`, *optional*, defaults to `2048`): hidden width of the projectors and
            predictors of SiamLIP and BYOLIP.
        siamlip_dim (`int`, *optional*, defaults to `128`): their output size.
        use_byolip (`bool`, *optional*, defaults to `False`): add BYOLIP (SiamLIP with a momentum target;
            excludes `use_siamlip`).
        byolip_weight (`float`, *optional*, defaults to `1.0`): its weight.
        byolip_momentum (`float`, *optional*, defaults to `0.99`): EMA momentum of the target, in `[0, 1)`.
        use_swalip (`bool`, *optional*, defaults to `False`): add SwALIP (needs `label_smoothing=0`).
        swalip_weight (`float`, *optional*, defaults to `0.2`): its weight.
        swalip_prototypes (`int`, *optional*, defaults to `3000`): number of prototypes.
        swalip_temperature (`float`, *optional*, defaults to `0.1`): temperature of the predictions.
        swalip_epsilon (`float`, *optional*, defaults to `0.05`): Sinkhorn-Knopp regularisation.
        swalip_iterations (`int`, *optional*, defaults to `3`): Sinkhorn-Knopp rounds.
        swalip_hidden_size (`int`, *optional*, defaults to `2048`): its heads' hidden width.
        swalip_dim (`int`, *optional*, defaults to `128`): its heads' output size.
        swalip_shared_prototypes (`bool`, *optional*, defaults to `True`): one set of prototypes for both
            modalities.
    """

    separate_projector: bool = True
    projection_dim: int = 256
    projector_hidden_size: int = 4096
    projector_layers: int = 3
    aug_logit_scale_init: float = 10.0
    learn_aug_logit_scale: bool = True
    max_logit_scale: float = 100.0
    label_smoothing: float = 0.1
    loss_avg_or_sum: str = "sum"
    gather: bool | None = None
    use_simclr: bool = False
    simclr_weight: float = 1.0
    simclr_temperature: float = 0.1
    simclr_hidden_size: int = 4096
    simclr_dim: int = 256
    use_barlip: bool = False
    barlip_weight: float = 1.0
    barlip_lambda: float = 5e-3
    barlip_scale: float = 0.025
    barlip_hidden_size: int = 3000
    barlip_dim: int = 8192
    use_siamlip: bool = False
    siamlip_weight: float = 1.0
    siamlip_hidden_size: int = 2048
    siamlip_dim: int = 128
    use_byolip: bool = False
    byolip_weight: float = 1.0
    byolip_momentum: float = 0.99
    use_swalip: bool = False
    swalip_weight: float = 0.2
    swalip_prototypes: int = 3000
    swalip_temperature: float = 0.1
    swalip_epsilon: float = 0.05
    swalip_iterations: int = 3
    swalip_hidden_size: int = 2048
    swalip_dim: int = 128
    swalip_shared_prototypes: bool = True

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float = math.inf, closed_low: bool = True) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value >= low if closed_low else value > low) and value <= high
            if not ok:
                bound = f"{'>=' if closed_low else '>'} {low:g}" + (
                    f" and <= {high:g}" if high < math.inf else ""
                )
                raise ValueError(
                    f"ImprovedCLIPConfig: {name} must be a finite number {bound}, got {value!r}."
                )

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ImprovedCLIPConfig: {name} must be an int >= {low}, got {value!r}.")

        for name in ("simclr_weight", "barlip_weight", "siamlip_weight", "byolip_weight", "swalip_weight"):
            number(name, 0.0)
        for name in ("aug_logit_scale_init", "max_logit_scale", "simclr_temperature", "barlip_scale"):
            number(name, 0.0, closed_low=False)
        for name in ("swalip_temperature", "swalip_epsilon"):
            number(name, 0.0, closed_low=False)
        number("barlip_lambda", 0.0)
        number("label_smoothing", 0.0, 1.0)
        if self.label_smoothing >= 1.0:
            raise ValueError(
                f"ImprovedCLIPConfig: label_smoothing must be in [0, 1), got {self.label_smoothing}."
            )
        number("byolip_momentum", 0.0, 1.0)
        if self.byolip_momentum >= 1.0:
            raise ValueError(
                f"ImprovedCLIPConfig: byolip_momentum must be in [0, 1), got {self.byolip_momentum}."
            )
        for name in (
            "projection_dim",
            "projector_hidden_size",
            "projector_layers",
            "simclr_hidden_size",
            "simclr_dim",
            "barlip_hidden_size",
            "barlip_dim",
            "siamlip_hidden_size",
            "siamlip_dim",
            "swalip_iterations",
            "swalip_hidden_size",
            "swalip_dim",
        ):
            integer(name, 1)
        integer("swalip_prototypes", 2)
        if self.aug_logit_scale_init > self.max_logit_scale:
            raise ValueError(
                f"ImprovedCLIPConfig: aug_logit_scale_init={self.aug_logit_scale_init} exceeds "
                f"max_logit_scale={self.max_logit_scale}."
            )
        if self.loss_avg_or_sum not in ("avg", "sum"):
            raise ValueError(
                f"ImprovedCLIPConfig: loss_avg_or_sum must be 'avg' or 'sum', got {self.loss_avg_or_sum!r}."
            )
        if self.gather not in (None, True, False):
            raise ValueError(f"ImprovedCLIPConfig: gather must be None, True or False, got {self.gather!r}.")
        if self.use_siamlip and self.use_byolip:
            raise ValueError(
                "ImprovedCLIPConfig: use_byolip is SiamLIP with a momentum target; switch on one of "
                "use_siamlip and use_byolip, not both."
            )
        if self.use_swalip and self.label_smoothing != 0.0:
            raise ValueError(
                "ImprovedCLIPConfig: SwALIP is trained without label smoothing (Fini et al. 2023); set "
                f"label_smoothing=0.0 with use_swalip=True (got label_smoothing={self.label_smoothing})."
            )

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-serialisable."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImprovedCLIPConfig:
        """The config of `values` (as written by [`to_dict`]); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ImprovedCLIPConfig: unknown settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


class ImprovedCLIPLoss(ContrastiveLoss):
    r"""The CL2L objective of the improved CLIP recipe (Fini et al. 2023), with its heads and add-ons.

    See the module docstring for the formula. The heads live in this module (add its parameters to the
    optimiser and wrap it with the model under DDP); they serve training only: the saved dual encoder is the
    towers with their global projections.

    Args:
        image_dim (`int`): size of the pooled image features of the views (with `separate_projector=False`: of
            the projected view embeddings).
        text_dim (`int`): size of the pooled text features of the views.
        config (`ImprovedCLIPConfig`, *optional*): the settings (default: the paper's). Keyword arguments
            override single settings (`ImprovedCLIPLoss(768, 512, use_barlip=True)`).

    Inputs:
        image_global (`torch.Tensor`): `[B, D]` projected global image embeddings (normalised here).
        text_global (`torch.Tensor`): `[B, D]` projected global text embeddings.
        logit_scale (`torch.Tensor` or `float`): the model's exponentiated scale of the global term.
        image_views_pooled (`Sequence[torch.Tensor]`): `V` tensors `[B, image_dim]`, the pooled features of
            the augmented images (or one `[V, B, image_dim]` tensor).
        text_views_pooled (`Sequence[torch.Tensor]`): `V` tensors `[B, text_dim]`, those of their captions.
        image_global_pooled, text_global_pooled (`torch.Tensor`, *optional*): pooled features of the global
            pair, `[B, image_dim]` and `[B, text_dim]`; when given, the image-text add-ons also compare the
            global pair.

    Returns:
        [`LossOutput`] with components `loss_global` (`L_g`), `loss_local` (`L_loc`, with views), `cl2l` (the
        combined, scaled CL2L loss), `accuracy` (global image->text), `logit_scale`, `aug_logit_scale`, and
        one unweighted value per switched-on add-on (`simclr`, `barlip`, `siamlip` or `byolip`, `swalip`).

    Call [`update_target`] after every optimiser step when BYOLIP is on (it does nothing otherwise).

    Example::

        loss_fn = ImprovedCLIPLoss(vision_hidden, text_hidden, ImprovedCLIPConfig(use_barlip=True))
        out = loss_fn(image_embeds, text_embeds, model.logit_scale.exp(), image_views, text_views)
        out.loss.backward()
    """

    citation = IMPROVED_CLIP_CITATION

    def __init__(
        self, image_dim: int, text_dim: int, config: ImprovedCLIPConfig | None = None, **overrides: Any
    ):
        super().__init__()
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImprovedCLIPLoss: {name} must be an int > 0, got {value!r}.")
        config = ImprovedCLIPConfig() if config is None else config
        if not isinstance(config, ImprovedCLIPConfig):
            raise TypeError(
                f"ImprovedCLIPLoss: config must be an ImprovedCLIPConfig, got {type(config).__name__}."
            )
        if overrides:
            config = ImprovedCLIPConfig.from_dict({**config.to_dict(), **overrides})
        self.config, self.image_dim, self.text_dim = config, image_dim, text_dim
        c, gather = config, config.gather
        self.global_loss = CLIPLoss(label_smoothing=0.0, gather=gather)
        self.local_loss = CLIPLoss(label_smoothing=c.label_smoothing, gather=gather)
        if c.separate_projector:
            self.image_projector = projection_mlp(
                image_dim, c.projector_hidden_size, c.projection_dim, c.projector_layers, gather=gather
            )
            self.text_projector = projection_mlp(
                text_dim, c.projector_hidden_size, c.projection_dim, c.projector_layers, gather=gather
            )
            log_scale = torch.tensor(math.log(c.aug_logit_scale_init))
            if c.learn_aug_logit_scale:
                self.aug_log_scale = nn.Parameter(log_scale)
            else:
                self.register_buffer("aug_log_scale", log_scale)
        elif image_dim != text_dim:
            raise ValueError(
                "ImprovedCLIPLoss: with separate_projector=False the views are projected embeddings of one "
                f"size, so image_dim must equal text_dim; got {image_dim} and {text_dim}."
            )
        citations = [IMPROVED_CLIP_CITATION]
        if c.use_simclr:
            self.simclr = SimCLRImageLoss(
                image_dim, c.simclr_hidden_size, c.simclr_dim, 3, c.simclr_temperature, gather=gather
            )
            citations.append(self.simclr.citation)
        if c.use_barlip:
            self.barlip = BarlowTwinsLoss(
                image_dim,
                text_dim,
                c.barlip_hidden_size,
                c.barlip_dim,
                3,
                c.barlip_lambda,
                c.barlip_scale,
                gather,
            )
            citations.append(self.barlip.citation)
        if c.use_siamlip or c.use_byolip:
            momentum = c.byolip_momentum if c.use_byolip else None
            self.siamlip = SiamLIPLoss(
                image_dim, text_dim, c.siamlip_hidden_size, c.siamlip_dim, momentum, gather
            )
            citations.append(self.siamlip.citation)
        if c.use_swalip:
            self.swalip = SwALIPLoss(
                image_dim,
                text_dim,
                c.swalip_hidden_size,
                c.swalip_dim,
                c.swalip_prototypes,
                c.swalip_temperature,
                c.swalip_epsilon,
                c.swalip_iterations,
                c.swalip_shared_prototypes,
                gather,
            )
            citations.append(self.swalip.citation)
        self.citation = "\n".join(citations)

    # -- configuration --------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"image_dim": self.image_dim, "text_dim": self.text_dim, **self.config.to_dict()}

    @classmethod
    def from_config_dict(cls, values: dict[str, Any]) -> ImprovedCLIPLoss:
        """Rebuild the loss (fresh heads) from [`config_dict`]'s output."""
        values = dict(values)
        missing = [k for k in ("image_dim", "text_dim") if k not in values]
        if missing:
            raise ValueError(f"ImprovedCLIPLoss.from_config_dict: missing {missing}.")
        image_dim, text_dim = values.pop("image_dim"), values.pop("text_dim")
        return cls(image_dim, text_dim, ImprovedCLIPConfig.from_dict(values))

    def aug_logit_scale(self) -> torch.Tensor | None:
        """The views' scale in use (clamped to `max_logit_scale`); `None` without separate heads."""
        if not self.config.separate_projector:
            return None
        return self.aug_log_scale.exp().clamp(max=self.config.max_logit_scale)

    @torch.no_grad()
    def update_target(self) -> None:
        """BYOLIP's EMA step of the target projectors; call after every optimiser step (no-op otherwise)."""
        if self.config.use_byolip:
            self.siamlip.update_target()

    # -- forward --------------------------------------------------------------------------------------------
    def _validate(
        self,
        image_global: torch.Tensor,
        text_global: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_views: Any,
        text_views: Any,
        image_global_pooled: torch.Tensor | None,
        text_global_pooled: torch.Tensor | None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        owner = type(self).__name__
        check_2d("image_global", image_global, owner)
        check_2d("text_global", text_global, owner)
        if image_global.shape != text_global.shape:
            raise ValueError(
                f"{owner}: image_global {tuple(image_global.shape)} and text_global "
                f"{tuple(text_global.shape)} must have the same shape (one caption per image, one embedding "
                "size)."
            )
        batch = image_global.shape[0]
        scale = (
            logit_scale.detach()
            if isinstance(logit_scale, torch.Tensor)
            else torch.tensor(float(logit_scale))
        )
        if scale.numel() != 1 or not (bool(torch.isfinite(scale).all()) and float(scale) > 0):
            raise ValueError(
                f"{owner}: logit_scale must be one finite number > 0 (exponentiated), got {logit_scale!r}."
            )
        images = _feature_list(owner, "image_views_pooled", image_views, self.image_dim)
        texts = _feature_list(owner, "text_views_pooled", text_views, self.text_dim)
        if len(images) != len(texts):
            raise ValueError(
                f"{owner}: got {len(images)} image view(s) and {len(texts)} text view(s); every augmented "
                "image comes with its augmented caption, so the counts must match."
            )
        for name, views in (("image_views_pooled", images), ("text_views_pooled", texts)):
            for k, v in enumerate(views):
                if v.shape[0] != batch:
                    raise ValueError(
                        f"{owner}: {name}[{k}] has batch size {v.shape[0]} but the global embeddings "
                        f"have {batch}."
                    )
        if (image_global_pooled is None) != (text_global_pooled is None):
            raise ValueError(f"{owner}: give both image_global_pooled and text_global_pooled, or neither.")
        if image_global_pooled is not None:
            for name, t, dim in (
                ("image_global_pooled", image_global_pooled, self.image_dim),
                ("text_global_pooled", text_global_pooled, self.text_dim),
            ):
                check_2d(name, t, owner)
                if tuple(t.shape) != (batch, dim):
                    raise ValueError(
                        f"{owner}: {name} must have shape ({batch}, {dim}), got {tuple(t.shape)}."
                    )
        c = self.config
        if c.use_simclr and len(images) < 2:
            raise ValueError(
                f"{owner}: use_simclr needs at least 2 augmented image views, got {len(images)}."
            )
        if (
            (c.use_barlip or c.use_siamlip or c.use_byolip or c.use_swalip)
            and not images
            and image_global_pooled is None
        ):
            raise ValueError(
                f"{owner}: the image-text add-ons need augmented views or the global pooled features; "
                "got neither."
            )
        self._check_finite(
            image_global=image_global,
            text_global=text_global,
            image_global_pooled=image_global_pooled,
            text_global_pooled=text_global_pooled,
            **{f"image_views_pooled_{k}": v for k, v in enumerate(images)},
            **{f"text_views_pooled_{k}": v for k, v in enumerate(texts)},
        )
        return images, texts

    def forward(
        self,
        image_global: torch.Tensor,
        text_global: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_views_pooled: Sequence[torch.Tensor] | torch.Tensor,
        text_views_pooled: Sequence[torch.Tensor] | torch.Tensor,
        *,
        image_global_pooled: torch.Tensor | None = None,
        text_global_pooled: torch.Tensor | None = None,
    ) -> LossOutput:
        c = self.config
        images, texts = self._validate(
            image_global,
            text_global,
            logit_scale,
            image_views_pooled,
            text_views_pooled,
            image_global_pooled,
            text_global_pooled,
        )
        zi = F.normalize(upcast(image_global), dim=-1)
        zt = F.normalize(upcast(text_global), dim=-1)
        global_out = self.global_loss(zi, zt, logit_scale)
        components: dict[str, torch.Tensor] = {
            "loss_global": global_out.loss.detach(),
            "accuracy": global_out.components["accuracy"],
            "logit_scale": global_out.components["logit_scale"],
        }
        num_views = len(images)
        cl2l = global_out.loss
        if num_views:
            if c.separate_projector:
                hi = [F.normalize(self.image_projector(x), dim=-1) for x in images]
                ht = [F.normalize(self.text_projector(y), dim=-1) for y in texts]
                aug_scale = self.aug_logit_scale()
                components["aug_logit_scale"] = aug_scale.detach()
            else:
                hi = [F.normalize(upcast(x), dim=-1) for x in images]
                ht = [F.normalize(upcast(y), dim=-1) for y in texts]
                aug_scale = logit_scale
            local_terms = [self.local_loss(a, b, aug_scale).loss for a in hi for b in ht]
            local = torch.stack(local_terms).mean()
            components["loss_local"] = local.detach()
            cl2l = (global_out.loss + num_views * local) / (1 + num_views)
        loss = cl2l * (2.0 if c.loss_avg_or_sum == "sum" else 1.0)
        components["cl2l"] = loss.detach()

        image_feats = ([image_global_pooled] if image_global_pooled is not None else []) + images
        text_feats = ([text_global_pooled] if text_global_pooled is not None else []) + texts
        offset = 1 if image_global_pooled is not None else 0
        pairs = ([(0, 0)] if offset else []) + [
            (offset + i, offset + j) for i in range(num_views) for j in range(num_views)
        ]
        if c.use_simclr:
            out = self.simclr(images)
            loss = loss + c.simclr_weight * out.loss
            components["simclr"] = out.loss.detach()
        if c.use_barlip:
            out = self.barlip(image_feats, text_feats, pairs)
            loss = loss + c.barlip_weight * out.loss
            components["barlip"] = out.loss.detach()
        if c.use_siamlip or c.use_byolip:
            out = self.siamlip(image_feats, text_feats, pairs)
            name = "byolip" if c.use_byolip else "siamlip"
            loss = loss + (c.byolip_weight if c.use_byolip else c.siamlip_weight) * out.loss
            components[name] = out.loss.detach()
        if c.use_swalip:
            out = self.swalip(image_feats, text_feats, pairs)
            loss = loss + c.swalip_weight * out.loss
            components["swalip"] = out.loss.detach()
        return LossOutput(loss, components)
