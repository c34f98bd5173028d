"""Decoding-quality metrics (rep-n, diversity, isotropy, coherence)."""

__all__: list[str] = []
