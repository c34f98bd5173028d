"""The vocabulary projection of Text2Token: pooled representation -> logits over the vocabulary.

A causal LM projects with its LM head; SmolLM2 (and most small LMs) tie that head to the input embedding matrix,
so the encoder's own `get_input_embeddings().weight` is the LM head. An encoder without a language-model head
(all-MiniLM-L6-v2 ships none) uses the same tied matrix: `logits = pooled @ E^T`. An LM with an untied head
hands its head over with [`VocabularyProjection.from_lm_head`] (a frozen copy, as the head is not part of the
saved encoder).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["VocabularyProjection", "unwrap_encoder"]


def unwrap_encoder(model: Any) -> Any:
    """The encoder under DDP (`.module`) and `peft` (`get_base_model()`) wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class VocabularyProjection(nn.Module):
    r"""`logits = pooled @ W^T (+ b)`: a representation projected onto the vocabulary.

    Args:
        weight (`torch.Tensor` of shape `(vocab_size, hidden_size)`, *optional*):
            A projection of its own, kept as a frozen buffer (copied). `None` (the default) ties the projection to
            the encoder's input embedding matrix, read at each call, so it is the very parameter the encoder
            trains (same storage), for SmolLM2's tied LM head and for MiniLM alike.
        bias (`torch.Tensor` of shape `(vocab_size,)`, *optional*):
            A bias of the vocabulary logits (frozen buffer, copied).
    """

    def __init__(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight is None and bias is not None:
            raise ValueError("A bias needs a weight: a tied projection reads no bias from the encoder.")
        if weight is not None:
            if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
                raise ValueError(
                    "weight must be a floating-point tensor of shape (vocab_size, hidden_size), got "
                    f"{type(weight).__name__} {tuple(getattr(weight, 'shape', ()))}."
                )
            if bias is not None and (
                not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],)
            ):
                raise ValueError(
                    f"bias must have shape ({weight.shape[0]},) to match the weight, got "
                    f"{tuple(getattr(bias, 'shape', ()))}."
                )
        self.register_buffer("weight", None if weight is None else weight.detach().clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    @property
    def tied(self) -> bool:
        """Whether the projection is the encoder's input embedding matrix."""
        return self.weight is None

    @classmethod
    def from_lm_head(cls, causal_lm: Any) -> VocabularyProjection:
        """A frozen copy of a causal LM's output embeddings (its LM head), for LMs whose head is not tied.

        Args:
            causal_lm (`PreTrainedModel`):
                A model with `get_output_embeddings()` (an `AutoModelForCausalLM`).
        """
        head = causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
        if head is None or getattr(head, "weight", None) is None:
            raise ValueError(
                f"{type(causal_lm).__name__} has no output embeddings (LM head); load the model with "
                "AutoModelForCausalLM, or use the tied projection (VocabularyProjection())."
            )
        return cls(head.weight, getattr(head, "bias", None))

    def weights_for(self, encoder: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The projection matrix `W` (`vocab_size x hidden_size`) and bias for `encoder` (wrappers are removed).

        For a tied projection, `W` is the encoder's input embedding parameter itself.
        """
        if self.weight is not None:
            return self.weight, self.bias
        if encoder is None:
            raise ValueError("A tied VocabularyProjection needs the encoder whose input embeddings it uses.")
        base = unwrap_encoder(encoder)
        embeddings = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
        weight = getattr(embeddings, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ValueError(
                f"{type(base).__name__} exposes no input embedding matrix to tie the vocabulary projection to; "
                "pass VocabularyProjection(weight=...) or VocabularyProjection.from_lm_head(causal_lm)."
            )
        return weight, None

    def check_encoder(self, encoder: Any) -> None:
        """Refuse an encoder whose pooled size differs from the projection's; warn when a tied projection is used
        on a backbone that declares an untied LM head (the input embeddings are then not its LM head)."""
        base = unwrap_encoder(encoder)
        weight, _ = self.weights_for(base)
        config = getattr(base, "config", None)
        hidden = getattr(config, "hidden_size", None)
        if isinstance(hidden, int) and weight.shape[1] != hidden:
            raise ValueError(
                f"The vocabulary projection takes vectors of size {weight.shape[1]}, but the encoder pools vectors "
                f"of size {hidden}."
            )
        backbone = getattr(config, "backbone_config", None)
        if self.tied and backbone is not None and getattr(backbone, "tie_word_embeddings", True) is False:
            logger.warning(
                "The %s backbone has an untied LM head (tie_word_embeddings=False): the tied projection uses its "
                "input embeddings instead. Pass VocabularyProjection.from_lm_head(AutoModelForCausalLM...) to "
                "project with the LM head.",
                getattr(backbone, "model_type", "?"),
            )

    def forward(self, hidden: torch.Tensor, encoder: Any = None) -> torch.Tensor:
        """Vocabulary logits `hidden @ W^T (+ b)` of shape `(..., vocab_size)`.

        Args:
            hidden (`torch.Tensor` of shape `(..., hidden_size)`):
                Pooled representations (or token states).
            encoder (`SentenceEncoder`, *optional*):
                Needed by a tied projection.
        """
        weight, bias = self.weights_for(encoder)
        if hidden.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"The vocabulary projection takes vectors of size {weight.shape[1]}, got size {hidden.shape[-1]}."
            )
        logits = hidden.to(weight.dtype) @ weight.T
        return logits if bias is None else logits + bias.to(logits.dtype)
