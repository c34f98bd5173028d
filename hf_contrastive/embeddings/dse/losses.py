"""The DSE objective: the task loss mixed with the squared distance to a cross-encoder teacher's logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

DSE_CITATION = """@inproceedings{barkan2020dse,
  title     = {Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding},
  author    = {Barkan, Oren and Razin, Noam and Malkiel, Itzik and Katz, Ori and Caciularu, Avi and Koenigstein, Noam},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2020},
  note      = {arXiv:1908.05161}
}"""


class DSELoss(ContrastiveLoss):
    r"""`(1 - a) * task_loss + a * mean_i sum_k (y_ik - z_ik)^2` (Barkan et al. 2019).

    `y` are the student's outputs, `z` the teacher's logits for the same pairs, `a` the distillation weight.
    The task loss is the mean squared error to the gold scores (`task="regression"`, outputs of shape `[B]`)
    or the cross-entropy to the gold classes (`task="classification"`, outputs of shape `[B, C]`). The
    squared distance is summed over the outputs of a pair and averaged over the batch (for regression it is
    the mean squared error to the teacher's scores). The teacher's logits must live in the student's output
    space: for regression, a teacher that predicts the same scores (a sequence-classification model with one
    label trained with MSE on them).

    Args:
        distill_weight (`float`, *optional*, defaults to 0.5):
            `a`, in [0, 1]: 0 trains on the labels alone, 1 on the teacher alone (the paper's 0.5).
        task (`str`, *optional*, defaults to `"regression"`):
            `"regression"` or `"classification"`.
    """

    citation = DSE_CITATION

    def __init__(self, distill_weight: float = 0.5, task: str = "regression") -> None:
        super().__init__()
        if isinstance(distill_weight, bool) or not isinstance(distill_weight, (int, float)):
            raise TypeError(f"distill_weight must be a number in [0, 1], got {distill_weight!r}.")
        if not 0.0 <= float(distill_weight) <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight!r}.")
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
        self.distill_weight = float(distill_weight)
        self.task = task

    def config_dict(self) -> dict[str, Any]:
        return {"distill_weight": self.distill_weight, "task": self.task}

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> LossOutput:
        """The objective on one batch.

        Args:
            student_logits (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`): the student.
            teacher_logits (`torch.Tensor`, same shape): the teacher's logits for the same pairs.
            labels (`torch.Tensor` of shape `(batch_size,)`): gold scores (regression) or class ids.

        Returns:
            [`LossOutput`] with the components `task_loss` and `distill_loss`.
        """
        owner = type(self).__name__
        regression = self.task == "regression"
        want_dim = 1 if regression else 2
        if student_logits.dim() != want_dim:
            raise ValueError(
                f"{owner}: task={self.task!r} expects student outputs of shape "
                f"{'[B]' if regression else '[B, num_labels]'}, got {tuple(student_logits.shape)}."
            )
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"{owner}: the teacher's logits have shape {tuple(teacher_logits.shape)} but the student's outputs "
                f"{tuple(student_logits.shape)}; the teacher must score the pairs in the student's output space."
            )
        if labels.shape != student_logits.shape[:1]:
            raise ValueError(
                f"{owner}: labels must have shape [{student_logits.shape[0]}], got {tuple(labels.shape)}."
            )
        student = (
            student_logits.float()
            if student_logits.dtype in (torch.float16, torch.bfloat16)
            else student_logits
        )
        teacher = teacher_logits.to(student.dtype)
        self._check_finite(student_logits=student, teacher_logits=teacher)
        if regression:
            task_loss = F.mse_loss(student, labels.to(student.dtype))
            distill = (student - teacher).pow(2).mean()
        else:
            task_loss = F.cross_entropy(student, labels.long())
            distill = (student - teacher).pow(2).sum(dim=-1).mean()
        a = self.distill_weight
        loss = (1.0 - a) * task_loss + a * distill
        return LossOutput(
            loss=loss, components={"task_loss": task_loss.detach(), "distill_loss": distill.detach()}
        )


__all__ = ["DSELoss", "DSE_CITATION"]
