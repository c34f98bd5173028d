"""Shuffled group whitening and the WhitenedCSE objective (Zhuo et al. 2023).

WhitenedCSE is unsupervised SimCSE with more than two dropout views per sentence (3 in the paper), each view
passed through *shuffled group whitening* before the contrastive loss:

1. the channels of the view are put in a random order (a fresh permutation for every view and step);
2. the permuted channels are cut into groups of `group_size` consecutive channels;
3. each group is whitened with ZCA from the statistics of the batch: with the centred group `X` (`N` rows)
   and its covariance `C = X^T X / N = U diag(l) U^T` (`torch.linalg.eigh`), the output is `X W` with
   `W = U diag((l + eps)^(-1/2)) U^T`, so the group's covariance becomes the identity (up to `eps`);
4. the channels are put back in their original order.

Step 4 is our decision and the released code's behaviour: the paper only says that the group division is
shuffled. The views are compared with the cosine, channel by channel, so channel `c` of every view must
hold the same feature; without the inverse permutation two views would compare unrelated channels and
the positive pair would carry no signal. Undoing the permutation keeps the channels aligned while the
grouping (which channels are decorrelated together) still differs from view to view: this is the extra
diversity of the positives that the method is after.

The loss is `CE(z1, z2) + CE(z1, z3)` (one InfoNCE term per extra view, in-batch negatives, cosine,
tau 0.05) on the whitened views. The gradient flows through the whitening matrix: `W` depends on the batch,
so every row's gradient depends on the others (the released code detached it and used the removed
`torch.symeig`). The backward pass of `W(C)` uses the divided differences of `f(l) = (l + eps)^(-1/2)`
written without cancellation, so equal eigenvalues (which make the textbook eigenvector gradient divide by
zero) give a finite, exact gradient.

What we whiten: the encoder's training output (after pooling, the projection when it is active, and
normalisation when the config asks for it). The released code whitens the pooled vector before its
Linear + Tanh; whitening the output keeps the whitened views as the inputs of the cosine, which is where
the method's alignment and uniformity argument applies, and lets the trainer embed all views in one
forward. Whitening needs the views of the whole batch together, so it happens in the loss, after
[`ContrastiveTrainer`] has reassembled the batch (it may embed the rows in length buckets, or in GradCache
mini-batches).

Group size: our setting is the number of channels per group (`whitening_group_size`). The released code
builds 128 groups (6 channels each for BERT-base's 768); its automatic rule makes a group half as wide as
the batch. The centred covariance of `N` rows has rank at most `N - 1`, so a batch must have more rows than
a group has channels: a smaller batch is refused with a message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast
from hf_contrastive.core.losses.infonce import InfoNCELoss
from hf_contrastive.core.losses.registry import register_loss

__all__ = [
    "DEFAULT_WHITENING_EPS",
    "ShuffledGroupWhitening",
    "WhitenedCSELoss",
    "group_whiten",
    "zca_whitening_matrix",
]

DEFAULT_WHITENING_EPS = 1e-5
"""Added to the covariance eigenvalues before the inverse square root (`whitening_eps`)."""

WHITENEDCSE_CITATION = """@inproceedings{zhuo2023whitenedcse,
  title     = {{WhitenedCSE}: Whitening-based Contrastive Learning of Sentence Embeddings},
  author    = {Zhuo, Wenjie and Sun, Yifan and Wang, Xiaohan and Zhu, Linchao and Yang, Yi},
  booktitle = {Proceedings of the 61st Annual Meeting of the Association for Computational Linguistics
               (Volume 1: Long Papers)},
  year      = {2023},
  url       = {https://aclanthology.org/2023.acl-long.677}
}"""


def check_group_size(group_size: Any, owner: str = "group_size") -> int:
    """`group_size` as a positive `int`, or a `ValueError` naming `owner`."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(
            f"{owner} must be a positive integer (channels per whitening group), got {group_size!r}."
        )
    return group_size


