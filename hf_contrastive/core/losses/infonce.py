"""InfoNCE / multiple-negatives ranking with hard negatives, cross-device negatives and
false-negative masking against a frozen reference encoder."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hf_contrastive.core import distributed
from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput, check_2d, resolve_scale, upcast

__all__ = ["InfoNCELoss", "MultipleNegativesRankingLoss"]

Similarity = Literal["cosine", "dot"]

_INFONCE_CITATION = """@article{oord2018representation,
  title   = {Representation Learning with Contrastive Predictive Coding},
  author  = {van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  journal = {arXiv preprint arXiv:1807.03748},
  year    = {2018}
}
@article{henderson2017efficient,
  title   = {Efficient Natural Language Response Suggestion for Smart Reply},
  author  = {Henderson, Matthew and Al-Rfou, Rami and Strope, Brian and Sung, Yun-Hsuan and
             Luk{\\'a}cs, L{\\'a}szl{\\'o} and Guo, Ruiqi and Kumar, Sanjiv and Miklos, Balint and
             Kurzweil, Ray},
  journal = {arXiv preprint arXiv:1705.00652},
  year    = {2017}
}"""


class InfoNCELoss(ContrastiveLoss):
    r"""InfoNCE over in-batch negatives (also known as multiple-negatives ranking loss, MNRL).

    For anchor :math:`a_i` with positive :math:`p_i`, every other row's positive and every
    row's hard negatives are negatives:

    .. math::
        \ell_i = -\log \frac{e^{s(a_i, p_i)/\tau}}
                 {e^{s(a_i, p_i)/\tau} + \sum_{j \ne i} e^{s(a_i, p_j)/\tau}
                  + \sum_{j, n} e^{s(a_i, q_{j,n})/\tau + w\,[j = i]}}

    where :math:`q_{j,n}` is hard negative `n` of row `j` and :math:`w` is
    `hard_negative_weight` (a logit bonus on the anchor's *own* hard negatives, as in
    supervised SimCSE; 0 by default). The loss is the mean of :math:`\ell_i` over the local
    anchors. With `symmetric=True` the positive->anchor term (each positive against all
    anchors) is added and the two directions are averaged, as in symmetric InfoNCE / CLIP.

    With several positives per anchor (`positive` of shape `[B, P, D]`) each positive
    gives one term whose denominator holds that positive and all negatives (the anchor's other
    positives are left out: they are not negatives); terms are averaged over `B * P`.

    **Cross-device negatives.** When `torch.distributed` runs `W > 1` processes (and
    `gather_across_devices` is not `False`), anchors, positives and negatives of every
    process are gathered with gradient ([`hf_contrastive.core.distributed.gather_with_grad`])
    so each anchor sees `W` times more negatives. The local loss stays the mean over local
    anchors; DDP's gradient averaging then reproduces the single-process gradient on the
    concatenated batch (see `hf_contrastive.core.distributed` for the convention, including
    unequal batch sizes).

    **False-negative masking (MultiCSR).** With `false_negative_threshold=phi` the loss
    needs embeddings of the same rows from a frozen reference encoder (`reference_*`
    arguments, computed under `torch.no_grad`). Every candidate whose reference cosine with
    the anchor exceeds `phi` is removed from that anchor's denominator (the anchor's own
    positives are never removed). Reference embeddings are gathered with the others.

    Paper: van den Oord et al. 2018 (InfoNCE); Henderson et al. 2017 (in-batch negatives);
    Gao et al. 2021 (SimCSE: tau = 0.05, hard-negative weight); Wang et al. 2023 (MultiCSR:
    phi = 0.95).

    Args:
        temperature (`float | None`, *optional*): softmax temperature :math:`\tau` (default 0.05). Give this or `scale`.
        scale (`float | None`, *optional*): `1 / temperature` (20 when neither is given), the sentence-transformers spelling.
        similarity (`Similarity`, *optional*, defaults to `"cosine"`): `"cosine"` (default; embeddings are L2-normalised) or `"dot"`.
        learnable_scale (`bool`, *optional*, defaults to `False`): learn the scale (stored as its log, initialised from
            `temperature`/`scale`), clamped to `[min_scale, max_scale]`. The parameter
            belongs to this module: add it to the optimiser (and to the DDP-wrapped module).
        min_scale, max_scale: clamp of a learnable scale (defaults 1 and 100, i.e. temperature in
            [0.01, 1], as CLIP).
        hard_negative_weight (`float`, *optional*, defaults to `0.0`): additive logit bonus on each anchor's own hard negatives (default 0).
        symmetric (`bool`, *optional*, defaults to `False`): also add the positive->anchor term and average the two (default False).
        gather_across_devices (`bool | None`, *optional*): `None` (default): gather when distributed with more than one
            process; `False`: never; `True`: whenever distributed.
        false_negative_threshold (`float | None`, *optional*): `phi` of MultiCSR; `None` (default) disables masking.

    Inputs:

        =========================================  =============================  ==================
        argument                                   shape                          required
        =========================================  =============================  ==================
        `anchor`                                 `[B, D]`                     yes
        `positive`                               `[B, D]` or `[B, P, D]`    yes
        `negatives` (hard negatives)             `[B, N, D]` or `[B, D]`    no (N >= 0)
        `reference_anchor`                       `[B, D_ref]`                 with masking
        `reference_positive`                     like `positive`, `D_ref`   with masking
        `reference_negatives`                    like `negatives`, `D_ref`  with masking, N > 0
        =========================================  =============================  ==================

    Returns:
        [`LossOutput`] with components `infonce` (anchor->positive term),
        `infonce_sym` (positive->anchor, when symmetric), `acc` (fraction of local anchors
        whose positive out-scores every unmasked negative), `scale` (when learnable) and
        `masked` (mean number of candidates removed per anchor, when masking).

    Raises:
        ValueError: temperature/scale <= 0, shapes that do not fit together, NaN/inf inputs,
            or no negative at all (one anchor in the whole batch and no hard negatives).

    Example::

        loss_fn = InfoNCELoss(temperature=0.05)
        out = loss_fn(anchor_emb, positive_emb, negatives=hard_neg_emb)  # [B,D], [B,D], [B,N,D]
        out.loss.backward()
    """

    citation = _INFONCE_CITATION
    _component = "infonce"

    def __init__(
        self,
        temperature: float | None = None,
        scale: float | None = None,
        similarity: Similarity = "cosine",
        learnable_scale: bool = False,
        min_scale: float = 1.0,
        max_scale: float = 100.0,
        hard_negative_weight: float = 0.0,
        symmetric: bool = False,
        gather_across_devices: bool | None = None,
        false_negative_threshold: float | None = None,
    ) -> None:
        super().__init__()
        init_scale = resolve_scale(temperature, scale, default_temperature=0.05)
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if not (0 < min_scale <= max_scale):
            raise ValueError(
                f"need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}"
            )
        if learnable_scale and not (min_scale <= init_scale <= max_scale):
            raise ValueError(
                f"initial scale {init_scale:g} (temperature {1 / init_scale:g}) lies outside "
                f"[min_scale, max_scale] = [{min_scale:g}, {max_scale:g}]"
            )
        if not math.isfinite(hard_negative_weight):
            raise ValueError(f"hard_negative_weight must be finite, got {hard_negative_weight!r}")
        if false_negative_threshold is not None and not (-1.0 <= false_negative_threshold <= 1.0):
            raise ValueError(
                f"false_negative_threshold is a cosine similarity in [-1, 1], got {false_negative_threshold!r}"
            )
        self.similarity = similarity
        self.learnable_scale = learnable_scale
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.hard_negative_weight = float(hard_negative_weight)
        self.symmetric = symmetric
        self.gather_across_devices = gather_across_devices
        self.false_negative_threshold = false_negative_threshold
        if learnable_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale), dtype=torch.float32))
        else:
            self.register_buffer("log_scale", torch.tensor(math.log(init_scale), dtype=torch.float32))
        self._init_scale = init_scale

    # -- properties -----------------------------------------------------------------------
    def current_scale(self) -> torch.Tensor:
        """The scale in use (a tensor with gradient when learnable)."""
        if self.learnable_scale:
            return self.log_scale.exp().clamp(self.min_scale, self.max_scale)
        return self.log_scale.exp()

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.current_scale().detach())

    def config_dict(self) -> dict[str, Any]:
        return {
            "temperature": 1.0 / self._init_scale,
            "scale": self._init_scale,
            "similarity": self.similarity,
            "learnable_scale": self.learnable_scale,
            **({"min_scale": self.min_scale, "max_scale": self.max_scale} if self.learnable_scale else {}),
            "hard_negative_weight": self.hard_negative_weight,
            "symmetric": self.symmetric,
            "gather_across_devices": "auto"
            if self.gather_across_devices is None
            else self.gather_across_devices,
            "false_negative_threshold": self.false_negative_threshold,
        }

    # -- input handling ---------------------------------------------------------------------
    def _validate(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor | None,
        reference_anchor: torch.Tensor | None,
        reference_positive: torch.Tensor | None,
        reference_negatives: torch.Tensor | None,
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    ]:
        owner = type(self).__name__
        check_2d("anchor", anchor, owner)
        batch, dim = anchor.shape
        if batch == 0 and not self._resolve_gather(self.gather_across_devices):
            # (when gathering, an empty rank still takes part in the collectives and returns 0)
            raise ValueError(f"{owner}: empty batch (anchor shape {tuple(anchor.shape)})")
        given = (positive, negatives)
        positive = _as_3d("positive", positive, batch, dim, owner)
        if negatives is None:
            negatives = anchor.new_zeros((batch, 0, dim))
        negatives = _as_3d("negatives", negatives, batch, dim, owner)
        if positive.shape[1] == 0:
            raise ValueError(
                f"{owner}: positive has shape {tuple(positive.shape)}: at least one positive per anchor"
            )

        refs = None
        given_refs = [r is not None for r in (reference_anchor, reference_positive, reference_negatives)]
        if self.false_negative_threshold is not None:
            if reference_anchor is None or reference_positive is None:
                raise ValueError(
                    f"{owner}: false_negative_threshold={self.false_negative_threshold} needs reference_anchor "
                    "and reference_positive (embeddings of the same rows from the frozen reference encoder)"
                )
            check_2d("reference_anchor", reference_anchor, owner)
            if reference_anchor.shape[0] != batch:
                raise ValueError(
                    f"{owner}: reference_anchor has shape {tuple(reference_anchor.shape)} but anchor has "
                    f"shape {tuple(anchor.shape)} (batch sizes differ)"
                )
            ref_dim = reference_anchor.shape[1]
            ref_pos = _as_3d("reference_positive", reference_positive, batch, ref_dim, owner)
            if ref_pos.shape[1] != positive.shape[1]:
                raise ValueError(
                    f"{owner}: reference_positive has shape {tuple(reference_positive.shape)} but positive has "
                    f"shape {tuple(positive.shape)} (number of positives differs)"
                )
            n_neg = negatives.shape[1]
            if reference_negatives is None:
                if n_neg > 0:
                    raise ValueError(
                        f"{owner}: masking with {n_neg} hard negative(s) per anchor needs reference_negatives "
                        f"of shape [{batch}, {n_neg}, D_ref]"
                    )
                ref_neg = reference_anchor.new_zeros((batch, 0, ref_dim))
            else:
                ref_neg = _as_3d("reference_negatives", reference_negatives, batch, ref_dim, owner)
                if ref_neg.shape[1] != n_neg:
                    raise ValueError(
                        f"{owner}: reference_negatives has shape {tuple(reference_negatives.shape)} but negatives "
                        f"has shape {tuple(negatives.shape)} (number of hard negatives differs)"
                    )
            refs = (reference_anchor.detach(), ref_pos.detach(), ref_neg.detach())
        elif any(given_refs):
            raise ValueError(
                f"{owner}: reference embeddings were given but false_negative_threshold is None; "
                "set it (MultiCSR uses 0.95) or stop passing reference_*"
            )
        # report NaN/inf against the shapes the caller passed
        self._check_finite(
            anchor=anchor,
            positive=given[0],
            negatives=given[1],
            reference_anchor=reference_anchor if refs else None,
            reference_positive=reference_positive if refs else None,
            reference_negatives=reference_negatives if refs else None,
        )
        return anchor, positive, negatives, refs

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        reference_anchor: torch.Tensor | None = None,
        reference_positive: torch.Tensor | None = None,
        reference_negatives: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss; see the class docstring for shapes."""
        anchor, positive, negatives, refs = self._validate(
            anchor, positive, negatives, reference_anchor, reference_positive, reference_negatives
        )
        batch, n_pos, dim = positive.shape
        n_neg = negatives.shape[1]

        # fp32 logits: softmax over thousands of scaled similarities in half precision loses
        # the positive's mass.
        anchor, positive, negatives = upcast(anchor), upcast(positive), upcast(negatives)
        dtype = torch.promote_types(torch.promote_types(anchor.dtype, positive.dtype), negatives.dtype)
        anchor, positive, negatives = anchor.to(dtype), positive.to(dtype), negatives.to(dtype)
        if self.similarity == "cosine":
            anchor = F.normalize(anchor, dim=-1)
            positive = F.normalize(positive, dim=-1)
            negatives = F.normalize(negatives, dim=-1)
        if refs is not None:
            refs = tuple(F.normalize(upcast(r), dim=-1).to(dtype) for r in refs)

        # ---- gather every process's rows (one collective for the shapes, one for the data) ----
        offset, total = 0, batch
        all_anchor, all_pos, all_neg, all_refs = anchor, positive, negatives, refs
        if self._resolve_gather(self.gather_across_devices):
            ref_dim = refs[0].shape[1] if refs is not None else 0
            info = distributed.all_gather_sizes(
                [batch, n_pos, n_neg, dim, ref_dim], device=distributed.collective_device(anchor)
            )
            if len({tuple(i[1:]) for i in info}) > 1:
                found = "; ".join(
                    f"rank {r}: P={i[1]}, N={i[2]}, D={i[3]}, D_ref={i[4]}" for r, i in enumerate(info)
                )
                raise ValueError(
                    f"{type(self).__name__}: every process must have the same number of positives, hard "
                    f"negatives and the same embedding sizes to gather; found {found}"
                )
            sizes = [i[0] for i in info]
            offset, total = sum(sizes[: distributed.rank()]), sum(sizes)
            parts = [anchor, positive.flatten(1), negatives.flatten(1)]
            if refs is not None:
                parts += [refs[0], refs[1].flatten(1), refs[2].flatten(1)]
            packed = distributed.gather_with_grad(torch.cat(parts, dim=1), sizes=sizes)
            widths = [dim, n_pos * dim, n_neg * dim]
            if refs is not None:
                widths += [ref_dim, n_pos * ref_dim, n_neg * ref_dim]
            pieces = packed.split(widths, dim=1)
            all_anchor = pieces[0]
            all_pos = pieces[1].reshape(total, n_pos, dim)
            all_neg = pieces[2].reshape(total, n_neg, dim)
            if refs is not None:
                all_refs = (
                    pieces[3],
                    pieces[4].reshape(total, n_pos, ref_dim),
                    pieces[5].reshape(total, n_neg, ref_dim),
                )

        n_candidates_negative = (total - 1) * n_pos + total * n_neg
        if n_candidates_negative == 0:
            raise ValueError(
                f"{type(self).__name__}: no negatives: the batch has a single anchor"
                f"{' across all processes' if total != batch else ''} and no hard negatives, so the "
                "softmax has only the positive. Use a batch size > 1 or give hard negatives. A duplicate-free "
                "batch sampler (no_duplicates) moves rows that repeat a text to later batches, which can leave "
                "a 1-row batch at the end of an epoch: remove duplicate rows, or give it min_batch_size=2."
            )

        scale = self.current_scale().to(dtype)
        device = anchor.device
        rows = torch.arange(batch, device=device)
        global_rows = rows + offset

        # Candidate columns: [all positives (row-major, total*P) | all hard negatives (total*N)].
        # The positive p of global row g sits at column g*P + p; hard negative n of row g at
        # total*P + g*N + n. Keeping every positive ahead of every negative makes the label
        # offset independent of the number of hard negatives.
        candidates = torch.cat([all_pos.reshape(total * n_pos, dim), all_neg.reshape(total * n_neg, dim)])
        logits = anchor @ candidates.T * scale  # [B, total*(P+N)]

        own_neg_cols = None
        if n_neg > 0:
            own_neg_cols = total * n_pos + global_rows[:, None] * n_neg + torch.arange(n_neg, device=device)
            if self.hard_negative_weight != 0.0:
                bonus = torch.zeros_like(logits)
                bonus[rows[:, None], own_neg_cols] = self.hard_negative_weight
                logits = logits + bonus

        own_pos_cols = global_rows[:, None] * n_pos + torch.arange(n_pos, device=device)  # [B, P]
        negative_mask = torch.ones_like(logits, dtype=torch.bool)
        negative_mask[rows[:, None], own_pos_cols] = False

        components: dict[str, torch.Tensor] = {}
        if all_refs is not None:
            ref_dim = refs[0].shape[1]
            ref_candidates = torch.cat(
                [all_refs[1].reshape(total * n_pos, ref_dim), all_refs[2].reshape(total * n_neg, ref_dim)]
            )
            ref_sim = refs[0] @ ref_candidates.T
            false_neg = (ref_sim > self.false_negative_threshold) & negative_mask
            negative_mask = negative_mask & ~false_neg
            components["masked"] = _safe_mean(false_neg.sum(dim=1).float()).detach()

        pos_logits = logits.gather(1, own_pos_cols)  # [B, P]
        loss_a2p, acc = _multi_positive_nce(pos_logits, logits, negative_mask)
        components[self._component] = loss_a2p.detach()
        components["acc"] = acc
        loss = loss_a2p

        if self.symmetric:
            # Each local positive against every anchor of the (gathered) batch.
            flat_pos = positive.reshape(batch * n_pos, dim)
            sym_logits = flat_pos @ all_anchor.T * scale  # [B*P, total]
            own_anchor = global_rows.repeat_interleave(n_pos)
            sym_mask = torch.ones_like(sym_logits, dtype=torch.bool)
            sym_mask[torch.arange(batch * n_pos, device=device), own_anchor] = False
            if all_refs is not None:
                ref_sym = refs[1].reshape(batch * n_pos, refs[1].shape[-1]) @ all_refs[0].T
                sym_mask = sym_mask & ~(ref_sym > self.false_negative_threshold)
            sym_pos = sym_logits.gather(1, own_anchor[:, None])
            loss_p2a, _ = _multi_positive_nce(sym_pos, sym_logits, sym_mask)
            components[f"{self._component}_sym"] = loss_p2a.detach()
            loss = (loss_a2p + loss_p2a) / 2

        if self.learnable_scale:
            components["scale"] = scale.detach()
        return LossOutput(loss=loss, components=components)


def _multi_positive_nce(
    pos_logits: torch.Tensor, logits: torch.Tensor, negative_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over rows and positives of `-log softmax` of each positive against the negatives.

    `pos_logits`: `[R, P]`; `logits`: `[R, C]`; `negative_mask`: `[R, C]`, True
    where the column is a negative for the row. Returns (loss, accuracy).
    """
    # A finite floor instead of -inf: a row whose negatives are all masked would otherwise give
    # logsumexp(-inf...) = -inf and a NaN gradient.
    floor = torch.finfo(logits.dtype).min
    neg_logits = logits.masked_fill(~negative_mask, floor)
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)  # [R, 1]
    per_term = torch.logaddexp(pos_logits, neg_lse) - pos_logits  # [R, P]
    best_neg = neg_logits.max(dim=1).values
    if pos_logits.shape[0] == 0:  # a rank with no local rows while gathering
        return per_term.sum() + 0.0 * logits.sum(), pos_logits.new_zeros(()).detach()
    acc = (pos_logits.max(dim=1).values > best_neg).float().mean().detach()
    return per_term.mean(), acc


def _safe_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean() if t.numel() else t.new_zeros(())


def _as_3d(name: str, t: torch.Tensor, batch: int, dim: int, owner: str) -> torch.Tensor:
    """`[B, D]` -> `[B, 1, D]`; check `[B, K, D]` against the anchor's `B` and `D`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    found = tuple(t.shape)
    if t.dim() == 2:
        t = t.unsqueeze(1)
    if t.dim() != 3 or t.shape[0] != batch or t.shape[2] != dim:
        raise ValueError(
            f"{owner}: {name} must have shape [{batch}, {dim}] or [{batch}, K, {dim}] to match the anchor "
            f"[B={batch}, D={dim}], got shape {found}"
        )
    return t


class MultipleNegativesRankingLoss(InfoNCELoss):
    """Sentence-transformers' name for [`InfoNCELoss`]: same objective, same defaults
    (`scale=20`, cosine similarity); kept so configurations written for that library read
    naturally. Gathering across devices is on by default here too."""
