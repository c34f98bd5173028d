"""Bi-encoder for dense retrieval: a query tower and a document tower, shared or separate.

Dense retrievers embed queries and documents independently and score them by a dot product or a
cosine. The two towers can share their weights (Contriever, E5, most sentence-transformers
retrievers) or not (DPR, Karpukhin et al. 2020). Asymmetric models also mark the role with a text
prefix (E5's `"query: "` / `"passage: "`) or an instruction; those prefixes live in the config,
so a saved model embeds exactly as it was trained.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from hf_contrastive.core.boundary import corrupt_file_errors, position_limit
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.core.mteb_protocol import (
    encode_batched_inputs,
    is_batched_inputs,
    model_meta,
    model_name_for_mteb,
)
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.loading import load_tokenizer, resolve_folder
from hf_contrastive.embeddings.modeling import SentenceEncoder, SentenceEncoderOutput

__all__ = ["BiEncoder", "BiEncoderConfig"]

TOWERS = ("query", "document")

DPR_CITATION = """@inproceedings{karpukhin-etal-2020-dense,
  title     = {Dense Passage Retrieval for Open-Domain Question Answering},
  author    = {Karpukhin, Vladimir and Oguz, Barlas and Min, Sewon and Lewis, Patrick and Wu, Ledell and
               Edunov, Sergey and Chen, Danqi and Yih, Wen-tau},
  booktitle = {Proceedings of EMNLP 2020},
  year      = {2020}
}"""


def _as_encoder_config(value: Any, name: str) -> SentenceEncoderConfig | None:
    if value is None or isinstance(value, SentenceEncoderConfig):
        return value
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
        return SentenceEncoderConfig(**value)
    raise TypeError(f"{name} must be a SentenceEncoderConfig or a dict, got {type(value).__name__}.")


class BiEncoderConfig(PretrainedConfig):
    r"""Configuration of [`BiEncoder`].

    Args:
        query_encoder_config (`SentenceEncoderConfig` or `dict`):
            The query tower (backbone, pooling, normalisation; see [`SentenceEncoderConfig`]).
        document_encoder_config (`SentenceEncoderConfig` or `dict`, *optional*):
            The document tower when the towers are separate; defaults to a copy of the query tower's.
        shared_towers (`bool`, defaults to `True`):
            One set of weights for both roles (Contriever). `False` gives two towers (DPR).
        query_prompt (`str`, defaults to `""`):
            Text prepended to every query, in training and in `encode_queries` (e.g. `"query: "`).
        document_prompt (`str`, defaults to `""`):
            Text prepended to every document (e.g. `"passage: "`).
        query_max_length (`int`, *optional*):
            Truncation length of queries; defaults to the tower's `max_seq_length`.
        document_max_length (`int`, *optional*):
            Truncation length of documents; defaults to the tower's `max_seq_length`.
    """

    model_type = "contrastive_bi_encoder"
    sub_configs = {
        "query_encoder_config": SentenceEncoderConfig,
        "document_encoder_config": SentenceEncoderConfig,
    }

    def __init__(
        self,
        query_encoder_config: SentenceEncoderConfig | dict | None = None,
        document_encoder_config: SentenceEncoderConfig | dict | None = None,
        shared_towers: bool = True,
        query_prompt: str = "",
        document_prompt: str = "",
        query_max_length: int | None = None,
        document_max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        query_encoder_config = _as_encoder_config(query_encoder_config, "query_encoder_config")
        document_encoder_config = _as_encoder_config(document_encoder_config, "document_encoder_config")
        if not isinstance(query_prompt, str) or not isinstance(document_prompt, str):
            raise TypeError(
                f"query_prompt and document_prompt must be strings, got {type(query_prompt).__name__} and "
                f"{type(document_prompt).__name__}."
            )
        for name, value in (
            ("query_max_length", query_max_length),
            ("document_max_length", document_max_length),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        if shared_towers and document_encoder_config is not None:
            raise ValueError(
                "shared_towers=True uses the query tower for documents too; do not pass document_encoder_config "
                "(or set shared_towers=False)."
            )
        if not shared_towers and document_encoder_config is None and query_encoder_config is not None:
            document_encoder_config = SentenceEncoderConfig.from_dict(query_encoder_config.to_dict())
        self.query_encoder_config = query_encoder_config
        self.document_encoder_config = document_encoder_config
        self.shared_towers = bool(shared_towers)
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.query_max_length = None if query_max_length is None else int(query_max_length)
        self.document_max_length = None if document_max_length is None else int(document_max_length)
        super().__init__(**kwargs)


class BiEncoder(HubMixin, PreTrainedModel):
    r"""Query and document towers ([`SentenceEncoder`] each, or one shared) for dense retrieval.

    `forward` embeds a tokenised batch with one tower (`tower="query"` or `"document"`), or
    with both in one call: `num_queries=n` sends the first `n` rows to the query tower and the
    rest to the document tower (how [`ContrastiveTrainer`] embeds anchors, positives and hard
    negatives in one forward). `encode_queries` / `encode_documents` apply the configured
    prompts and truncation lengths; retrieval evaluators call them.

    `from_pretrained` loads a saved bi-encoder, or any single-encoder checkpoint
    [`SentenceEncoder.from_pretrained`] understands as a shared-tower model: a Contriever
    checkpoint (BERT weights, mean pooling: `BiEncoder.from_pretrained("facebook/contriever")`),
    a sentence-transformers folder, a plain backbone with `pooling=`.

    Example::

        >>> model = BiEncoder.from_pretrained("facebook/contriever")
        >>> q = model.encode_queries(["Where was Marie Curie born?"])
        >>> d = model.encode_documents(["Maria Sklodowska was born in Warsaw."])
        >>> float(q @ d.T)
    """

    config_class = BiEncoderConfig
    base_model_prefix = "query_encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(
        self,
        config: BiEncoderConfig,
        query_encoder: SentenceEncoder | None = None,
        document_encoder: SentenceEncoder | None = None,
    ) -> None:
        super().__init__(config)
        if config.query_encoder_config is None and query_encoder is None:
            raise ValueError("BiEncoderConfig.query_encoder_config is required to build a BiEncoder.")
        self.query_encoder = (
            query_encoder if query_encoder is not None else SentenceEncoder(config.query_encoder_config)
        )
        if config.shared_towers:
            if document_encoder is not None and document_encoder is not self.query_encoder:
                raise ValueError("shared_towers=True but a separate document_encoder was given.")
            self._document_encoder = None
        else:
            self._document_encoder = (
                document_encoder
                if document_encoder is not None
                else SentenceEncoder(config.document_encoder_config)
            )

        self.card_info = ModelCardInfo()
        for encoder in {
            id(self.query_encoder): self.query_encoder,
            id(self.document_encoder): self.document_encoder,
        }.values():
            backbone = encoder.backbone
            if backbone.config._attn_implementation is None:
                # Nesting the towers' configs in this one resets their attention implementation; a
                # backbone left without one computes wrong attention masks.
                backbone.config._attn_implementation = (
                    "sdpa" if getattr(backbone, "_supports_sdpa", False) else "eager"
                )
        self.post_init()

    def _init_weights(self, module) -> None:  # the towers initialise themselves
        pass

    # -- towers ------------------------------------------------------------------------------
    @property
    def document_encoder(self) -> SentenceEncoder:
        return self.query_encoder if self._document_encoder is None else self._document_encoder

    def tower(self, name: str) -> SentenceEncoder:
        if name not in TOWERS:
            raise ValueError(f"tower must be 'query' or 'document', got {name!r}.")
        return self.query_encoder if name == "query" else self.document_encoder

    @property
    def tokenizer(self):
        return self.query_encoder.tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        # (assigned by PreTrainedModel plumbing before the towers exist)
        if "query_encoder" in self._modules:
            self.query_encoder.tokenizer = value
            if self._document_encoder is not None:
                self._document_encoder.tokenizer = value

    @property
    def embedding_dim(self) -> int:
        return self.query_encoder.embedding_dim

    def get_input_embeddings(self):
        return self.query_encoder.get_input_embeddings()

    def set_input_embeddings(self, value) -> None:
        self.query_encoder.set_input_embeddings(value)

    @property
    def role_prompts(self) -> dict[str, str]:
        """Prefix per text role, used by the trainer's collator (anchor = query, others = document)."""
        return {"query": self.config.query_prompt, "document": self.config.document_prompt}

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        tower: str = "query",
        num_queries: int | None = None,
        **kwargs: Any,
    ) -> SentenceEncoderOutput:
        r"""Embed a tokenised batch.

        Args:
            input_ids / attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`): the batch.
            tower (`str`, defaults to `"query"`): which tower embeds the batch.
            num_queries (`int`, *optional*): the first `num_queries` rows go to the query tower and the
                rest to the document tower (overrides `tower`). Shared towers embed all rows at once.
        Returns:
            [`SentenceEncoderOutput`] whose `embeddings` has shape `(batch_size, embedding_dim)`.
        """
        for key in ("labels", "num_items_in_batch", "return_loss"):
            kwargs.pop(key, None)
        if num_queries is None or self.config.shared_towers:
            name = "query" if num_queries is not None else tower
            return self.tower(name)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        n = int(num_queries)
        rows = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[0]
        if not 0 <= n <= rows:
            raise ValueError(f"num_queries must be in [0, {rows}] for a batch of {rows} rows, got {n}.")

        def part(sl: slice) -> dict[str, Any]:
            out = {
                k: v[sl] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == rows else v
                for k, v in kwargs.items()
            }
            return {
                "input_ids": None if input_ids is None else input_ids[sl],
                "attention_mask": None if attention_mask is None else attention_mask[sl],
                **out,
            }

        outs = []
        if n > 0:
            outs.append(self.query_encoder(**part(slice(0, n))).embeddings)
        if n < rows:
            outs.append(self.document_encoder(**part(slice(n, rows))).embeddings)
        return SentenceEncoderOutput(embeddings=torch.cat(outs) if len(outs) > 1 else outs[0])

    # -- encode ------------------------------------------------------------------------------
    def _encode(self, name: str, texts, prompt: str | None, max_length: int | None, **kwargs: Any):
        encoder = self.tower(name)
        if prompt is None:
            prompt = self.config.query_prompt if name == "query" else self.config.document_prompt
        if max_length is None:
            max_length = self.config.query_max_length if name == "query" else self.config.document_max_length
        kwargs.pop("convert_to_tensor", None)
        return encoder.encode(texts, prompt=prompt or None, max_length=max_length, **kwargs)

    def encode_queries(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        prompt: str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Embed queries with the query tower and `config.query_prompt` (or `prompt`): `[N, D]`."""
        return self._encode("query", texts, prompt, max_length, batch_size=batch_size, **kwargs)

    def encode_documents(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        prompt: str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Embed documents with the document tower and `config.document_prompt` (or `prompt`): `[N, D]`."""
        return self._encode("document", texts, prompt, max_length, batch_size=batch_size, **kwargs)

    def encode(self, texts: str | Sequence[str], **kwargs: Any) -> torch.Tensor:
        """Symmetric use (no prompt): the query tower, as `SentenceEncoder.encode`.

        With mteb's `DataLoader` (and its `task_metadata`, `hf_split`, `hf_subset`, `prompt_type`),
        queries go to `encode_queries` (query tower, `config.query_prompt`), documents to
        `encode_documents` (document tower, `config.document_prompt`), and symmetric tasks
        (`prompt_type=None`, e.g. STS) to the query tower without prompt; returns a float32 numpy array.
        """
        if is_batched_inputs(texts):
            names = ("normalize", "max_length", "tokenizer", "prompt", "prompt_name")
            options = {k: kwargs.pop(k) for k in names if k in kwargs}
            kwargs.pop("convert_to", None)  # mteb takes the numpy array it gets
            return encode_batched_inputs(self, texts, options=options, **kwargs)
        return self.query_encoder.encode(texts, **kwargs)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise scores `[N, M]` of query embeddings `a` `[N, D]` and document embeddings `b` `[M, D]`
        with the configured similarity function."""
        return self.query_encoder.similarity(a, b)

    def similarity_pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise scores `[N]` of two `[N, D]` embedding matrices with the configured similarity function
        (float64; see `SentenceEncoder.similarity_pairwise`)."""
        return self.query_encoder.similarity_pairwise(a, b)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's `ModelMeta` of this retriever (needs `mteb`); assign a `ModelMeta` to name it otherwise."""
        override = self.__dict__.get("_mteb_model_meta_override")
        if override is not None:
            return override
        config, tower = self.config, self.query_encoder.config
        # The longest input either role reads; a role without a length reads up to the position limit.
        limit = position_limit(config)
        lengths = [
            config.query_max_length or tower.max_seq_length or limit,
            config.document_max_length or self.document_encoder.config.max_seq_length or limit,
        ]
        max_tokens = max((n for n in lengths if n is not None), default=None)
        return model_meta(
            name=model_name_for_mteb(config._name_or_path or tower._name_or_path, "bi-encoder"),
            revision=getattr(config, "_commit_hash", None) or getattr(tower, "_commit_hash", None),
            embed_dim=self.embedding_dim,
            max_tokens=max_tokens,
            similarity_fn=tower.similarity_fn,
            n_parameters=sum(p.numel() for p in self.parameters()),
            use_instructions=bool(config.query_prompt or config.document_prompt),
        )

    @mteb_model_meta.setter
    def mteb_model_meta(self, value: Any) -> None:
        self.__dict__["_mteb_model_meta_override"] = value

    # -- loading / saving --------------------------------------------------------------------
    @classmethod
    def from_encoders(
        cls,
        query_encoder: SentenceEncoder,
        document_encoder: SentenceEncoder | None = None,
        **settings: Any,
    ) -> BiEncoder:
        """Build from existing encoders: one (shared towers) or two (separate towers)."""
        shared = document_encoder is None or document_encoder is query_encoder
        encoders = [query_encoder] if shared else [query_encoder, document_encoder]
        attn = [e.backbone.config._attn_implementation for e in encoders]
        config = BiEncoderConfig(
            query_encoder_config=query_encoder.config,
            document_encoder_config=None if shared else document_encoder.config,
            shared_towers=shared,
            **settings,
        )
        for encoder, impl in zip(encoders, attn):
            if impl is not None:
                encoder.backbone.config._attn_implementation = impl
        model = cls(
            config, query_encoder=query_encoder, document_encoder=None if shared else document_encoder
        )
        model.tokenizer = query_encoder.tokenizer
        model.card_info = query_encoder.card_info
        return model

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any
    ):
        """Load a saved bi-encoder, or wrap a single-encoder checkpoint as shared towers.

        Bi-encoder settings (`query_prompt`, `document_prompt`, `query_max_length`,
        `document_max_length`, `shared_towers`) may be given as keyword arguments. With
        `shared_towers=False` a single-encoder checkpoint initialises both towers (DPR-style
        fine-tuning from one model). Other keyword arguments go to [`SentenceEncoder.from_pretrained`]
        (`pooling`, `normalize`, `dtype`, ...). Contriever checkpoints are BERT weights with mean
        pooling, the [`SentenceEncoderConfig`] default, so they need no argument.
        """

        settings = {
            k: kwargs.pop(k)
            for k in (
                "query_prompt",
                "document_prompt",
                "query_max_length",
                "document_max_length",
                "shared_towers",
            )
            if k in kwargs
        }
        folder = resolve_folder(pretrained_model_name_or_path)
        config_file = folder / "config.json"
        with corrupt_file_errors(folder):
            own = config_file.is_file() and json.loads(config_file.read_text(encoding="utf-8")).get(
                "model_type"
            ) == (BiEncoderConfig.model_type)
        if own:
            config = kwargs.pop("config", None) or BiEncoderConfig.from_pretrained(folder)
            for key, value in settings.items():
                if key == "shared_towers" and bool(value) != config.shared_towers:
                    raise ValueError("shared_towers of a saved bi-encoder cannot be changed at load time.")
                setattr(config, key, value)
            with corrupt_file_errors(folder):
                model = super().from_pretrained(folder, *model_args, config=config, **kwargs)
            model.tokenizer = load_tokenizer(folder)

            model.card_info = ModelCardInfo.from_folder(folder)
            return model.eval()
        shared = settings.pop("shared_towers", True)
        query = SentenceEncoder.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        document = None if shared else copy.deepcopy(query)
        return cls.from_encoders(query, document, **settings).eval()

    # -- model card ------------------------------------------------------------------------------
    # ``save_pretrained`` / ``push_to_hub`` (atomic save with the card, one-commit upload): HubMixin.
    card_template = "bi_encoder.md"
    card_pipeline_tag = "sentence-similarity"
    card_tags = ("dense-retrieval", "sentence-embeddings", "feature-extraction")
    card_citations = (DPR_CITATION,)

    def card_details(self) -> dict[str, Any]:
        """Settings of the towers for `model_cards/bi_encoder.md`."""
        config = self.config
        towers = []
        for name in TOWERS if not config.shared_towers else ("query",):
            encoder = self.tower(name)
            ec = encoder.config
            towers.append(
                {
                    "name": "shared" if config.shared_towers else name,
                    "backbone_type": getattr(ec.backbone_config, "model_type", "unknown"),
                    "pooling": ec.pooling,
                    "normalize": "yes (L2)" if ec.normalize else "no",
                    "embedding_dim": encoder.embedding_dim,
                }
            )
        kind = "one shared tower" if config.shared_towers else "separate query and document towers"
        return {
            "title": "Bi-encoder retriever",
            "description": (
                "A dense retriever made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
                f"{kind} embed queries and documents independently into {self.embedding_dim}-dimensional "
                f"vectors scored by `{self.query_encoder.config.similarity_fn}` similarity."
            ),
            "backbone_type": towers[0]["backbone_type"],
            "towers": towers,
            "shared_towers": config.shared_towers,
            "query_prompt": config.query_prompt,
            "document_prompt": config.document_prompt,
            "query_max_length": config.query_max_length or "tower default",
            "document_max_length": config.document_max_length or "tower default",
            "similarity_fn": self.query_encoder.config.similarity_fn,
            "embedding_dim": self.embedding_dim,
        }
