"""Image-text losses that stay exact at any world size: CLIP's symmetric InfoNCE and SigLIP's sigmoid loss.

Both are computed as *local* losses: this process's images against the texts of every process (and its texts
against every image), gathered with gradient by [`hf_contrastive.core.distributed.gather_with_grad`]. Each
rank's loss is a mean over its own rows; the gather's backward hands every rank the gradient of its own rows
summed over ranks, and DDP averages, so the gradient equals that of one process on the concatenated batch
(module docstring of `hf_contrastive.core.distributed`). The alternative that looks natural, every rank
computing the full `N x N` loss on gathered features, multiplies the gradients by the world size.

The model's scale (and SigLIP's bias) are passed in already exponentiated, as open_clip's losses take them,
so the two can be compared value for value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core import distributed
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast

__all__ = ["CLIPLoss", "SigLIPLoss", "local_targets"]

CLIP_CITATION = """@inproceedings{radford2021clip,
  title     = {Learning Transferable Visual Models From Natural Language Supervision},
  author    = {Radford, Alec and Kim, Jong Wook and Hallacy, Chris and Ramesh, Aditya and Goh, Gabriel and
               Agarwal, Sandhini and Sastry, Girish and Askell, Amanda and Mishkin, Pamela and Clark, Jack and
               Krueger, Gretchen and Sutskever, Ilya},
  booktitle = {Proceedings of the 38th International Conference on Machine Learning},
  year      = {2021}
}"""

SIGLIP_CITATION = """@inproceedings{zhai2023siglip,
  title     = {Sigmoid Loss for Language Image Pre-Training},
  author    = {Zhai, Xiaohua and Mustafa, Basil and Kolesnikov, Alexander and Beyer, Lucas},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision},
  year      = {2023}
}"""


def local_targets(local_size: int, sizes: list[int], device: torch.device) -> torch.Tensor:
    """Column of each local row's partner in the gathered batch: `offset(rank) + arange(local_size)`."""
    offset = sum(sizes[: distributed.rank()]) if len(sizes) > 1 else 0
    return torch.arange(local_size, device=device) + offset


def _check_pair(owner: str, image: torch.Tensor, text: torch.Tensor) -> None:
    check_2d("image_features", image, owner)
    check_2d("text_features", text, owner)
    if image.shape != text.shape:
        raise ValueError(
            f"{owner}: image_features {tuple(image.shape)} and text_features {tuple(text.shape)} must have the "
            "same shape (one caption per image, the same embedding size)."
        )


def _scale(owner: str, name: str, value: Any, device: torch.device) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=device)
    if t.numel() != 1:
        raise ValueError(
            f"{owner}: {name} must be a scalar (a 0-d or 1-element tensor), got shape {tuple(t.shape)}."
        )
    return upcast(t.reshape(()))


def _gather_pair(
    image: torch.Tensor, text: torch.Tensor, gather: bool
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    if not gather:
        return image, text, [image.shape[0]]
    sizes = [
        s[0]
        for s in distributed.all_gather_sizes(image.shape[0], device=distributed.collective_device(image))
    ]
    return distributed.gather_with_grad(image, sizes), distributed.gather_with_grad(text, sizes), sizes


class CLIPLoss(ContrastiveLoss):
    r"""CLIP's symmetric InfoNCE (Radford et al. 2021) with cross-device negatives.

    `L = 1/2 [CE(s * I T_all^T, y) + CE(s * T I_all^T, y)]`, where `I`, `T` are this process's normalised
    image and text features `[B, D]`, `I_all`, `T_all` those of every process, `s` the (exponentiated) logit
    scale and `y` the column of each row's partner. On one process it is the plain in-batch loss.

    Args:
        label_smoothing (`float`, *optional*, defaults to `0.0`): label smoothing of both cross-entropies (the
            improved CLIP recipe uses 0.1 on its augmented-view terms only).
        gather (`bool | None`, *optional*): gather negatives from every process (`None`: when distributed).

    Example::

        loss = CLIPLoss()
        out = loss(image_embeds, text_embeds, model.logit_scale.exp())
    """

    citation = CLIP_CITATION

    def __init__(self, label_smoothing: float = 0.0, gather: bool | None = None) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)
        self.gather = gather

    def config_dict(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing, "gather": self.gather, "local_loss": True}

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> LossOutput:
        """Loss of `[B, D]` image and text features (row `i` of each is a pair) at scale `logit_scale`."""
        owner = type(self).__name__
        _check_pair(owner, image_features, text_features)
        self._check_finite(image_features=image_features, text_features=text_features)
        scale = _scale(owner, "logit_scale", logit_scale, image_features.device)
        image, text = upcast(image_features), upcast(text_features)
        all_image, all_text, sizes = _gather_pair(image, text, self._resolve_gather(self.gather))
        targets = local_targets(image.shape[0], sizes, image.device)
        per_image = scale * image @ all_text.T
        per_text = scale * text @ all_image.T
        image_loss = F.cross_entropy(per_image, targets, label_smoothing=self.label_smoothing)
        text_loss = F.cross_entropy(per_text, targets, label_smoothing=self.label_smoothing)
        loss = (image_loss + text_loss) / 2
        with torch.no_grad():
            accuracy = (per_image.argmax(-1) == targets).float().mean()
        return LossOutput(
            loss,
            {
                "image_to_text": image_loss.detach(),
                "text_to_image": text_loss.detach(),
                "logit_scale": scale.detach(),
                "accuracy": accuracy,
            },
        )


