"""The DSE student: a siamese encoder (mean of the top layers, concatenated) and a pair-scoring head.

Distilled Sentence Embedding (Barkan et al. 2019) trains a sentence-pair scorer whose two sentences never
see each other inside the encoder, so that candidate embeddings can be computed once and reused: scoring a
query against a thousand cached candidates costs one query embedding and a small MLP over the pairs,
instead of a thousand cross-encoder passes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from hf_contrastive.core.boundary import cap_max_length, corrupt_file_errors, position_limit
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.embeddings.dse.configuration import DSEConfig
from hf_contrastive.embeddings.dse.losses import DSELoss
from hf_contrastive.embeddings.modeling import SentenceEncoder

_PROGRESS_BAR_MIN_TEXTS = 1024
_CONFIG_KEYS = ("num_top_layers", "classifier_hidden_size", "classifier_dropout", "task", "max_seq_length")


@dataclass
class DSEOutput(ModelOutput):
    """Output of [`DistilledPairScorer`].

    Args:
        loss (`torch.FloatTensor`, *optional*):
            The task loss (MSE for regression, cross-entropy for classification) when `labels` were given. The
            distillation term needs the teacher's logits: [`DSETrainer`] computes the full objective.
        logits (`torch.FloatTensor` of shape `(batch_size,)` or `(batch_size, num_labels)`):
            One score per pair (regression) or the class logits (classification).
        embeddings_a (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Embeddings of the first sentences.
        embeddings_b (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Embeddings of the second sentences.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings_a: torch.FloatTensor | None = None
    embeddings_b: torch.FloatTensor | None = None


def top_layers_mean(
    hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor, num_layers: int
) -> torch.Tensor:
    """Mean over the real tokens of each of the last `num_layers` layers, concatenated (lowest layer first).

    Args:
        hidden_states (`Sequence[torch.Tensor]`):
            The backbone's states, the embeddings output first (`output_hidden_states=True`), each of shape
            `(batch_size, seq_len, hidden_size)`.
        attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`):
            1 for real tokens, 0 for padding (either side).
        num_layers (`int`):
            How many transformer layers, counted from the last, are pooled.

    Returns:
        `torch.Tensor` of shape `(batch_size, num_layers * hidden_size)`.
    """
    if num_layers > len(hidden_states) - 1:
        raise ValueError(
            f"Cannot pool the top {num_layers} layers: the backbone returned {len(hidden_states) - 1} layers."
        )
    mask = attention_mask.unsqueeze(-1).to(hidden_states[-1].dtype)
    count = mask.sum(dim=1).clamp(min=1.0)
    return torch.cat([(h * mask).sum(dim=1) / count for h in hidden_states[-num_layers:]], dim=-1)


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The pair features of DSE (and InferSent): `[u; v; u * v; |u - v|]` along the last dimension."""
    return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)


class DSEPairHead(nn.Module):
    """`[u; v; u*v; |u-v|]` -> Linear(4E -> hidden) -> ReLU -> Dropout -> Linear(hidden -> num_labels)."""

    def __init__(self, embedding_dim: int, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(4 * embedding_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(F.relu(self.dense(features))))


def _check_texts(texts: Any, name: str) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be a list of strings; item {bad[0]} is {type(texts[bad[0]]).__name__}.")
    return list(texts)


class DistilledPairScorer(HubMixin, PreTrainedModel):
    r"""Sentence-pair scorer with a siamese encoder, the student of Distilled Sentence Embedding.

    `encode(texts)` gives the sentence embeddings (the mean of each of the top `num_top_layers` layers,
    concatenated); `score_pairs(a, b)` scores pairs of texts; `score_candidates(query, embeddings)` scores
    one query against candidate embeddings computed once by `encode`. Train it with [`DSETrainer`] against a
    cross-encoder teacher's cached logits.

    Args:
        config ([`DSEConfig`]):
            The head's settings and the backbone's configuration.
        backbone (`PreTrainedModel`, *optional*):
            An already built backbone (its weights are kept); built from `config.backbone_config` otherwise.

    Example::

        >>> scorer = DistilledPairScorer.from_backbone(packaged_minilm_path())
        >>> scorer.score_pairs(["A man is eating."], ["A man eats food."])
        >>> cached = scorer.encode(candidates)          # once
        >>> scorer.score_candidates("A man is eating.", cached)
    """

    config_class = DSEConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids_a"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    card_template = "dse_pair_scorer.md"
    card_pipeline_tag = "sentence-similarity"
    card_tags = ("sentence-similarity", "sentence-embeddings")
    card_citations = (DSELoss.citation,)

    def __init__(self, config: DSEConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("DSEConfig.backbone_config is required to build a DistilledPairScorer.")
        if getattr(config.backbone_config, "is_encoder_decoder", False):
            raise ValueError(
                f"Backbone {config.backbone_config.model_type!r} is an encoder-decoder model; DSE needs an "
                "encoder (pass its encoder as `backbone=`)."
            )
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if self.backbone.config._attn_implementation is None:
            # Building the composite config resets the sub-config's attention implementation.
            supports_sdpa = getattr(self.backbone, "_supports_sdpa", False)
            self.backbone.config._attn_implementation = "sdpa" if supports_sdpa else "eager"
        self.head = DSEPairHead(
            config.embedding_dim, config.classifier_hidden_size, config.num_labels, config.classifier_dropout
        )
        self.tokenizer = None  # attached by from_pretrained / from_backbone; used by encode()
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the pair head: the backbone initialises itself.
        if isinstance(module, DSEPairHead):
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            for linear in (module.dense, module.out_proj):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                nn.init.zeros_(linear.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    @property
    def embedding_dim(self) -> int:
        """Size of the sentence embeddings `encode` returns."""
        return self.config.embedding_dim

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls, name_or_path: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> DistilledPairScorer:
        """A new scorer (fresh pair head) on a pretrained encoder.

        Args:
            name_or_path (`str | os.PathLike`):
                A plain transformers backbone folder, a sentence-transformers folder (such as the packaged
                all-MiniLM-L6-v2) or a folder saved by `SentenceEncoder`; only its backbone is kept.
            tokenizer (`Any`, *optional*):
                Overrides the folder's tokenizer.
            kwargs (`Any`, *optional*):
                [`DSEConfig`] settings (`num_top_layers`, `classifier_hidden_size`, `task`, `num_labels`,
                `max_seq_length`, ...); the rest goes to the backbone's `from_pretrained` (`dtype`, ...).
        """
        head = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k in (*_CONFIG_KEYS, "num_labels", "id2label", "label2id")
        }
        encoder = SentenceEncoder.from_pretrained(name_or_path, **kwargs)
        backbone = encoder.backbone
        attn = backbone.config._attn_implementation
        config = DSEConfig(backbone_config=backbone.config, **head)
        if attn is not None:
            backbone.config._attn_implementation = attn  # the composite config reset it
        model = cls(config, backbone=backbone)
        model.tokenizer = tokenizer if tokenizer is not None else encoder.tokenizer
        model.card_info.base_model = encoder.card_info.base_model
        return model.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a folder saved by this class, with its tokenizer and card metadata when the folder has them.

        For a new scorer on a plain encoder use [`from_backbone`].
        """
        with corrupt_file_errors(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if (folder / "tokenizer_config.json").is_file():
            model.tokenizer = AutoTokenizer.from_pretrained(folder)
        if folder.is_dir():
            model.card_info = ModelCardInfo.from_folder(folder)
        return model

    # -- model card ----------------------------------------------------------------------------------
    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/dse_pair_scorer.md`."""
        config = self.config
        backbone_type = getattr(config.backbone_config, "model_type", "unknown")
        output = (
            "one score per pair (regression)"
            if config.task == "regression"
            else f"{config.num_labels} class logits (classification)"
        )
        return {
            "title": "Distilled sentence-pair scorer (DSE)",
            "description": (
                "A sentence-pair scorer made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive) "
                "by Distilled Sentence Embedding: a cross-encoder teacher's logits were distilled into a siamese "
                f"`{backbone_type}` student, so each sentence is embedded once and pairs are scored by a small "
                "head over the two embeddings."
            ),
            "backbone_type": backbone_type,
            "num_top_layers": config.num_top_layers,
            "embedding_dim": config.embedding_dim,
            "head": (
                f"[u; v; u*v; \\|u-v\\|] ({config.feature_dim}) -> Linear({config.feature_dim} -> "
                f"{config.classifier_hidden_size}) -> ReLU -> Linear({config.classifier_hidden_size} -> "
                f"{config.num_labels})"
            ),
            "output": output,
            "max_seq_length": config.max_seq_length or "tokenizer limit",
        }

    # -- forward -------------------------------------------------------------------------------------
    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings of a tokenised batch: the top layers' token means, concatenated.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*): 1 for real tokens.
            token_type_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): segment ids.

        Returns:
            `torch.Tensor` of shape `(batch_size, embedding_dim)`.
        """
        if input_ids is None:
            raise ValueError("DistilledPairScorer.embed needs input_ids.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            return_dict=True,
            **extra,
        )
        return top_layers_mean(out.hidden_states, attention_mask, self.config.num_top_layers)

    def score_embeddings(self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
        """The head on two embedding matrices: `[B]` scores (regression) or `[B, num_labels]` logits.

        Args:
            embeddings_a (`torch.Tensor` of shape `(batch_size, embedding_dim)`): first sentences (`u`).
            embeddings_b (`torch.Tensor` of shape `(batch_size, embedding_dim)`): second sentences (`v`).
        """
        if embeddings_a.shape != embeddings_b.shape or embeddings_a.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"Expected two embedding matrices of shape [B, {self.embedding_dim}], got "
                f"{tuple(embeddings_a.shape)} and {tuple(embeddings_b.shape)}."
            )
        logits = self.head(pair_features(embeddings_a, embeddings_b))
        return logits.squeeze(-1) if self.config.task == "regression" else logits

    def forward(
        self,
        input_ids_a: torch.Tensor | None = None,
        attention_mask_a: torch.Tensor | None = None,
        token_type_ids_a: torch.Tensor | None = None,
        input_ids_b: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        token_type_ids_b: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> DSEOutput | tuple:
        r"""Score tokenised pairs, each side tokenised on its own.

        Args:
            input_ids_a (`torch.LongTensor` of shape `(batch_size, len_a)`): the first sentences' token ids.
            attention_mask_a (`torch.Tensor` of shape `(batch_size, len_a)`, *optional*): their padding mask.
            token_type_ids_a (`torch.LongTensor` of shape `(batch_size, len_a)`, *optional*): their segment ids.
            input_ids_b (`torch.LongTensor` of shape `(batch_size, len_b)`): the second sentences' token ids.
            attention_mask_b (`torch.Tensor` of shape `(batch_size, len_b)`, *optional*): their padding mask.
            token_type_ids_b (`torch.LongTensor` of shape `(batch_size, len_b)`, *optional*): their segment ids.
            labels (`torch.Tensor` of shape `(batch_size,)`, *optional*): gold scores (regression) or class ids
                (classification); the task loss is returned with them.
            return_dict (`bool`, *optional*): `False` returns a tuple.

        Returns:
            [`DSEOutput`] with `logits` of shape `(batch_size,)` (regression) or `(batch_size, num_labels)`.
        """
        if input_ids_a is None or input_ids_b is None:
            raise ValueError("DistilledPairScorer.forward needs input_ids_a and input_ids_b (one per side).")
        for key in ("num_items_in_batch", "return_loss"):
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"DistilledPairScorer.forward got unexpected inputs {sorted(kwargs)}.")
        u = self.embed(input_ids_a, attention_mask_a, token_type_ids_a)
        v = self.embed(input_ids_b, attention_mask_b, token_type_ids_b)
        logits = self.score_embeddings(u, v)
        loss = None
        if labels is not None:
            if self.config.task == "regression":
                loss = F.mse_loss(logits.float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        output = DSEOutput(loss=loss, logits=logits, embeddings_a=u, embeddings_b=v)
        return output.to_tuple() if return_dict is False else output

    # -- inference on raw text -----------------------------------------------------------------------
    def _max_length(self, max_length: int | None, tokenizer: Any) -> int:
        requested = max_length is not None or self.config.max_seq_length is not None
        if max_length is None:
            max_length = self.config.max_seq_length
        if max_length is None:
            tok_max = getattr(tokenizer, "model_max_length", None)
            max_length = min(int(tok_max), 512) if tok_max and tok_max < 1e6 else 512
        return cap_max_length(max_length, position_limit(self.config), "max_length", warn=requested)

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        convert_to: str = "torch",
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
        tokenizer: Any = None,
    ) -> torch.Tensor | Any:
        """Embed raw texts in batches, in inference mode (texts sorted by length, returned in input order).

        Args:
            texts (`str | Sequence[str]`): one string (returns a 1-D vector) or a non-empty list of strings.
            batch_size (`int`, *optional*, defaults to `32`): texts per forward pass.
            convert_to (`str`, *optional*, defaults to `"torch"`): `"torch"`, `"numpy"` or `"list"`.
            show_progress_bar (`bool`, *optional*): defaults to on for 1024 texts or more.
            max_length (`int`, *optional*): truncation length; defaults to `config.max_seq_length`.
            tokenizer (`Any`, *optional*): overrides the tokenizer attached by `from_pretrained`.

        Returns:
            Embeddings of shape `[len(texts), embedding_dim]` (`[embedding_dim]` for one string), in the
            model's dtype.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else _check_texts(texts, "texts")
        if not texts:
            raise ValueError("encode() expects a string or a non-empty list of strings; got an empty input.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        if convert_to not in ("torch", "numpy", "list"):
            raise ValueError(f"convert_to must be 'torch', 'numpy' or 'list', got {convert_to!r}.")
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
        max_length = self._max_length(max_length, tokenizer)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        device = next(self.parameters()).device
        starts = range(0, len(texts), batch_size)
        if show_progress_bar if show_progress_bar is not None else len(texts) >= _PROGRESS_BAR_MIN_TEXTS:
            starts = tqdm(starts, desc="Encoding", total=math.ceil(len(texts) / batch_size))
        was_training = self.training
        self.eval()
        chunks = []
        try:
            with torch.inference_mode():
                for start in starts:
                    idx = order[start : start + batch_size]
                    feats = tokenizer(
                        [texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    )
                    chunks.append(
                        self.embed(
                            feats["input_ids"].to(device),
                            feats["attention_mask"].to(device),
                            feats["token_type_ids"].to(device) if "token_type_ids" in feats else None,
                        )
                    )
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

    def score_pairs(
        self,
        a_texts: Sequence[str],
        b_texts: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> torch.Tensor:
        """Scores of text pairs `(a_texts[i], b_texts[i])`, `a` on the `u` side of the head.

        Args:
            a_texts (`Sequence[str]`): first sentences.
            b_texts (`Sequence[str]`): second sentences, as many.
            batch_size (`int`, *optional*, defaults to `32`): texts per forward pass.
            show_progress_bar (`bool`, *optional*): defaults to on for 1024 texts or more.

        Returns:
            `torch.Tensor`: `[N]` scores (regression) or `[N, num_labels]` logits (classification).
        """
        a_texts, b_texts = _check_texts(a_texts, "a_texts"), _check_texts(b_texts, "b_texts")
        if len(a_texts) != len(b_texts):
            raise ValueError(f"Got {len(a_texts)} first sentences and {len(b_texts)} second sentences.")
        if not a_texts:
            raise ValueError("score_pairs() got no pairs.")
        u = self.encode(a_texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        v = self.encode(b_texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.score_embeddings(u, v)
        finally:
            self.train(was_training)

    def score_candidates(
        self, query: str | torch.Tensor, candidate_embeddings: torch.Tensor, batch_size: int = 8192
    ) -> torch.Tensor:
        """Score one query against candidates whose embeddings were computed once by `encode`.

        The head's first layer is split by feature block, `W [u; v; u*v; |u-v|] = W_u u + (W_v + W_p diag(u)) v
        + W_d |u - v|`, so the per-query work is one embedding and two `[N, E] x [E, hidden]` products; the result
        equals `score_pairs([query] * N, candidates)` up to float rounding. The query is on the `u` side.

        Args:
            query (`str | torch.Tensor`): the query text, or its embedding of shape `(embedding_dim,)`.
            candidate_embeddings (`torch.Tensor` of shape `(num_candidates, embedding_dim)`): from `encode`.
            batch_size (`int`, *optional*, defaults to `8192`): candidates per chunk (bounds the memory).

        Returns:
            `torch.Tensor`: `[num_candidates]` scores (regression) or `[num_candidates, num_labels]` logits.
        """
        candidates = torch.as_tensor(candidate_embeddings)
        if candidates.dim() != 2 or candidates.shape[1] != self.embedding_dim:
            raise ValueError(
                f"candidate_embeddings must have shape [num_candidates, {self.embedding_dim}] (from encode), "
                f"got {tuple(candidates.shape)}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        if isinstance(query, str):
            u = self.encode(query)
        elif isinstance(query, torch.Tensor):
            u = query
        else:
            raise TypeError(f"query must be a string or its embedding tensor, got {type(query).__name__}.")
        if u.shape != (self.embedding_dim,):
            raise ValueError(
                f"The query embedding must have shape [{self.embedding_dim}], got {tuple(u.shape)}."
            )
        head = self.head
        weight = head.dense.weight
        candidates = candidates.to(device=weight.device, dtype=weight.dtype)
        u = u.to(device=weight.device, dtype=weight.dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                w_u, w_v, w_p, w_d = weight.split(self.embedding_dim, dim=1)
                constant = w_u @ u + head.dense.bias
                w_query = (w_v + w_p * u).T.contiguous()
                w_d = w_d.T.contiguous()
                out = []
                for start in range(0, candidates.shape[0], batch_size):
                    v = candidates[start : start + batch_size]
                    hidden = torch.addmm(constant, v, w_query) + (v - u).abs() @ w_d
                    out.append(head.out_proj(F.relu(hidden)))
                logits = torch.cat(out) if out else head.out_proj.weight.new_zeros(0, self.config.num_labels)
        finally:
            self.train(was_training)
        return logits.squeeze(-1) if self.config.task == "regression" else logits


__all__ = ["DSEOutput", "DSEPairHead", "DistilledPairScorer", "pair_features", "top_layers_mean"]
