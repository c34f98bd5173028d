"""Encoder pretraining and classification fine-tuning tricks (Vega v1): replaced-token-detection pretraining with an
optional SimCSE-style sentence term, and fine-tuning with FreeLB / SMART adversarial perturbations and EMA
self-distillation.

Importing this wing registers `RTDConfig` / `RTDForPreTraining` with the Auto classes.
"""

from hf_contrastive.classification.adversarial import (
    initial_perturbation,
    normalized_ascent,
    project_perturbation,
    symmetric_kl,
)
from hf_contrastive.classification.rtd import RTDCollator, RTDConfig, RTDForPreTraining, RTDOutput
from hf_contrastive.classification.trainer import (
    ClassificationTrainer,
    ClassificationTricksConfig,
    classification_metrics,
)
from hf_contrastive.core.configuration import register_auto_classes

register_auto_classes(RTDConfig, RTDForPreTraining)

__all__ = [
    "ClassificationTrainer",
    "ClassificationTricksConfig",
    "RTDCollator",
    "RTDConfig",
    "RTDForPreTraining",
    "RTDOutput",
    "classification_metrics",
    "initial_perturbation",
    "normalized_ascent",
    "project_perturbation",
    "symmetric_kl",
]
