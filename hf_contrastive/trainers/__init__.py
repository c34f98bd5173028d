"""Trainer subclasses and their TrainingArguments configs."""

from hf_contrastive.trainers.contrastive import LOSSES, ContrastiveConfig, ContrastiveTrainer, build_loss
from hf_contrastive.trainers.simctg import *  # noqa: F403

# -- relation extraction (TKRE) --
from hf_contrastive.trainers.tkre import (  # noqa: E402, F401
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    SpanContrastiveLoss,
    TKREConfig,
    TKREPretrainer,
)

# -- faithful summarisation (span-level unlikelihood / gradient ascent) --
# isort: split
from hf_contrastive.trainers.span_unlikelihood import (  # noqa: E402, F401
    SpanUnlikelihoodConfig,
    SpanUnlikelihoodTrainer,
)
