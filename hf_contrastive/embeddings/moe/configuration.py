"""Configuration of the mixture-of-experts sentence encoder (Hallee et al. 2024)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from hf_contrastive.embeddings.configuration import SentenceEncoderConfig

__all__ = ["MoESentenceEncoderConfig"]


def _check_domain_map(domain2id: Any) -> dict[str, int]:
    if not isinstance(domain2id, dict) or not domain2id:
        raise ValueError(
            f"domain2id must be a non-empty mapping of domain name -> expert id, got {domain2id!r}."
        )
    out: dict[str, int] = {}
    for name, index in domain2id.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"domain2id keys must be non-empty strings (domain names), got {name!r}.")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"domain2id[{name!r}] must be an integer expert id, got {index!r}.")
        out[name] = int(index)
    ids = sorted(out.values())
    if ids != list(range(len(ids))):
        raise ValueError(
            f"domain2id must give every domain its own expert, numbered 0..{len(ids) - 1}; got {domain2id!r}."
        )
    return out


class MoESentenceEncoderConfig(SentenceEncoderConfig):
    r"""Configuration of [`MoESentenceEncoder`]: a [`SentenceEncoderConfig`] whose backbone MLPs are split into
    experts, one per domain, with routing forced by a domain id given per example (Hallee et al. 2024).

    Every setting that shapes the experts lives here, so that `from_pretrained` rebuilds the same structure
    before loading the weights.

    Args:
        backbone_config (`PretrainedConfig` or `dict`):
            Configuration of the wrapped backbone (BERT-like encoders, DistilBERT, Llama-style decoders).
        num_experts (`int`, *optional*):
            Number of experts per converted MLP. Defaults to the number of domains in `domain2id` (1 when
            neither is given).
        domain2id (`dict[str, int]`, *optional*):
            Domain name -> expert id; ids are exactly `0 .. num_experts - 1` (one expert per domain).
            Defaults to `{"domain_0": 0, ...}`. The trainer maps its `domain_column` through it.
        default_domain (`str`, *optional*):
            Domain used when a forward pass gets no `domain_ids` (and `encode` no `domain`). Without it, a
            model with several experts refuses such calls; a single-expert model always uses its only
            expert.
        moe_layers (`list[int]`, *optional*):
            Indices of the transformer layers whose MLP is split into experts (`None`, the default: every
            layer). Hallee et al. report that one converted block already gives most of the gain.
        kwargs (`Any`, *optional*):
            The [`SentenceEncoderConfig`] settings (`pooling`, `normalize`, `max_seq_length`, ...).
    """

    model_type = "contrastive_moe_sentence_encoder"

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        num_experts: int | None = None,
        domain2id: dict[str, int] | None = None,
        default_domain: str | None = None,
        moe_layers: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if num_experts is not None and (
            isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1
        ):
            raise ValueError(f"num_experts must be an integer >= 1, got {num_experts!r}.")
        if domain2id is None:
            domain2id = {f"domain_{i}": i for i in range(num_experts or 1)}
        domain2id = _check_domain_map(domain2id)
        if num_experts is None:
            num_experts = len(domain2id)
        if num_experts != len(domain2id):
            raise ValueError(
                f"num_experts={num_experts} but domain2id names {len(domain2id)} domain(s) {sorted(domain2id)}: "
                "every expert serves exactly one domain."
            )
        if default_domain is not None and default_domain not in domain2id:
            raise ValueError(
                f"default_domain {default_domain!r} is not one of the domains {sorted(domain2id)}."
            )
        if moe_layers is not None:
            if not isinstance(moe_layers, (list, tuple)) or not moe_layers:
                raise ValueError(
                    f"moe_layers must be a non-empty list of layer indices or None, got {moe_layers!r}."
                )
            bad = [i for i in moe_layers if isinstance(i, bool) or not isinstance(i, int) or i < 0]
            if bad or len(set(moe_layers)) != len(moe_layers):
                raise ValueError(
                    f"moe_layers must hold distinct layer indices >= 0, got {list(moe_layers)!r}."
                )
            moe_layers = sorted(int(i) for i in moe_layers)
        self.num_experts = int(num_experts)
        self.domain2id = domain2id
        self.default_domain = default_domain
        self.moe_layers = moe_layers
        super().__init__(backbone_config=backbone_config, **kwargs)

    @property
    def id2domain(self) -> dict[int, str]:
        """Expert id -> domain name (the inverse of `domain2id`)."""
        return {index: name for name, index in self.domain2id.items()}

    @property
    def domains(self) -> list[str]:
        """Domain names in expert order."""
        return [self.id2domain[i] for i in range(self.num_experts)]
