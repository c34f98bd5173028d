"""Continual (class-incremental) contrastive learning: COCONUT's task schedule, rehearsal buffer, NSPT and
input-label losses, and the [`ContinualTrainer`] that learns the tasks in turn and measures forgetting."""

from hf_contrastive.continual.buffer import RehearsalBuffer, herding_order
from hf_contrastive.continual.evaluation import continual_metrics
from hf_contrastive.continual.losses import InputLabelContrastiveLoss, NSPTLoss, distillation_loss
from hf_contrastive.continual.schedule import TaskSchedule
from hf_contrastive.continual.trainer import (
    ContinualConfig,
    ContinualHeads,
    ContinualTrainer,
    humanize_label,
    output_features,
)

__all__ = [
    "ContinualConfig",
    "ContinualHeads",
    "ContinualTrainer",
    "InputLabelContrastiveLoss",
    "NSPTLoss",
    "RehearsalBuffer",
    "TaskSchedule",
    "continual_metrics",
    "distillation_loss",
    "herding_order",
    "humanize_label",
    "output_features",
]