def check_eps(eps: Any, owner: str = "eps") -> float:
    """`eps` as a finite `float` > 0, or a `ValueError` naming `owner`."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(
            f"{owner} must be a finite number > 0 (it keeps the inverse square root of small eigenvalues "
            f"bounded), got {eps!r}."
        )
    return float(eps)


class _InverseSqrtPSD(torch.autograd.Function):
    """`(C + eps I)^(-1/2)` of symmetric positive semi-definite matrices `[..., g, g]`, through `eigh`.

    Backward: with `C = U diag(l) U^T` and `f(l) = (l + eps)^(-1/2)`, the gradient is
    `U (K * (U^T G U)) U^T` with `K_ij = (f(l_i) - f(l_j)) / (l_i - l_j)` (`f'(l_i)` on ties), written as
    `-1 / (r_i r_j (r_i + r_j))` with `r = sqrt(l + eps)`: no subtraction, so no cancellation and no
    division by a vanishing eigenvalue gap.
    """

    @staticmethod
    def forward(ctx, cov: torch.Tensor, eps: float) -> torch.Tensor:
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        # Rounding can push the eigenvalue of a (numerically) singular direction slightly below zero.
        roots = (eigenvalues.clamp_min(0.0) + eps).sqrt()
        ctx.save_for_backward(eigenvectors, roots)
        return (eigenvectors / roots.unsqueeze(-2)) @ eigenvectors.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        eigenvectors, roots = ctx.saved_tensors
        grad = 0.5 * (grad + grad.mT)
        inner = eigenvectors.mT @ grad @ eigenvectors
        r_i, r_j = roots.unsqueeze(-1), roots.unsqueeze(-2)
        divided = -1.0 / (r_i * r_j * (r_i + r_j))
        return eigenvectors @ (divided * inner) @ eigenvectors.mT, None


def zca_whitening_matrix(cov: torch.Tensor, eps: float = DEFAULT_WHITENING_EPS) -> torch.Tensor:
    """The ZCA whitening matrix `W = (C + eps I)^(-1/2)` of covariance matrices, differentiable.

    `W` is symmetric: of all matrices that whiten `C` it is the one closest to the identity (the whitened
    channels stay as close as possible to the original ones), which is what makes it ZCA rather than PCA
    whitening.

    Args:
        cov (`torch.Tensor` of shape `(..., g, g)`):
            Symmetric positive semi-definite matrices (only their symmetric part is used). Half precision is
            computed in float32.
        eps (`float`, *optional*, defaults to `1e-5`):
            Added to every eigenvalue before the inverse square root.

    Returns:
        `torch.Tensor` of the shape of `cov`: the whitening matrices (float32 for half-precision input).
    """
    eps = check_eps(eps)
    if not isinstance(cov, torch.Tensor) or cov.dim() < 2 or cov.shape[-1] != cov.shape[-2]:
        shape = tuple(cov.shape) if isinstance(cov, torch.Tensor) else type(cov).__name__
        raise ValueError(f"zca_whitening_matrix expects square matrices [..., g, g], got {shape}.")
    cov = upcast(cov)
    return _InverseSqrtPSD.apply(0.5 * (cov + cov.mT), eps)


def _check_permutation(permutation: torch.Tensor, width: int) -> None:
    if (
        not isinstance(permutation, torch.Tensor)
        or permutation.dim() != 1
        or permutation.dtype not in (torch.int64, torch.int32)
        or permutation.numel() != width
        or not torch.equal(permutation.sort().values.cpu(), torch.arange(width, dtype=permutation.dtype))
    ):
        given = (
            f"shape {tuple(permutation.shape)}, dtype {permutation.dtype}"
            if isinstance(permutation, torch.Tensor)
            else type(permutation).__name__
        )
        raise ValueError(
            f"permutation must be an integer tensor holding each of 0..{width - 1} once (a channel order for "
            f"{width} channels), got {given}."
        )


def group_whiten(
    x: torch.Tensor,
    group_size: int,
    eps: float = DEFAULT_WHITENING_EPS,
    permutation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whiten the channels of a batch in groups (ZCA from the batch statistics), differentiably.

    With `permutation`, group `k` holds the channels `permutation[k * group_size : (k + 1) * group_size]`
    and the output keeps the input's channel order (channel `c` of the output is the whitened channel `c`).
    Without it, group `k` holds the consecutive channels `k * group_size ... (k + 1) * group_size - 1`.
    Each group is centred on the batch mean and multiplied by [`zca_whitening_matrix`] of its covariance
    (divided by `N`, as batch normalisation does), so its covariance becomes `I` up to `eps`.

    Args:
        x (`torch.Tensor` of shape `(batch_size, dim)`):
            The embeddings of one view. Needs more rows than `group_size` (a group's covariance is singular
            otherwise). Half precision is computed in float32 and returned in the input dtype.
        group_size (`int`):
            Channels per group; must divide `dim`.
        eps (`float`, *optional*, defaults to `1e-5`):
            Added to the eigenvalues of each group's covariance.
        permutation (`torch.Tensor` of shape `(dim,)`, *optional*):
            The channel order that defines the groups (a permutation of `0..dim-1`).

    Returns:
        `torch.Tensor` of shape `(batch_size, dim)`: the whitened batch, in the input's channel order.

    Raises:
        `ValueError`: `x` is not 2-D, `group_size` does not divide `dim`, the batch has no more rows than
            `group_size`, or `permutation` is not a permutation of the channels.
    """
    check_2d("x", x, "group_whiten")
    group_size = check_group_size(group_size)
    eps = check_eps(eps)
    rows, width = x.shape
    if width % group_size:
        raise ValueError(
            f"group_whiten: a group size of {group_size} does not divide the {width} channels of the embeddings; "
            f"use a divisor of {width} (for example {_divisors_hint(width, rows)})."
        )
    if rows <= group_size:
        raise ValueError(
            f"group_whiten: a batch of {rows} row(s) cannot whiten groups of {group_size} channels: the centred "
            f"covariance of N rows has rank at most N - 1, so it is singular unless the batch has at least "
            f"{group_size + 1} rows. Use a larger batch or a smaller whitening_group_size."
        )
    dtype = x.dtype
    values = upcast(x)
    if permutation is not None:
        _check_permutation(permutation, width)
        permutation = permutation.to(device=values.device, dtype=torch.long)
        values = values[:, permutation]
    groups = values.reshape(rows, width // group_size, group_size).transpose(0, 1)  # [G, N, g]
    centred = groups - groups.mean(dim=1, keepdim=True)
    cov = centred.mT @ centred / rows
    whitened = (centred @ zca_whitening_matrix(cov, eps)).transpose(0, 1).reshape(rows, width)
    if permutation is not None:
        whitened = whitened[:, torch.argsort(permutation)]
    return whitened.to(dtype)


def _divisors_hint(width: int, rows: int) -> str:
    divisors = [d for d in range(2, width + 1) if width % d == 0 and d < max(rows, 2)]
    return ", ".join(str(d) for d in divisors[-4:]) if divisors else "1"


class ShuffledGroupWhitening(nn.Module):
    r"""Shuffled group whitening (Zhuo et al. 2023): ZCA whitening of random channel groups, order restored.

    Each call draws a fresh channel permutation with `torch.randperm` on the CPU generator (so
    `transformers.set_seed` / `Trainer`'s seed replays it, and GradCache's random-state replay covers it),
    whitens the groups it defines with [`group_whiten`] and returns the channels in their original order. With
    `shuffle=False` the groups are consecutive channels and the output is deterministic (inference).

    The module has no parameters or buffers: the whitening depends only on the batch it is given.

    Args:
        group_size (`int`):
            Channels per group.
        eps (`float`, *optional*, defaults to `1e-5`):
            Added to the eigenvalues of each group's covariance.
        shuffle (`bool`, *optional*, defaults to `True`):
            Draw a random grouping per call; `False` whitens consecutive channels.
    """

    def __init__(self, group_size: int, eps: float = DEFAULT_WHITENING_EPS, shuffle: bool = True) -> None:
        super().__init__()
        self.group_size = check_group_size(group_size)
        self.eps = check_eps(eps)
        self.shuffle = bool(shuffle)

    @staticmethod
    def draw_permutation(width: int, device: torch.device | str | None = None) -> torch.Tensor:
        """A random channel order for `width` channels from torch's CPU generator, moved to `device`."""
        return torch.randperm(width).to(device)

    def forward(self, x: torch.Tensor, permutation: torch.Tensor | None = None) -> torch.Tensor:
        """Whiten `x` (`[batch_size, dim]`); `permutation` overrides the random grouping."""
        check_2d("x", x, type(self).__name__)
        if permutation is None and self.shuffle:
            permutation = self.draw_permutation(x.shape[1], x.device)
        return group_whiten(x, self.group_size, self.eps, permutation)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, eps={self.eps}, shuffle={self.shuffle}"


class WhitenedCSELoss(ContrastiveLoss):
    r"""WhitenedCSE (Zhuo et al. 2023): InfoNCE between shuffled-group-whitened dropout views.

    Each of the `num_views` views `z1 ... zV` (`[B, D]`, the same sentences under independent dropout
    masks) is whitened by [`ShuffledGroupWhitening`] with its own random channel permutation, then

    `loss = sum over k = 2..V of InfoNCE(anchor = w(z1), positive = w(zk))`

    with in-batch negatives, cosine similarity and temperature 0.05: `CE(z1, z2) + CE(z1, z3)` for the
    paper's three views. Each term is an [`InfoNCELoss`] (cross-device negatives when distributed: each
    process whitens its own rows, then the whitened rows are gathered).

    [`ContrastiveTrainer`] reads `num_views` and embeds that many copies of each batch in one forward. A
    batch needs more rows than `group_size` (see `min_batch_rows`); the trainer merges a smaller last batch
    into the one before it.

    Args:
        group_size (`int`):
            Channels per whitening group; must divide the embedding size.
        eps (`float`, *optional*, defaults to `1e-5`):
            Added to the eigenvalues of each group's covariance.
        num_views (`int`, *optional*, defaults to `3`):
            Dropout views per sentence (the paper's 3); at least 2.
        temperature (`float`, *optional*, defaults to `0.05`):
            Softmax temperature of every InfoNCE term.
        learnable_scale (`bool`, *optional*, defaults to `False`):
            Learn the scale (`1 / temperature`), shared by the terms.
        gather_across_devices (`bool`, *optional*):
            As [`InfoNCELoss`]: `None` gathers whenever training runs on several processes.

    Returns:
        [`LossOutput`] with components `whitenedcse` (the sum), `infonce_1_k` (each term) and `acc` (mean
        top-1 accuracy of the terms).

    Example::

        loss_fn = WhitenedCSELoss(group_size=32)
        z = model(**tokenised_three_times).embeddings  # [3B, D], one forward
        out = loss_fn(*z.chunk(3))
    """

    citation = WHITENEDCSE_CITATION

    def __init__(
        self,
        group_size: int,
        eps: float = DEFAULT_WHITENING_EPS,
        num_views: int = 3,
        temperature: float = 0.05,
        learnable_scale: bool = False,
        gather_across_devices: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
            raise ValueError(f"num_views must be an integer >= 2 (the paper uses 3), got {num_views!r}.")
        self.whitening = ShuffledGroupWhitening(group_size, eps, shuffle=True)
        self.infonce = InfoNCELoss(
            temperature=temperature,
            learnable_scale=learnable_scale,
            gather_across_devices=gather_across_devices,
        )
        self.num_views = num_views

    @property
    def group_size(self) -> int:
        return self.whitening.group_size

    @property
    def eps(self) -> float:
        return self.whitening.eps

    @property
    def min_batch_rows(self) -> int:
        """Fewest rows a batch may have: one more than the channels of a group."""
        return self.group_size + 1

    def config_dict(self) -> dict[str, Any]:
        inner = self.infonce.config_dict()
        return {
            "group_size": self.group_size,
            "eps": self.eps,
            "num_views": self.num_views,
            "temperature": inner["temperature"],
            "learnable_scale": inner["learnable_scale"],
            "gather_across_devices": inner["gather_across_devices"],
        }

    def forward(self, *views: torch.Tensor, permutations: Sequence[torch.Tensor] | None = None) -> LossOutput:
        """`views`: `num_views` tensors `[B, D]` (view 1 is the anchor); `permutations`: one channel order per
        view instead of random ones."""
        owner = type(self).__name__
        if len(views) != self.num_views:
            raise ValueError(f"{owner}: expected {self.num_views} views (num_views), got {len(views)}.")
        for i, view in enumerate(views, start=1):
            check_2d(f"view {i}", view, owner)
        shapes = {tuple(v.shape) for v in views}
        if len(shapes) > 1:
            raise ValueError(f"{owner}: every view must have the same shape [B, D], got {sorted(shapes)}.")
        self._check_finite(**{f"view_{i}": v for i, v in enumerate(views, start=1)})
        width = views[0].shape[1]
        if permutations is None:
            permutations = [self.whitening.draw_permutation(width, views[0].device) for _ in views]
        elif len(permutations) != len(views):
            raise ValueError(
                f"{owner}: give one permutation per view ({len(views)}), got {len(permutations)}."
            )
        whitened = [self.whitening(v, permutation=p) for v, p in zip(views, permutations)]
        terms = [self.infonce(whitened[0], other) for other in whitened[1:]]
        loss = terms[0].loss
        for term in terms[1:]:
            loss = loss + term.loss
        components = {"whitenedcse": loss.detach()}
        for k, term in enumerate(terms, start=2):
            components[f"infonce_1_{k}"] = term.components["infonce"]
        components["acc"] = torch.stack([t.components["acc"] for t in terms]).mean()
        if "scale" in terms[0].components:
            components["scale"] = terms[0].components["scale"]
        return LossOutput(loss=loss, components=components)


def _encoder_config(model: Any) -> Any:
    """The config of the model under DDP (`.module`) and PEFT (`get_base_model()`) wrappers."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "config", None)


@register_loss("whitenedcse", layouts=("unsupervised",), aliases=("whitened_cse",))
def _build_whitenedcse(config: Any, roles: Any, model: Any) -> nn.Module:
    """WhitenedCSE: InfoNCE between shuffled-group-whitened dropout views (3 by default)."""
    model_config = _encoder_config(model)
    group_size = getattr(model_config, "whitening_group_size", None)
    if group_size is None:
        raise ValueError(
            "loss='whitenedcse' whitens the embeddings in groups, and the model's config sets no "
            "whitening_group_size: load the encoder with one, for example "
            "SentenceEncoder.from_pretrained(path, whitening_group_size=32) (it must divide the embedding size)."
        )
    eps = getattr(model_config, "whitening_eps", None)
    num_views = getattr(config, "num_views", None) if config is not None else None
    batch = getattr(config, "per_device_train_batch_size", None) if config is not None else None
    if isinstance(batch, int) and batch <= group_size:
        raise ValueError(
            f"loss='whitenedcse' with whitening_group_size={group_size} needs more than {group_size} rows per "
            f"batch (each view's group covariance is singular otherwise); per_device_train_batch_size is {batch}. "
            "Raise the batch or lower whitening_group_size (the released code used groups about half the batch)."
        )
    temperature = getattr(config, "temperature", None) if config is not None else None
    return WhitenedCSELoss(
        group_size=int(group_size),
        eps=DEFAULT_WHITENING_EPS if eps is None else eps,
        num_views=3 if num_views is None else num_views,
        temperature=0.05 if temperature is None else temperature,
        learnable_scale=bool(getattr(config, "learnable_temperature", False)),
        gather_across_devices=getattr(config, "gather_across_devices", None),
    )
