"""COCONUT's losses: the negative-student / positive-teacher supervised contrast (NSPT) on rehearsal rows, the
input-label contrast, and logit distillation from the previous task's model."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = ["InputLabelContrastiveLoss", "NSPTLoss", "distillation_loss"]

COCONUT_CITATION = """@inproceedings{cappellazzo2024coconut,
  title     = {Continual Contrastive Spoken Language Understanding},
  author    = {Cappellazzo, Umberto and Fini, Enrico and Yang, Muqiao and Falavigna, Daniele and
               Brutti, Alessio and Raj, Bhiksha},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024}
}"""


def _check_temperature(temperature: float) -> float:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    return float(temperature)


def _check_rows(owner: str, labels: torch.Tensor, **tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(tensors.values()))
    if any(v.dim() != 2 or v.shape != first.shape for v in tensors.values()):
        raise ValueError(f"{owner}: {', '.join(tensors)} must all be [R, D] of one shape, got {shapes}.")
    if labels.shape != first.shape[:1]:
        raise ValueError(f"{owner}: labels must be [R] = [{first.shape[0]}], got {tuple(labels.shape)}.")


class NSPTLoss(ContrastiveLoss):
    r"""Negative-student / positive-teacher supervised contrastive loss (COCONUT's NSPT) on rehearsal rows.

    For rehearsal row :math:`i` with student projection :math:`s_i` and label :math:`y_i`, the positives are the
    frozen previous-task model's projections :math:`t_p` of the rehearsal rows of the same class (row :math:`i`
    itself included), the negatives the *student's* projections :math:`s_n` of the rows of other classes, all
    L2-normalised:

    .. math::
        \mathcal{L} = -\frac{1}{|R|} \sum_{i \in R} \frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{e^{s_i \cdot t_p / \tau}}{\sum_{p' \in P(i)} e^{s_i \cdot t_{p'} / \tau}
        + \sum_{n \in N(i)} e^{s_i \cdot s_n / \tau}}

    The teacher pulls each old row towards where the previous model put its class, while old classes stay
    apart in the student's own space. The form above is the one the library's specification derives from the
    paper's abstract (the paper's exact form is not public): this is our reading.

    Args:
        temperature (`float`, *optional*, defaults to 0.1): :math:`\tau`.

    Inputs:

        ===========  ========  ==========================================================
        argument     shape     meaning
        ===========  ========  ==========================================================
        `student`    `[R, D]`  the trained model's projections of the rehearsal rows
        `teacher`    `[R, D]`  the frozen previous model's projections of the same rows
        `labels`     `[R]`     class index of each row
        ===========  ========  ==========================================================

    Returns:
        [`LossOutput`] with component `nspt` (a zero that keeps the graph when `R = 0`).
    """

    citation = COCONUT_CITATION

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        _check_rows(type(self).__name__, labels, student=student, teacher=teacher)
        if student.shape[0] == 0:
            zero = student.sum() * 0.0
            return LossOutput(loss=zero, components={"nspt": zero.detach()})
        self._check_finite(student=student, teacher=teacher)
        dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
        s = F.normalize(student.to(dtype), dim=-1)
        t = F.normalize(teacher.to(dtype), dim=-1)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)  # [R, R], diagonal True
        to_teacher = (s @ t.T) / self.temperature
        to_student = (s @ s.T) / self.temperature
        # Denominator: every same-class teacher projection and every other-class student projection.
        terms = torch.where(same, to_teacher, to_student)
        log_denominator = torch.logsumexp(terms, dim=1, keepdim=True)
        log_prob = to_teacher - log_denominator
        per_row = -(log_prob * same).sum(1) / same.sum(1)
        loss = per_row.mean()
        return LossOutput(loss=loss, components={"nspt": loss.detach()})


class InputLabelContrastiveLoss(ContrastiveLoss):
    r"""Contrast between inputs and the text of their class names (COCONUT's multimodal term, with label text in
    place of speech transcripts).

    Each input's projection :math:`z_i` is classified against the projected label-name embeddings
    :math:`e_c` of the candidate classes, all L2-normalised:
    :math:`\ell_i = -\log \frac{e^{z_i \cdot e_{y_i} / \tau}}{\sum_c e^{z_i \cdot e_c / \tau}}`, averaged over
    the rows. The paper contrasts audio with the text of the same utterance on new data; with text inputs the
    library contrasts each input with the name of its class, the other classes' names being the negatives
    (our reading).

    Args:
        temperature (`float`, *optional*, defaults to 0.1): :math:`\tau`.

    Inputs:

        ============  ========  ==================================================
        argument      shape     meaning
        ============  ========  ==================================================
        `inputs`      `[B, D]`  projected input features
        `label_emb`   `[C, D]`  projected embeddings of the candidate label names
        `targets`     `[B]`     index of each row's class among the `C` candidates
        ============  ========  ==================================================

    Returns:
        [`LossOutput`] with components `input_label` and `input_label_acc`.
    """

    citation = COCONUT_CITATION

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def forward(self, inputs: torch.Tensor, label_emb: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        if inputs.dim() != 2 or label_emb.dim() != 2 or inputs.shape[1] != label_emb.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: inputs [B, D] and label_emb [C, D] need the same D, got "
                f"{tuple(inputs.shape)} and {tuple(label_emb.shape)}."
            )
        if targets.shape != inputs.shape[:1]:
            raise ValueError(f"targets must be [B] = [{inputs.shape[0]}], got {tuple(targets.shape)}.")
        if inputs.shape[0] == 0:
            zero = inputs.sum() * 0.0 + label_emb.sum() * 0.0
            return LossOutput(loss=zero, components={"input_label": zero.detach()})
        if int(targets.min()) < 0 or int(targets.max()) >= label_emb.shape[0]:
            raise ValueError(f"targets must index the {label_emb.shape[0]} label embeddings.")
        self._check_finite(inputs=inputs, label_emb=label_emb)
        dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        logits = F.normalize(inputs.to(dtype), dim=-1) @ F.normalize(label_emb.to(dtype), dim=-1).T
        logits = logits / self.temperature
        loss = F.cross_entropy(logits, targets)
        acc = (logits.argmax(-1) == targets).to(dtype).mean()
        return LossOutput(
            loss=loss, components={"input_label": loss.detach(), "input_label_acc": acc.detach()}
        )


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    r"""Logit distillation from the previous task's model: :math:`T^2 \cdot \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\,
    \mathrm{softmax}(s/T))`, averaged over rows (Hinton et al. 2015; computed over the old classes' logits).

    Args:
        student_logits (`torch.Tensor` of shape `[B, C]`): the trained model's logits.
        teacher_logits (`torch.Tensor` of shape `[B, C]`): the frozen model's logits.
        temperature (`float`, *optional*, defaults to 2.0): :math:`T`.

    Returns:
        `torch.Tensor`: the scalar loss.
    """
    temperature = _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"student and teacher logits must be [B, C] of one shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}."
        )
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float().detach() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return kl * temperature**2