class SigLIPLoss(ContrastiveLoss):
    r"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023) with negatives from every process.

    `L = -1/B sum_i sum_j log sigmoid(z_ij (s * I_i . T_j + b))`, `z_ij = +1` for a pair, `-1` otherwise, over
    this process's `B` images `I` and the texts `T` of every process (gathered with gradient: each text's
    gradient returns to the process that embedded it). The paper exchanges text blocks between neighbouring
    devices in a ring to save memory; gathering all of them gives the same loss and gradients (the sum is the
    same), at the memory of one `[B, N]` block.

    Args:
        gather (`bool | None`, *optional*): exchange negatives between processes (`None`: when distributed).
        bias_init (`float`, *optional*): give the loss its own learnable bias, initialised to this value (SigLIP
            uses -10), for models without one (`CLIPModel`, `VisionTextDualEncoderModel`); a bias passed to
            `forward` takes precedence.

    Example::

        loss = SigLIPLoss()
        out = loss(image_embeds, text_embeds, model.logit_scale.exp(), model.logit_bias)
    """

    citation = SIGLIP_CITATION

    def __init__(self, gather: bool | None = None, bias_init: float | None = None) -> None:
        super().__init__()
        self.gather = gather
        self.bias_init = bias_init
        self.logit_bias = (
            torch.nn.Parameter(torch.tensor(float(bias_init))) if bias_init is not None else None
        )

    def config_dict(self) -> dict[str, Any]:
        return {
            "gather": self.gather,
            "bias": "learnable (the model's)"
            if self.bias_init is None
            else f"learnable (the loss's, init {self.bias_init})",
            "local_loss": True,
        }

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float | None = None,
    ) -> LossOutput:
        """Loss of `[B, D]` image and text features; `logit_bias` a scalar or a `[B, N_global]` tensor."""
        owner = type(self).__name__
        _check_pair(owner, image_features, text_features)
        self._check_finite(image_features=image_features, text_features=text_features)
        scale = _scale(owner, "logit_scale", logit_scale, image_features.device)
        image, text = upcast(image_features), upcast(text_features)
        gather = self._resolve_gather(self.gather)
        if gather:
            sizes = [
                s[0]
                for s in distributed.all_gather_sizes(
                    image.shape[0], device=distributed.collective_device(image)
                )
            ]
            all_text = distributed.gather_with_grad(text, sizes)
        else:
            sizes, all_text = [image.shape[0]], text
        logits = scale * image @ all_text.T
        if logit_bias is None:
            logit_bias = self.logit_bias
        if logit_bias is not None:
            bias = logit_bias if isinstance(logit_bias, torch.Tensor) else torch.tensor(float(logit_bias))
            bias = upcast(bias.to(logits.device))
            if bias.numel() != 1 and tuple(bias.shape) != tuple(logits.shape):
                raise ValueError(
                    f"{owner}: logit_bias of shape {tuple(bias.shape)} does not fit the logits "
                    f"{tuple(logits.shape)} (local batch {image.shape[0]} x gathered batch {all_text.shape[0]} over "
                    f"{len(sizes)} process(es)); give a scalar bias or one of shape {tuple(logits.shape)}."
                )
            logits = logits + (bias.reshape(()) if bias.numel() == 1 else bias)
        signs = -torch.ones_like(logits)
        rows = torch.arange(image.shape[0], device=logits.device)
        signs[rows, local_targets(image.shape[0], sizes, logits.device)] = 1.0
        loss = -F.logsigmoid(signs * logits).sum() / image.shape[0]
        with torch.no_grad():
            positive = logits[rows, local_targets(image.shape[0], sizes, logits.device)].mean()
        return LossOutput(
            loss,
            {"logit_scale": scale.detach(), "mean_positive_logit": positive},
        )
