"""Contrastive search decoding (Su et al. 2022) for transformers v5, as trusted local code."""

__all__: list[str] = []
