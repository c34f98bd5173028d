"""Mixture-of-experts sentence encoder with routing forced by a domain id (Hallee et al. 2024).

Every converted transformer layer keeps one shared attention block, and its MLP becomes `N` experts, each a
copy of the original MLP's linear layers; each row of a batch (a text) goes through the expert of its domain
in every converted layer. Routing is given, not learned: a domain id per row, so a forward pass costs what
the dense model's does.

What is copied and what stays shared:

- copied per expert: the MLP's linear layers (BERT-like encoders: `intermediate.dense` and `output.dense`;
  DistilBERT: `ffn.lin1`, `ffn.lin2`; Llama-style decoders: `mlp.gate_proj`, `mlp.up_proj`,
  `mlp.down_proj`). The activation between them has no weights, so routing each linear layer by the same
  domain id is the same as routing the whole MLP.
- shared by all experts: embeddings, attention, the LayerNorms (BERT's `output.LayerNorm` normalises the sum
  of the residual stream and the MLP output, and belongs to the residual block rather than to the MLP),
  dropout, the pooling and the projection head. Experts initialised from the dense model therefore give
  exactly the dense model's embeddings, whatever the domain.

Any other layout (ALBERT's shared layers, GPT-2's `Conv1D` MLP, ...) is refused with an error that names the
backbone's model type.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.loading import load_tokenizer, resolve_folder
from hf_contrastive.embeddings.modeling import SentenceEncoder, SentenceEncoderOutput
from hf_contrastive.embeddings.moe.configuration import MoESentenceEncoderConfig

__all__ = [
    "EXPERT_LAYOUTS",
    "ExpertLayout",
    "ExpertRouter",
    "MOE_CITATION",
    "MoESentenceEncoder",
    "RoutedLinear",
    "convert_to_experts",
    "find_expert_layout",
]

MOE_CITATION = """@article{hallee2024contrastive,
  title   = {Contrastive Learning and Mixture of Experts Enables Precise Vector Embeddings},
  author  = {Hallee, Logan and Kapur, Rohan and Patel, Arjun and Gleghorn, Jason P. and Khomtchouk, Bohdan},
  journal = {arXiv preprint arXiv:2401.15713},
  year    = {2024}
}"""

# Settings of the dense head carried over by `from_dense` (every SentenceEncoderConfig argument).
_HEAD_KEYS = tuple(
    name
    for name in inspect.signature(SentenceEncoderConfig.__init__).parameters
    if name not in ("self", "backbone_config", "kwargs")
)
# MoE settings that fix the structure of the weights: they cannot change when a saved model is loaded.
_STRUCTURE_KEYS = ("num_experts", "domain2id", "moe_layers")
_HUB_KEYS = ("revision", "token", "cache_dir")


# -- routing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    """How the rows of one forward pass are dealt out to the experts."""

    rows: int
    single: int | None  # every row goes to this expert: no gather at all
    order: torch.Tensor | None  # rows sorted by expert (stable)
    inverse: torch.Tensor | None  # puts the sorted rows back in batch order
    experts: tuple[int, ...]  # experts that get rows, in order
    counts: tuple[int, ...]  # rows each of them gets


def _plan(expert_ids: torch.Tensor, num_experts: int) -> _Route:
    ids = expert_ids.reshape(-1)
    counts = torch.bincount(ids, minlength=num_experts).tolist()
    used = [(e, c) for e, c in enumerate(counts) if c]
    if len(used) == 1:
        return _Route(rows=ids.numel(), single=used[0][0], order=None, inverse=None, experts=(), counts=())
    order = torch.argsort(ids, stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return _Route(
        rows=ids.numel(),
        single=None,
        order=order,
        inverse=inverse,
        experts=tuple(e for e, _ in used),
        counts=tuple(c for _, c in used),
    )


class ExpertRouter:
    """The expert of every row for the forward pass under way, shared by all the [`RoutedLinear`] of a model.

    [`MoESentenceEncoder.forward`] enters [`routing`] around its backbone call; each routed layer reads the
    plan with [`current`]. The plan is computed once per forward (one `bincount`, one stable `argsort`), not
    once per layer.

    Args:
        num_experts (`int`):
            Experts per routed layer.
    """

    def __init__(self, num_experts: int) -> None:
        self.num_experts = int(num_experts)
        self._stack: list[_Route] = []

    @contextlib.contextmanager
    def routing(self, expert_ids: torch.Tensor) -> Iterator[None]:
        """Route the rows of the forward passes inside the block: row `i` goes to expert `expert_ids[i]`.

        Args:
            expert_ids (`torch.LongTensor` of shape `(batch_size,)`):
                Expert of each row, already checked to lie in `0 .. num_experts - 1`.
        """
        self._stack.append(_plan(expert_ids, self.num_experts))
        try:
            yield
        finally:
            self._stack.pop()

    def current(self, rows: int) -> _Route | None:
        """The plan for a layer input of `rows` rows (`None` outside any [`routing`] block)."""
        if not self._stack:
            return None
        route = self._stack[-1]
        if route.rows != rows:
            raise ValueError(
                f"A routed layer got {rows} rows but the forward pass was routed for {route.rows}: the domain ids "
                "must give one domain per row of the batch."
            )
        return route

    def __deepcopy__(self, memo: dict) -> ExpertRouter:
        # A copy of the model (momentum encoder, LoRA merge) gets its own router with no routing under way.
        return ExpertRouter(self.num_experts)


class RoutedLinear(nn.Module):
    """`N` copies of a linear layer; each row of the input goes through the copy its domain selects.

    The rows are gathered by expert (one index gather), each expert runs once on its rows, and the outputs are
    put back in batch order (one more gather): no Python loop over rows. When all rows share one expert, that
    expert runs on the input as it is, so a batch of one domain computes exactly what the dense layer does.

    Args:
        base (`nn.Linear`):
            The dense layer; expert 0 is this module, the others are deep copies of it.
        num_experts (`int`):
            Number of experts.
        router (`ExpertRouter`):
            The model's router, which holds the expert of every row of the current forward pass.
    """

    def __init__(self, base: nn.Linear, num_experts: int, router: ExpertRouter) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"RoutedLinear copies an nn.Linear, got {type(base).__name__}.")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.experts = nn.ModuleList([base, *(copy.deepcopy(base) for _ in range(num_experts - 1))])
        self.router = router

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, experts={len(self.experts)}"
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        route = self.router.current(hidden_states.shape[0])
        if route is None:
            if len(self.experts) == 1:
                return self.experts[0](hidden_states)
            raise RuntimeError(
                "This layer is split into experts and no routing is under way: call the MoESentenceEncoder "
                "itself (with domain_ids) rather than its backbone."
            )
        if route.single is not None:
            return self.experts[route.single](hidden_states)
        grouped = hidden_states.index_select(0, route.order.to(hidden_states.device)).split(
            list(route.counts)
        )
        out = torch.cat([self.experts[e](part) for e, part in zip(route.experts, grouped)])
        return out.index_select(0, route.inverse.to(out.device))


# -- layouts -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertLayout:
    """Where a family of backbones keeps its layers and, inside each layer, the linear layers of its MLP.

    Args:
        name (`str`):
            Short name of the layout (shown on the model card).
        layers (`str`):
            Dotted path from the backbone to its `nn.ModuleList` of transformer layers.
        linears (`tuple[str, ...]`):
            Dotted paths, inside one layer, of the MLP's `nn.Linear` layers.
        examples (`tuple[str, ...]`):
            Model types known to use the layout (for messages).
    """

    name: str
    layers: str
    linears: tuple[str, ...]
    examples: tuple[str, ...]


EXPERT_LAYOUTS: tuple[ExpertLayout, ...] = (
    ExpertLayout(
        "bert",
        "encoder.layer",
        ("intermediate.dense", "output.dense"),
        ("bert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta-v2"),
    ),
    ExpertLayout("distilbert", "transformer.layer", ("ffn.lin1", "ffn.lin2"), ("distilbert",)),
    ExpertLayout(
        "llama", "layers", ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), ("llama", "mistral", "qwen2")
    ),
)
"""The MLP layouts [`convert_to_experts`] knows, tried in this order."""


def _get(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def find_expert_layout(backbone: nn.Module) -> tuple[ExpertLayout, nn.ModuleList]:
    """The layout of `backbone` among [`EXPERT_LAYOUTS`] and its list of layers.

    Args:
        backbone (`nn.Module`):
            A transformers backbone (`BertModel`, `DistilBertModel`, `LlamaModel`, ...).

    Raises:
        `ValueError`: when no known layout matches (naming the backbone's model type and the layouts known),
            or when the MLPs are already split into experts.
    """
    model_type = getattr(getattr(backbone, "config", None), "model_type", type(backbone).__name__)
    for layout in EXPERT_LAYOUTS:
        layers = _get(backbone, layout.layers)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            continue
        found = [[_get(layer, path) for path in layout.linears] for layer in layers]
        if any(isinstance(m, RoutedLinear) for row in found for m in row):
            raise ValueError(f"The {model_type!r} backbone's MLPs are already split into experts.")
        if all(isinstance(m, nn.Linear) for row in found for m in row):
            return layout, layers
    known = "; ".join(
        f"{layout.name} ({', '.join(layout.examples)}): {layout.layers}[i].{{{', '.join(layout.linears)}}}"
        for layout in EXPERT_LAYOUTS
    )
    raise ValueError(
        f"Cannot split the MLPs of a {model_type!r} backbone into experts: its modules match none of the known "
        f"layouts ({known})."
    )


def convert_to_experts(
    backbone: nn.Module, num_experts: int, router: ExpertRouter, layers: Sequence[int] | None = None
) -> ExpertLayout:
    """Replace, in place, the MLP linear layers of `backbone` by [`RoutedLinear`] experts copied from them.

    Args:
        backbone (`nn.Module`):
            The backbone to convert (see [`EXPERT_LAYOUTS`]).
        num_experts (`int`):
            Experts per linear layer, all initialised from it.
        router (`ExpertRouter`):
            The router every new layer reads its routing from.
        layers (`Sequence[int]`, *optional*):
            Indices of the layers to convert (default: all).

    Returns:
        `ExpertLayout`: the layout found.
    """
    layout, modules = find_expert_layout(backbone)
    indices = list(range(len(modules))) if layers is None else list(layers)
    out_of_range = [i for i in indices if not 0 <= i < len(modules)]
    if out_of_range:
        raise ValueError(
            f"moe_layers {out_of_range} are out of range: the backbone has {len(modules)} layers "
            f"(indices 0..{len(modules) - 1})."
        )
    for i in indices:
        for path in layout.linears:
            owner_path, _, name = path.rpartition(".")
            owner = _get(modules[i], owner_path) if owner_path else modules[i]
            setattr(owner, name, RoutedLinear(getattr(owner, name), num_experts, router))
    return layout


# -- the head ----------------------------------------------------------------------------------------------


class MoESentenceEncoder(SentenceEncoder):
    r"""Sentence encoder whose backbone MLPs are split into one expert per domain (Hallee et al. 2024).

    Build one from a trained dense encoder with [`from_dense`] (every expert starts as a copy of its MLP, so
    the converted model embeds exactly as the dense one until it is trained), train it with
    [`ContrastiveTrainer`] and `ContrastiveConfig(domain_column="domain")`, reload it with `from_pretrained`
    (or `AutoModel.from_pretrained` once this module is imported).

    Routing: `forward(..., domain_ids=...)` takes one domain id per row (the ids of `config.domain2id`);
    `encode(texts, domain=...)` a domain name or id for all texts, or one per text. Without them a model with
    several experts uses `config.default_domain`, and refuses the call when there is none; a model with one
    expert always uses it. A domain outside `config.domain2id` is refused with the known domains.

    Gradient checkpointing is not supported: the routing is set for the duration of a forward pass, and a
    recomputation during the backward pass would not see it.

    Example::

        >>> from hf_contrastive.embeddings.moe import MoESentenceEncoder
        >>> model = MoESentenceEncoder.from_dense("sentence-transformers/all-MiniLM-L6-v2", domains=["news", "bio"])
        >>> model.encode(["Aspirin lowers fever."], domain="bio").shape
        torch.Size([1, 384])
    """

    config_class = MoESentenceEncoderConfig
    supports_gradient_checkpointing = False

    def __init__(self, config: MoESentenceEncoderConfig, backbone: PreTrainedModel | None = None):
        if not isinstance(config, MoESentenceEncoderConfig):
            raise TypeError(
                f"MoESentenceEncoder needs a MoESentenceEncoderConfig, got {type(config).__name__}; convert a "
                "dense encoder with MoESentenceEncoder.from_dense(model, domains=[...])."
            )
        if backbone is None:
            if config.backbone_config is None:
                raise ValueError("MoESentenceEncoderConfig.backbone_config is required to build the encoder.")
            if getattr(config.backbone_config, "is_encoder_decoder", False):
                raise ValueError(
                    f"Backbone {config.backbone_config.model_type!r} is an encoder-decoder model, which has no "
                    "mixture-of-experts layout here."
                )
            backbone = AutoModel.from_config(config.backbone_config)
        router = ExpertRouter(config.num_experts)
        layout = convert_to_experts(backbone, config.num_experts, router, config.moe_layers)
        super().__init__(config, backbone=backbone)
        self.router = router
        self.expert_layout = layout
        self._encode_domain: int | None = None

    # -- model card ------------------------------------------------------------------------------
    card_template = "moe_sentence_encoder.md"
    card_tags = ("sentence-embeddings", "sentence-similarity", "feature-extraction", "mixture-of-experts")
    card_citations = (MOE_CITATION,)

    def card_details(self) -> dict[str, Any]:
        """Settings of the head and its experts for `model_cards/moe_sentence_encoder.md`."""
        details = super().card_details()
        config = self.config
        n_layers = len(_get(self.backbone, self.expert_layout.layers))
        converted = list(range(n_layers)) if config.moe_layers is None else config.moe_layers
        details.update(
            {
                "title": "Mixture-of-experts sentence encoder",
                "description": (
                    "A mixture-of-experts sentence encoder made with "
                    "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): a "
                    f"`{details['backbone_type']}` backbone whose MLPs are split into {config.num_experts} "
                    "experts, one per domain, with each text routed to its domain's expert (Hallee et al. 2024), "
                    f"and `{config.pooling}` pooling to {config.embedding_dim}-dimensional vectors."
                ),
                "num_experts": config.num_experts,
                "domains": [{"name": name, "id": i} for i, name in enumerate(config.domains)],
                "default_domain": config.default_domain,
                "first_domain": config.domains[0],
                "expert_layers": (
                    f"all {n_layers}" if len(converted) == n_layers else ", ".join(str(i) for i in converted)
                )
                + f" of {n_layers}",
                "expert_modules": ", ".join(f"`{p}`" for p in self.expert_layout.linears),
            }
        )
        return details

    # -- routing ---------------------------------------------------------------------------------
    def domain_index(self, domain: str | int) -> int:
        """The expert id of `domain`, given by name (a key of `config.domain2id`) or by id.

        Args:
            domain (`str | int`):
                A domain name or an expert id.

        Raises:
            `ValueError`: when the domain is not one of the model's (the message lists them).
        """
        domain2id = self.config.domain2id
        if isinstance(domain, str):
            if domain in domain2id:
                return domain2id[domain]
        elif isinstance(domain, int) and not isinstance(domain, bool):
            if 0 <= domain < self.config.num_experts:
                return int(domain)
        else:
            raise TypeError(
                f"A domain is a name (str) or an id (int), got {type(domain).__name__} {domain!r}."
            )
        raise ValueError(f"Unknown domain {domain!r}: this model's domains are {self._known_domains()}.")

    def _known_domains(self) -> str:
        return ", ".join(f"{name!r} (id {i})" for i, name in enumerate(self.config.domains))

    def expert_modules(self, domain: str | int) -> list[nn.Linear]:
        """The linear layers that make up `domain`'s expert, in every converted layer (to freeze or inspect it).

        Args:
            domain (`str | int`):
                A domain name or an expert id.
        """
        index = self.domain_index(domain)
        return [m.experts[index] for m in self.modules() if isinstance(m, RoutedLinear)]

    def _expert_ids(self, domain_ids: Any, rows: int, device: torch.device) -> torch.Tensor:
        if domain_ids is None:
            if self._encode_domain is not None:
                index = self._encode_domain
            elif self.config.default_domain is not None:
                index = self.config.domain2id[self.config.default_domain]
            elif self.config.num_experts == 1:
                index = 0
            else:
                raise ValueError(
                    f"This mixture-of-experts encoder has {self.config.num_experts} experts and the call names no "
                    "domain: pass domain_ids (a LongTensor of shape (batch_size,), one domain id per row) to "
                    "forward, or domain= to encode, or set config.default_domain. Domains: "
                    f"{self._known_domains()}."
                )
            return torch.full((rows,), index, dtype=torch.long, device=device)
        if isinstance(domain_ids, (str, int)) and not isinstance(domain_ids, bool):
            return torch.full((rows,), self.domain_index(domain_ids), dtype=torch.long, device=device)
        if isinstance(domain_ids, (list, tuple)):
            domain_ids = torch.tensor([self.domain_index(d) for d in domain_ids], dtype=torch.long)
        if not isinstance(domain_ids, torch.Tensor):
            raise TypeError(
                "domain_ids must be a LongTensor of shape (batch_size,), a list of domain names or ids, or one "
                f"domain; got {type(domain_ids).__name__}."
            )
        if domain_ids.is_floating_point() or domain_ids.is_complex() or domain_ids.dtype == torch.bool:
            raise TypeError(f"domain_ids must hold integer domain ids, got a tensor of {domain_ids.dtype}.")
        if domain_ids.dim() == 0:
            domain_ids = domain_ids.expand(rows)
        if domain_ids.dim() != 1 or domain_ids.shape[0] != rows:
            raise ValueError(
                f"domain_ids must hold one domain id per row: expected shape ({rows},), got "
                f"{tuple(domain_ids.shape)}."
            )
        domain_ids = domain_ids.to(device=device, dtype=torch.long)
        outside = (domain_ids < 0) | (domain_ids >= self.config.num_experts)
        if bool(outside.any()):
            bad = sorted(set(domain_ids[outside].tolist()))
            raise ValueError(
                f"domain_ids holds {bad}, outside this model's experts: its domains are {self._known_domains()}."
            )
        return domain_ids

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        domain_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> SentenceEncoderOutput | tuple:
        r"""Embed a tokenised batch, each row through its domain's expert.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                Token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 for real tokens, 0 for padding.
            domain_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                The domain id of every row (`config.domain2id` values); a single id or name applies to all
                rows. Defaults to `config.default_domain` (required when there are several experts and no
                default).
            args (`Any`, *optional*):
                The other positional arguments of [`SentenceEncoder.forward`].
            kwargs (`Any`, *optional*):
                The other keyword arguments of [`SentenceEncoder.forward`] (`token_type_ids`, `inputs_embeds`,
                `output_hidden_states`, ...).

        Returns:
            [`SentenceEncoderOutput`] with `embeddings` of shape `(batch_size, embedding_dim)`.
        """
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if ref is None:
            ref = attention_mask
        if ref is None:
            raise ValueError("MoESentenceEncoder.forward needs `input_ids` or `inputs_embeds`.")
        expert_ids = self._expert_ids(domain_ids, int(ref.shape[0]), ref.device)
        with self.router.routing(expert_ids):
            return super().forward(input_ids, attention_mask, *args, **kwargs)

    # -- encode ------------------------------------------------------------------------------------
    def encode(
        self, texts: str | Sequence[str], *args: Any, domain: Any = None, **kwargs: Any
    ) -> torch.Tensor | Any:
        """Embed raw texts, routed to the expert of `domain` (see [`SentenceEncoder.encode`] for the rest).

        Args:
            texts (`str | Sequence[str]`):
                One string or a non-empty sequence of strings.
            domain (`str | int | Sequence[str | int]`, *optional*):
                A domain name or id for all texts, or one per text. Defaults to `config.default_domain` (or the
                only expert of a single-expert model).
            args (`Any`, *optional*):
                Positional arguments of [`SentenceEncoder.encode`] (`batch_size`, `normalize`, ...).
            kwargs (`Any`, *optional*):
                Keyword arguments of [`SentenceEncoder.encode`] (`convert_to`, `max_length`, `prompt`, ...).

        Returns:
            Embeddings of shape `[len(texts), embedding_dim]` (`[embedding_dim]` for one string), in the
            order of `texts`.
        """
        if domain is None or isinstance(domain, (str, int)):
            index = None if domain is None else self.domain_index(domain)
            return self._encode_routed(texts, index, *args, **kwargs)
        if isinstance(texts, str) or not isinstance(domain, Sequence):
            raise TypeError(
                "domain must be one domain name or id, or a sequence of them with one per text (texts must then "
                f"be a sequence too); got domain of type {type(domain).__name__}."
            )
        if len(domain) != len(texts):
            raise ValueError(f"Got {len(domain)} domains for {len(texts)} texts: give one domain per text.")
        ids = [self.domain_index(d) for d in domain]
        convert_to = kwargs.pop("convert_to", "torch")
        if convert_to not in ("torch", "numpy", "list"):
            raise ValueError(f"convert_to must be 'torch', 'numpy' or 'list', got {convert_to!r}.")
        result: torch.Tensor | None = None
        for index in sorted(set(ids)):
            rows = [i for i, d in enumerate(ids) if d == index]
            emb = self._encode_routed([texts[i] for i in rows], index, *args, convert_to="torch", **kwargs)
            if result is None:
                result = emb.new_empty((len(texts), emb.shape[-1]))
            result[torch.tensor(rows, device=emb.device)] = emb
        if convert_to == "numpy":
            return result.cpu().numpy()
        if convert_to == "list":
            return result.cpu().tolist()
        return result

    def _encode_routed(self, texts: Any, index: int | None, *args: Any, **kwargs: Any) -> Any:
        previous, self._encode_domain = self._encode_domain, index
        try:
            return super().encode(texts, *args, **kwargs)
        finally:
            self._encode_domain = previous

    # -- conversion, loading -----------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        model: SentenceEncoder | str | os.PathLike,
        domains: Sequence[str] | dict[str, int],
        *,
        default_domain: str | None = None,
        moe_layers: list[int] | None = None,
        **load_kwargs: Any,
    ) -> MoESentenceEncoder:
        """Split a dense encoder's MLPs into one expert per domain, each an exact copy of the dense MLP.

        The result embeds every domain exactly as `model` does until it is trained. `model` is not modified.

        Args:
            model (`SentenceEncoder | str | os.PathLike`):
                A dense [`SentenceEncoder`], or anything [`SentenceEncoder.from_pretrained`] loads (our folders,
                sentence-transformers folders, plain backbones, Hub ids).
            domains (`Sequence[str] | dict[str, int]`):
                The domain names (expert `i` serves `domains[i]`), or the full `domain2id` map.
            default_domain (`str`, *optional*):
                Domain used when a call names none (see [`MoESentenceEncoderConfig`]).
            moe_layers (`list[int]`, *optional*):
                Layers to convert (default: all).
            load_kwargs (`Any`, *optional*):
                Arguments of [`SentenceEncoder.from_pretrained`] when `model` is a path or Hub id.

        Returns:
            `MoESentenceEncoder`: on the dense model's device and dtype, in its training mode, with its
            tokenizer and card provenance.
        """
        if isinstance(model, (str, os.PathLike)):
            model = SentenceEncoder.from_pretrained(model, **load_kwargs)
        elif load_kwargs:
            raise TypeError(
                f"from_dense got loading arguments {sorted(load_kwargs)} with a model object: they apply only "
                "when model is a path or Hub id."
            )
        if isinstance(model, MoESentenceEncoder):
            raise ValueError("The model is already a mixture-of-experts encoder.")
        if not isinstance(model, SentenceEncoder):
            hint = (
                " (merge a LoRA adapter first: merge_and_unload())" if hasattr(model, "peft_config") else ""
            )
            raise TypeError(f"from_dense converts a SentenceEncoder, got {type(model).__name__}{hint}.")
        if isinstance(domains, dict):
            domain2id = dict(domains)
        else:
            if isinstance(domains, str) or not isinstance(domains, Sequence):
                raise TypeError(f"domains must be a list of domain names or a dict, got {domains!r}.")
            names = list(domains)
            duplicated = sorted({d for d in names if names.count(d) > 1})
            if duplicated:
                raise ValueError(f"domains must be distinct, got {duplicated} more than once.")
            domain2id = {name: i for i, name in enumerate(names)}
        reference = next(model.parameters())
        backbone = copy.deepcopy(model.backbone)
        attn = backbone.config._attn_implementation
        config = MoESentenceEncoderConfig(
            backbone_config=backbone.config,
            domain2id=domain2id,
            default_domain=default_domain,
            moe_layers=moe_layers,
            **{key: copy.deepcopy(getattr(model.config, key)) for key in _HEAD_KEYS},
        )
        if attn is not None:
            backbone.config._attn_implementation = attn  # building the composite config resets it
        moe = cls(config, backbone=backbone)
        if model.projection is not None:
            moe.projection.load_state_dict(model.projection.state_dict())
        moe.to(device=reference.device, dtype=reference.dtype)
        moe.tokenizer = model.tokenizer
        moe.card_info = copy.deepcopy(model.card_info)
        moe.train(model.training)
        return moe

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ) -> MoESentenceEncoder:
        """Load a mixture-of-experts encoder saved by `save_pretrained` (a folder or a Hub id).

        Head settings (`normalize`, `max_seq_length`, `prompts`, `default_domain`, ...) may be given as keyword
        arguments and override the saved ones; the settings that shape the weights (`num_experts`,
        `domain2id`, `moe_layers`) cannot change. Other keyword arguments go to `PreTrainedModel.from_pretrained`
        (`dtype`, `attn_implementation`, ...). A dense model is refused: convert it with [`from_dense`].
        """
        if kwargs.pop("trust_remote_code", False):
            raise ValueError(
                "hf-contrastive never executes remote code: trust_remote_code=True is not accepted."
            )
        fixed = sorted(k for k in _STRUCTURE_KEYS if k in kwargs)
        if fixed:
            raise ValueError(
                f"{fixed} shape the saved experts and cannot change at load time; convert a dense model with "
                "MoESentenceEncoder.from_dense to choose them."
            )
        hub = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
        folder = resolve_folder(pretrained_model_name_or_path, **hub)
        config_file = folder / "config.json"
        with corrupt_file_errors(folder):
            saved = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        if saved.get("model_type") != MoESentenceEncoderConfig.model_type:
            found = f"model_type {saved['model_type']!r}" if saved.get("model_type") else "no config.json"
            raise ValueError(
                f"{folder} holds no mixture-of-experts encoder ({found}): convert a dense model with "
                f"MoESentenceEncoder.from_dense({str(pretrained_model_name_or_path)!r}, domains=[...])."
            )
        overrides = {k: kwargs.pop(k) for k in (*_HEAD_KEYS, "default_domain") if k in kwargs}
        config = kwargs.pop("config", None)
        if config is None or overrides:
            base = config.to_dict() if config is not None else saved
            # Rebuilt through the constructor, so overridden values are checked like saved ones.
            config = MoESentenceEncoderConfig.from_dict({**base, **overrides})
        with corrupt_file_errors(folder):
            model = cls._from_own_folder(folder, *model_args, config=config, **kwargs)
        model.tokenizer = load_tokenizer(Path(folder))
        model.card_info = ModelCardInfo.from_folder(folder)
        return model.eval()
