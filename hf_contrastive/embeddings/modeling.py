"""Sentence-encoder head: any `AutoModel` backbone + pooling + optional projection + normalisation."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput, logging

from hf_contrastive.core.boundary import cap_max_length, position_limit
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.mteb_protocol import (
    encode_batched_inputs,
    is_batched_inputs,
    model_meta,
    model_name_for_mteb,
)
from hf_contrastive.embeddings.configuration import (
    SentenceEncoderConfig,
    apply_prompt_template,
    prompt_template_tokens,
)
from hf_contrastive.embeddings.loading import load_sentence_encoder
from hf_contrastive.embeddings.pooling import pool
from hf_contrastive.embeddings.whitening import ShuffledGroupWhitening

logger = logging.get_logger(__name__)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}
_NEEDS_ALL_LAYERS = ("avg_first_last", "avg_top2")
_PROGRESS_BAR_MIN_TEXTS = 1024


@dataclass
class SentenceEncoderOutput(ModelOutput):
    """Output of [`SentenceEncoder`].

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Sentence embeddings after pooling, the projection (when active) and normalisation.
        pooled (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Pooled token states before projection and normalisation.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            Token states of the backbone's last layer.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            All layers' states, when requested or needed by the pooling.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights, when requested.
    """

    embeddings: torch.FloatTensor | None = None
    pooled: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ProjectionHead(nn.Module):
    """Linear layer + activation applied after pooling (SimCSE's MLP, sentence-transformers' Dense)."""

    def __init__(self, in_features: int, out_features: int, activation: str = "tanh", bias: bool = True):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features, bias=bias)
        self.activation = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


def _describe(value: Any) -> str:
    """`None`, or a value's type and a short repr, for error messages."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


class SentenceEncoderPreTrainedModel(PreTrainedModel):
    config_class = SentenceEncoderConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head's own layers: the backbone initialises itself (it is a PreTrainedModel).
        if isinstance(module, ProjectionHead):
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            try:
                from transformers import initialization as init
            except ImportError:  # older 5.x
                init = nn.init
            init.normal_(module.dense.weight, mean=0.0, std=std)
            if module.dense.bias is not None:
                init.zeros_(module.dense.bias)


class SentenceEncoder(HubMixin, SentenceEncoderPreTrainedModel):
    r"""Sentence embeddings from any transformer backbone.

    `forward` maps tokenised inputs to a [`SentenceEncoderOutput`]; `encode` maps raw texts to
    an embedding matrix. `from_pretrained` accepts, besides folders saved by this class, a plain
    backbone folder or Hub id (pass `pooling=...`), a sentence-transformers folder
    (`modules.json`) and SimCSE training checkpoints (`bert.`/`roberta.` prefix + `mlp.` head);
    see [`hf_contrastive.embeddings.loading`].

    Example::

        >>> from hf_contrastive import SentenceEncoder
        >>> model = SentenceEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
        >>> emb = model.encode(["A man is eating food.", "A man eats."])  # [2, 384], L2-normalised
        >>> float(emb[0] @ emb[1])
    """

    def __init__(self, config: SentenceEncoderConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("SentenceEncoderConfig.backbone_config is required to build a SentenceEncoder.")
        if getattr(config.backbone_config, "is_encoder_decoder", False):
            raise ValueError(
                f"Backbone {config.backbone_config.model_type!r} is an encoder-decoder model; load its encoder "
                "alone (e.g. T5EncoderModel) and pass it as `backbone=`."
            )
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if self.backbone.config._attn_implementation is None:
            # Building the composite config resets the sub-config's attention implementation;
            # a backbone left without one computes wrong attention masks.
            supports_sdpa = getattr(self.backbone, "_supports_sdpa", False)
            self.backbone.config._attn_implementation = "sdpa" if supports_sdpa else "eager"
        self.projection = (
            ProjectionHead(
                config.hidden_size,
                config.projection_dim,
                config.projection_activation,
                config.projection_bias,
            )
            if config.projection_dim is not None
            else None
        )
        # Inference-time whitening (`whitening_at_inference`): consecutive channel groups, no shuffling, so the
        # same batch always gives the same embeddings. In training the `whitenedcse` loss whitens the views.
        self.whitening = (
            ShuffledGroupWhitening(config.whitening_group_size, config.whitening_eps, shuffle=False)
            if config.whitening_group_size is not None
            else None
        )
        self.tokenizer = None  # attached by from_pretrained when the folder has one; used by encode()

        self.card_info = ModelCardInfo()  # provenance, data and results for the model card
        self.post_init()

    # -- model card ------------------------------------------------------------------------------
    card_template = "sentence_encoder.md"
    card_pipeline_tag = "sentence-similarity"
    card_tags = ("sentence-embeddings", "sentence-similarity", "feature-extraction")

    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/sentence_encoder.md`."""
        config = self.config
        backbone_type = getattr(config.backbone_config, "model_type", "unknown")
        if config.projection_dim is None:
            projection = "none"
        else:
            projection = (
                f"Linear({config.hidden_size} -> {config.projection_dim}) + {config.projection_activation}"
                + (" (training only)" if config.mlp_only_train else "")
            )
        return {
            "title": "Sentence encoder",
            "description": (
                "A sentence encoder made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
                f"a `{backbone_type}` backbone with `{config.pooling}` pooling that maps text to "
                f"{config.embedding_dim}-dimensional vectors for semantic similarity, search and clustering."
            ),
            "backbone_type": backbone_type,
            "pooling": config.pooling,
            "projection": projection,
            "normalize": "yes (L2)" if config.normalize else "no",
            "embedding_dim": config.embedding_dim,
            "max_seq_length": config.max_seq_length or "tokenizer limit",
            "similarity_fn": config.similarity_fn,
            "prompts": config.prompts,
            "prompt_template": getattr(config, "prompt_template", None) or "",
            "whitening": self._whitening_details(),
        }

    def _whitening_details(self) -> str:
        """One line on shuffled group whitening for the card (empty when the head has none)."""
        config = self.config
        if config.whitening_group_size is None:
            return ""
        where = (
            "in training and at inference (groups of consecutive channels, statistics of each batch)"
            if config.whitening_at_inference
            else "in training only (the `whitenedcse` loss); inference embeddings are not whitened"
        )
        return (
            f"shuffled group whitening (WhitenedCSE): ZCA in groups of {config.whitening_group_size} channels, "
            f"eps {config.whitening_eps:g}, {where}"
        )

    # -- plumbing expected by Trainer / PEFT -------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SentenceEncoderOutput | tuple:
        r"""Embed a tokenised batch.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 for real tokens, 0 for padding (either side). All ones when omitted.
        Returns:
            [`SentenceEncoderOutput`] with `embeddings` of shape `(batch_size, embedding_dim)`.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("SentenceEncoder.forward needs `input_ids` or `inputs_embeds`.")
        ref = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        pooling = self.config.pooling
        want_all = bool(output_hidden_states) or pooling in _NEEDS_ALL_LAYERS
        backbone_inputs = {
            k: v
            for k, v in (
                ("input_ids", input_ids),
                ("token_type_ids", token_type_ids),
                ("position_ids", position_ids),
                ("inputs_embeds", inputs_embeds),
            )
            if v is not None
        }
        # Never let PEFT's or Trainer's bookkeeping kwargs (labels etc.) reach the backbone.
        for key in ("labels", "num_items_in_batch", "return_loss"):
            kwargs.pop(key, None)
        out = self.backbone(
            **backbone_inputs,
            attention_mask=attention_mask,
            output_hidden_states=want_all,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pooled = pool(
            pooling,
            last,
            attention_mask,
            hidden_states=getattr(out, "hidden_states", None),
            pooler_output=getattr(out, "pooler_output", None),
        )
        embeddings = self.project(pooled)
        if self.whitening is not None and self.config.whitening_at_inference and not self.training:
            # Batch statistics: each embedding depends on the other rows of this forward's batch.
            embeddings = self.whitening(embeddings)
        if self.config.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        output = SentenceEncoderOutput(
            embeddings=embeddings,
            pooled=pooled,
            last_hidden_state=last,
            hidden_states=getattr(out, "hidden_states", None) if output_hidden_states else None,
            attentions=getattr(out, "attentions", None),
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Apply the projection head when it is active (see `mlp_only_train`, `cls_before_pooler`)."""
        if self.projection is None or self.config.pooling == "cls_before_pooler":
            return pooled
        if self.config.mlp_only_train and not self.training:
            return pooled
        return self.projection(pooled)

    # -- encode ------------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        convert_to: str = "torch",
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
        prompt: str | None = None,
        prompt_name: str | None = None,
        tokenizer: Any = None,
        **mteb_kwargs: Any,
    ) -> torch.Tensor | Any:
        """Embed raw texts in batches, in inference mode.

        Texts are sorted by length so each batch pads little, then returned in the input order.

        Args:
            texts (`str | Sequence[str]`): one string (returns a 1-D vector) or a non-empty sequence of strings.
            batch_size (`int`, *optional*, defaults to `32`): texts per forward pass.
            normalize (`bool | None`, *optional*): L2-normalise the output; defaults to `config.normalize`.
            convert_to (`str`, *optional*, defaults to `"torch"`): `"torch"` (float32 tensor on the model's device), `"numpy"` or `"list"`.
            show_progress_bar (`bool | None`, *optional*): defaults to on for 1024 texts or more.
            max_length (`int | None`, *optional*): truncation length; defaults to `config.max_seq_length`, then the tokenizer's
                limit capped at 512. Never more than the backbone's positions (`max_position_embeddings`, less
                RoBERTa's offset): a larger value is cut to it, with a warning once.
            prompt / prompt_name: text prepended to every input, given directly or by name from
                `config.prompts` (default: `config.default_prompt_name`). `config.prompt_template`, if set,
                then wraps each (prefixed) text; `max_length` counts the text's tokens, the template's come on top.
            tokenizer (`Any`, *optional*): overrides the tokenizer attached by `from_pretrained`.
            mteb_kwargs (`Any`, *optional*): with `texts` an mteb `DataLoader`, mteb's `task_metadata`, `hf_split`,
                `hf_subset` and `prompt_type` (see `_encode_mteb`); refused with texts.
        Returns:
            Embeddings of shape `[len(texts), embedding_dim]` (`[embedding_dim]` for one string); a float32
            numpy array for mteb inputs.
        """
        if is_batched_inputs(texts):
            options = dict(normalize=normalize, max_length=max_length, prompt=prompt, prompt_name=prompt_name)
            options.update(tokenizer=tokenizer, batch_size=batch_size, show_progress_bar=show_progress_bar)
            return self._encode_mteb(texts, options, **mteb_kwargs)
        if mteb_kwargs:
            raise TypeError(f"encode() got unexpected keyword argument(s) {sorted(mteb_kwargs)}.")
        # Input types: say what is expected and what was given.
        if not isinstance(texts, (str, Sequence)) or isinstance(texts, (bytes, bytearray)):
            raise TypeError(
                "encode() expects strings: texts must be a string or a sequence of strings (a list or tuple), "
                f"got {_describe(texts)}."
            )
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)] if not isinstance(texts, str) else []
        if bad:
            raise TypeError(
                "encode() expects strings: texts must be a string or a sequence of strings; "
                f"item {bad[0]} is {_describe(texts[bad[0]])}."
            )

        single = isinstance(texts, str)
        if single:
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("encode() expects a string or a non-empty list of strings; got an empty input.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if convert_to not in ("torch", "numpy", "list"):
            raise ValueError(f"convert_to must be 'torch', 'numpy' or 'list', got {convert_to!r}.")
        # max_length < 1: the tokenizer ignored it and truncated to its own default, silently.
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(
                f"max_length must be an int >= 1 (or None for the model's default), got {max_length!r}."
            )
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError(
                "encode() needs a tokenizer: load the model from a folder that has one, set "
                "`model.tokenizer = AutoTokenizer.from_pretrained(...)`, or pass `tokenizer=`."
            )
        prefix = self._resolve_prompt(prompt, prompt_name)
        if prefix:
            texts = [prefix + t for t in texts]
        if self.config.do_lower_case:
            texts = [t.lower() for t in texts]
        requested = max_length is not None or self.config.max_seq_length is not None
        if max_length is None:
            max_length = self.config.max_seq_length
        if max_length is None:
            tok_max = getattr(tokenizer, "model_max_length", None)
            max_length = min(int(tok_max), 512) if tok_max and tok_max < 1e6 else 512
        template = getattr(self.config, "prompt_template", None)
        if template:
            # The length limit counts the text's tokens: texts are cut to it, the template's tokens come on top.
            texts = apply_prompt_template(template, texts, tokenizer, max_length)
            max_length += prompt_template_tokens(template, tokenizer)
        max_length = cap_max_length(max_length, position_limit(self.config), "max_length", warn=requested)
        normalize = self.config.normalize if normalize is None else normalize

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        device = next(self.parameters()).device
        if show_progress_bar is None:
            show_progress_bar = len(texts) >= _PROGRESS_BAR_MIN_TEXTS
        batches = range(0, len(texts), batch_size)
        if show_progress_bar:
            batches = tqdm(batches, desc="Encoding", total=math.ceil(len(texts) / batch_size))

        was_training = self.training
        self.eval()
        chunks: list[torch.Tensor] = []
        try:
            with torch.inference_mode():
                for start in batches:
                    idx = order[start : start + batch_size]
                    features = tokenizer(
                        [texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    )
                    features = {k: v.to(device) for k, v in features.items()}
                    emb = self(**features).embeddings.float()
                    if normalize and not self.config.normalize:
                        emb = F.normalize(emb, p=2, dim=-1)
                    chunks.append(emb)
        finally:
            self.train(was_training)
        stacked = torch.cat(chunks)
        restore = torch.empty(len(order), dtype=torch.long)
        restore[torch.tensor(order)] = torch.arange(len(order))
        result = stacked[restore.to(stacked.device)]
        if single:
            result = result[0]
        if convert_to == "numpy":
            return result.cpu().numpy()
        if convert_to == "list":
            return result.cpu().tolist()
        return result

    def encode_queries(self, texts: str | Sequence[str], **kwargs: Any) -> torch.Tensor | Any:
        """`encode` for retrieval queries: applies the prompt named `"query"` when `config.prompts` has one."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs and "query" in self.config.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(texts, **kwargs)

    def encode_documents(self, texts: str | Sequence[str], **kwargs: Any) -> torch.Tensor | Any:
        """`encode` for retrieval documents: applies the prompt named `"document"` (or `"passage"`)."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            for name in ("document", "passage"):
                if name in self.config.prompts:
                    kwargs["prompt_name"] = name
                    break
        return self.encode(texts, **kwargs)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity matrix `[len(a), len(b)]` under `config.similarity_fn`.

        `cosine` and `dot` are similarities; `euclidean` and `manhattan` are returned as
        negative distances so that larger always means more similar.
        """
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        a = a.unsqueeze(0) if a.dim() == 1 else a
        b = b.unsqueeze(0) if b.dim() == 1 else b
        fn = self.config.similarity_fn
        if fn == "cosine":
            return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T
        if fn == "dot":
            return a.float() @ b.float().T
        p = 2.0 if fn == "euclidean" else 1.0
        return -torch.cdist(a.float(), b.float(), p=p)

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None and prompt_name is not None:
            raise ValueError("Give either `prompt` or `prompt_name`, not both.")
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.config.default_prompt_name
        if name is None:
            return ""
        if name not in self.config.prompts:
            raise ValueError(
                f"Unknown prompt_name {name!r}; this model's prompts are {sorted(self.config.prompts)}."
            )
        return self.config.prompts[name]

    # -- loading / saving --------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ):
        """Load from a saved head, a plain backbone, a sentence-transformers folder or a SimCSE checkpoint.

        Head settings (`pooling`, `normalize`, `projection_dim`, `mlp_only_train`,
        `max_seq_length`, `prompts`, ...) may be given as keyword arguments; they override what
        the checkpoint says. Other keyword arguments go to the backbone's `from_pretrained`
        (`dtype`, `attn_implementation`, `revision`, ...). Remote code is never executed.
        """

        return load_sentence_encoder(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _from_own_folder(cls, folder: str | os.PathLike, *model_args: Any, **kwargs: Any):
        return super().from_pretrained(folder, *model_args, **kwargs)

    # ``save_pretrained`` / ``push_to_hub`` (atomic save with the card, one-commit upload): HubMixin.

    # -- mteb encoder protocol -----------------------------------------------------------------
    def similarity_pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity `[N]` of two `[N, D]` embedding matrices under `config.similarity_fn`.

        The pairwise counterpart of `similarity` (`cosine`, `dot`, negative `euclidean` / `manhattan`
        distance), computed in float64 so that nearly equal scores are not tied by rounding (STS
        correlations then equal the library's `evaluate_sts`).
        """
        a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
        a = a.unsqueeze(0) if a.dim() == 1 else a
        b = b.unsqueeze(0) if b.dim() == 1 else b
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(
                f"similarity_pairwise needs two [N, D] matrices of the same shape, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}."
            )
        fn = self.config.similarity_fn
        if fn == "cosine":
            return F.cosine_similarity(a, b, dim=-1)
        if fn == "dot":
            return (a * b).sum(-1)
        p = 2.0 if fn == "euclidean" else 1.0
        return -torch.linalg.vector_norm(a - b, ord=p, dim=-1)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's `ModelMeta` of this encoder (needs `mteb`): name, embedding size, truncation length,
        similarity function, parameter count.

        The name is the Hub id the model was loaded from, or `"local/<folder>"`; assign a `ModelMeta` to
        this attribute to name the model otherwise (mteb's result cache files results under that name).
        """
        override = self.__dict__.get("_mteb_model_meta_override")
        if override is not None:
            return override
        config = self.config
        return model_meta(
            name=model_name_for_mteb(
                config._name_or_path, getattr(config.backbone_config, "model_type", "encoder")
            ),
            revision=getattr(config, "_commit_hash", None),
            embed_dim=self.embedding_dim,
            max_tokens=config.max_seq_length or position_limit(config),
            similarity_fn=config.similarity_fn,
            n_parameters=sum(p.numel() for p in self.parameters()),
            use_instructions=bool(config.prompts),
        )

    @mteb_model_meta.setter
    def mteb_model_meta(self, value: Any) -> None:
        self.__dict__["_mteb_model_meta_override"] = value

    def _encode_mteb(self, inputs: Any, options: dict[str, Any], **mteb_kwargs: Any) -> Any:
        """`encode` for mteb's `DataLoader`: `prompt_type="query"` -> `encode_queries` (prompt `"query"`),
        `"document"` -> `encode_documents` (prompt `"document"` or `"passage"`), `None` -> `encode`; a prompt
        of `config.prompts` named after the task (`"STSBenchmark"`, `"SciFact-query"`, `"Retrieval"`, ...)
        comes first, in mteb's order. Returns a float32 numpy array."""
        return encode_batched_inputs(
            self, inputs, prompts=self.config.prompts, options=options, **mteb_kwargs
        )


__all__ = ["SentenceEncoder", "SentenceEncoderOutput", "SentenceEncoderPreTrainedModel", "ProjectionHead"]
