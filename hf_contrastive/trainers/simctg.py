"""SimCTG training objective (token-level contrastive margin + MLE)."""

__all__: list[str] = []
