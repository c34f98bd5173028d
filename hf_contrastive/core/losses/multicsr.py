"""MultiCSR (Wang et al. 2023): supervised SimCSE with false negatives removed by a frozen encoder."""

from __future__ import annotations

from hf_contrastive.core.losses.infonce import InfoNCELoss

__all__ = ["MultiCSRLoss"]

_MULTICSR_CITATION = """@article{wang2023multicsr,
  title   = {Large Language Models can Contrastively Refine their Generation for Better
             Sentence Representation Learning},
  author  = {Wang, Huiming and Li, Zhaodonghui and Cheng, Liying and Soh, De Wen and Bing, Lidong},
  journal = {arXiv preprint arXiv:2310.10962},
  year    = {2023}
}"""


class MultiCSRLoss(InfoNCELoss):
    r"""Supervised SimCSE with MultiCSR's in-batch refinement.

    A frozen reference encoder embeds the same rows (under `torch.no_grad`, done by the
    trainer); for every anchor, each in-batch candidate (another row's positive, any hard
    negative, gathered rows included) whose reference cosine with the anchor is above
    `phi` is treated as a false negative and dropped from that anchor's denominator. The
    anchor's own positive is never dropped. Temperature 0.05, phi 0.95 (Wang et al. 2023).

    Inputs:

        ==========================  ================================  ===========================
        argument                    shape                             meaning
        ==========================  ================================  ===========================
        `anchor`                  `[B, D]`                        premise
        `positive`                `[B, D]` or `[B, P, D]`       entailment(s)
        `negatives`               `[B, N, D]` or `[B, D]`       contradiction(s), optional
        `reference_anchor`        `[B, D_ref]`                    frozen encoder, anchor rows
        `reference_positive`      like `positive` with `D_ref`  frozen encoder, positives
        `reference_negatives`     like `negatives`                frozen encoder, negatives
        ==========================  ================================  ===========================

    Args:
        phi (`float`, *optional*, defaults to `0.95`): cosine threshold above which a candidate counts as a false negative (0.95).
        temperature (`float`, *optional*, defaults to `0.05`): 0.05. Other arguments as [`InfoNCELoss`].
    """

    citation = _MULTICSR_CITATION

    def __init__(self, phi: float = 0.95, temperature: float = 0.05, **kwargs) -> None:
        super().__init__(temperature=temperature, false_negative_threshold=phi, **kwargs)

    @property
    def phi(self) -> float:
        return float(self.false_negative_threshold)
