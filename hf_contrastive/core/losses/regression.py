"""Regression of embeddings (or of their similarity) onto targets, for distillation."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, upcast

__all__ = ["EmbeddingRegressionLoss"]

_REGRESSION_CITATION = """@inproceedings{reimers2020multilingual,
  title     = {Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation},
  author    = {Reimers, Nils and Gurevych, Iryna},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing},
  pages     = {4512--4525},
  year      = {2020}
}
@article{barkan2019dse,
  title   = {Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding},
  author  = {Barkan, Oren and Razin, Noam and Malkiel, Itzik and Katz, Ori and Caciularu, Avi and
             Koenigstein, Noam},
  journal = {arXiv preprint arXiv:1908.05161},
  year    = {2019}
}"""


class EmbeddingRegressionLoss(ContrastiveLoss):
    r"""Regress student embeddings onto teacher/target embeddings, or pair similarities onto scores.

    Two modes, picked by the keyword given to `forward`:

    * `target_embeddings`: `objective="mse"` gives the mean squared error over all
      elements (Reimers & Gurevych 2020, multilingual distillation); `objective="cosine"`
      gives the mean of `1 - cos(student, target)` (direction only).
    * `scores`: the cosine (or dot product) of `anchor` and `positive` is regressed
      onto the target scores with mean squared error (teacher scores of a cross-encoder, as in
      DSE, Barkan et al. 2019; or gold similarities rescaled to the similarity's range).

    Inputs:

        ======================  =============================  ======================================
        argument                shape                          mode
        ======================  =============================  ======================================
        `anchor`              `[B, D]`                     both (the student's embeddings)
        `target_embeddings`   `[B, D]`                     embeddings (teacher output, no grad)
        `positive`            `[B, D]`                     scores (second sentence of each pair)
        `scores`              `[B]`                        scores
        ======================  =============================  ======================================

    Args:
        objective (`Literal['mse', 'cosine']`, *optional*, defaults to `"mse"`): `"mse"` (default) or `"cosine"`, for embedding targets.
        similarity (`Literal['cosine', 'dot']`, *optional*, defaults to `"cosine"`): `"cosine"` (default) or `"dot"`, for score targets.

    Returns:
        [`LossOutput`] with component `mse` or `cosine_distance` (embedding mode) or
        `score_mse` (score mode).
    """

    citation = _REGRESSION_CITATION

    def __init__(
        self, objective: Literal["mse", "cosine"] = "mse", similarity: Literal["cosine", "dot"] = "cosine"
    ) -> None:
        super().__init__()
        if objective not in ("mse", "cosine"):
            raise ValueError(f"objective must be 'mse' or 'cosine', got {objective!r}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        self.objective = objective
        self.similarity = similarity

    def config_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "similarity": self.similarity}

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor | None = None,
        *,
        target_embeddings: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> LossOutput:
        owner = type(self).__name__
        check_2d("anchor", anchor, owner)
        if (target_embeddings is None) == (scores is None):
            raise ValueError(f"{owner}: give exactly one of target_embeddings= or scores=")
        if target_embeddings is not None:
            if positive is not None:
                raise ValueError(f"{owner}: positive is only used with scores=, not with target_embeddings=")
            if target_embeddings.shape != anchor.shape:
                raise ValueError(
                    f"{owner}: target_embeddings must have the anchor's shape {tuple(anchor.shape)}, got "
                    f"{tuple(target_embeddings.shape)}"
                )
            student = upcast(anchor)
            target = target_embeddings.detach().to(student.dtype)
            self._check_finite(anchor=anchor, target_embeddings=target)
            if self.objective == "mse":
                loss = F.mse_loss(student, target)
                name = "mse"
            else:
                loss = (1.0 - F.cosine_similarity(student, target, dim=-1)).mean()
                name = "cosine_distance"
            return LossOutput(loss=loss, components={name: loss.detach()})

        if positive is None:
            raise ValueError(f"{owner}: scores= needs positive (the second embedding of each pair)")
        check_2d("positive", positive, owner)
        if positive.shape != anchor.shape:
            raise ValueError(
                f"{owner}: anchor and positive must have the same shape, got {tuple(anchor.shape)} and "
                f"{tuple(positive.shape)}"
            )
        scores = torch.as_tensor(scores, device=anchor.device)
        if scores.numel() != anchor.shape[0]:
            raise ValueError(
                f"{owner}: expected one score per pair ({anchor.shape[0]}), got scores of shape {tuple(scores.shape)}"
            )
        scores = scores.reshape(-1).to(upcast(anchor).dtype)
        self._check_finite(anchor=anchor, positive=positive, scores=scores)
        if self.similarity == "cosine":
            pred = F.cosine_similarity(upcast(anchor), upcast(positive), dim=-1)
        else:
            pred = (upcast(anchor) * upcast(positive)).sum(-1)
        loss = F.mse_loss(pred, scores)
        return LossOutput(loss=loss, components={"score_mse": loss.detach()})
