"""Evaluation: STS, decoding quality (and later retrieval, classification)."""

from hf_contrastive.evaluation.decoding import *  # noqa: F403
