"""SimCSE objectives (Gao et al. 2021): unsupervised (dropout views) and supervised (NLI triples)."""

from __future__ import annotations

from typing import Literal

import torch

from hf_contrastive.core.losses.base import LossOutput
from hf_contrastive.core.losses.infonce import InfoNCELoss

__all__ = ["SupervisedSimCSELoss", "UnsupervisedSimCSELoss", "split_views"]

_SIMCSE_CITATION = """@inproceedings{gao2021simcse,
  title     = {{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
  author    = {Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
  booktitle = {Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing},
  pages     = {6894--6910},
  year      = {2021}
}"""


def split_views(
    embeddings: torch.Tensor, layout: Literal["concat", "interleaved"] = "concat"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the `[2B, D]` output of one forward over two copies of a batch into `(z1, z2)`.

    `layout="concat"`: rows `0..B-1` are view 1 and `B..2B-1` view 2 (input built as
    `cat([batch, batch])`). `layout="interleaved"`: rows alternate (`x0, x0, x1, x1, ...`,
    the original SimCSE `[B, 2, L] -> [2B, L]` reshaping).
    """
    if embeddings.dim() != 2 or embeddings.shape[0] % 2:
        raise ValueError(
            f"split_views expects [2B, D] embeddings with an even number of rows, got shape {tuple(embeddings.shape)}"
        )
    if layout == "concat":
        z1, z2 = embeddings.chunk(2, dim=0)
        return z1, z2
    if layout == "interleaved":
        return embeddings[0::2], embeddings[1::2]
    raise ValueError(f"layout must be 'concat' or 'interleaved', got {layout!r}")


class UnsupervisedSimCSELoss(InfoNCELoss):
    r"""Unsupervised SimCSE: each sentence's positive is the same sentence under another dropout mask.

    The two views `z1, z2` (`[B, D]` each) come from encoding the same batch twice in
    training mode. A trainer does that in **one** forward of `2B` rows (``cat([batch,
    batch])``, then [`split_views`]) so dropout draws independent masks per row and the
    backbone runs once. The loss is InfoNCE with `z2` as positives and the other rows' `z2`
    as negatives, cosine similarity, temperature 0.05 (Gao et al. 2021, table D.1).

    Inputs:

        ===========  ==========  ==========================================
        argument     shape       meaning
        ===========  ==========  ==========================================
        `z1`       `[B, D]`  first dropout view (anchors)
        `z2`       `[B, D]`  second dropout view of the same rows
        ===========  ==========  ==========================================

    Args:
        temperature (`float`, *optional*, defaults to `0.05`): 0.05 (default). Other arguments as [`InfoNCELoss`] (cross-device
            gathering on when distributed; `symmetric` off as in the paper).

    Example::

        loss_fn = UnsupervisedSimCSELoss()
        z = model(**tokenised_twice).embeddings  # [2B, D]
        out = loss_fn(*split_views(z))
    """

    citation = _SIMCSE_CITATION
    _component = "simcse"

    def __init__(self, temperature: float = 0.05, **kwargs) -> None:
        super().__init__(temperature=temperature, **kwargs)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, **kwargs) -> LossOutput:  # type: ignore[override]
        """`z1`, `z2`: `[B, D]` dropout views; extra keyword arguments go to [`InfoNCELoss`]."""
        return super().forward(z1, z2, **kwargs)

    def forward_stacked(
        self, embeddings: torch.Tensor, layout: Literal["concat", "interleaved"] = "concat"
    ) -> LossOutput:
        """Loss from the `[2B, D]` output of one forward over the doubled batch."""
        return self.forward(*split_views(embeddings, layout))


class SupervisedSimCSELoss(InfoNCELoss):
    r"""Supervised SimCSE on NLI triples (premise, entailment, contradiction).

    The entailment is the positive; each anchor's contradiction is a hard negative that joins
    the denominator of *every* anchor, and `hard_negative_weight` is added to the logit of
    the anchor's own hard negative (the paper's weight, 0 by default). Cosine similarity,
    temperature 0.05 (Gao et al. 2021).

    Inputs:

        ==============  ================================  =============================
        argument        shape                             meaning
        ==============  ================================  =============================
        `anchor`      `[B, D]`                        premise
        `positive`    `[B, D]`                        entailment hypothesis
        `negatives`   `[B, D]` or `[B, N, D]`       contradiction(s) (optional)
        ==============  ================================  =============================

    Args:
        temperature (`float`, *optional*, defaults to `0.05`): 0.05 (default).
        hard_negative_weight (`float`, *optional*, defaults to `0.0`): logit bonus on the own hard negative (default 0.0).
        Other arguments as [`InfoNCELoss`].
    """

    citation = _SIMCSE_CITATION
    _component = "simcse"

    def __init__(self, temperature: float = 0.05, hard_negative_weight: float = 0.0, **kwargs) -> None:
        super().__init__(temperature=temperature, hard_negative_weight=hard_negative_weight, **kwargs)
