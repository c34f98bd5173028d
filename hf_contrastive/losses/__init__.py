"""Contrastive objectives as nn.Modules: embeddings in, LossOutput out."""

__all__: list[str] = []
