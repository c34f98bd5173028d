"""Trainer subclasses and their TrainingArguments configs."""

from hf_contrastive.trainers.simctg import *  # noqa: F403
