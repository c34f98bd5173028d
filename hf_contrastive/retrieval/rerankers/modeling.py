"""Reranker heads: a cross-encoder and an LLM scoring the "yes" token.

Both take tokenised (query, document) pairs and return one relevance logit per pair
(`RerankerOutput.logits`, shape `[num_pairs]`); both offer `predict(pairs)` and
`rerank(query, documents)` on raw text, and are `PreTrainedModel`s registered with the Auto
classes, so `save_pretrained` / `AutoModel.from_pretrained` round-trip every setting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from hf_contrastive.core.boundary import cap_max_length, corrupt_file_errors, position_limit
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin
from hf_contrastive.retrieval.rerankers.configuration import (
    CrossEncoderRerankerConfig,
    LLMYesNoRerankerConfig,
)
from hf_contrastive.retrieval.rerankers.losses import PointwiseBCELoss, YesNoSFTLoss


@dataclass
class RerankerOutput(ModelOutput):
    """Output of a reranker forward.

    Args:
        loss (`torch.Tensor | None`, *optional*): the training loss when labels/groups were given (not used by the trainer, which
            computes its own).
        logits (`[num_pairs]`): one relevance score per (query, document) pair.
        yes_no_logits (`[num_pairs, 2]`, LLM reranker only): the (no, yes) next-token logits.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    yes_no_logits: torch.Tensor | None = None


def _check_pairs(pairs: Any) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of (query, document) tuples, got {type(pairs).__name__}.")
    out = []
    for i, p in enumerate(pairs):
        if not (isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise TypeError(f"pairs[{i}] must be a (query, document) pair of strings, got {p!r:.80}.")
        out.append((p[0], p[1]))
    return out


class _RerankerMixin(HubMixin):
    """`predict` / `rerank`, loading, and the model card shared by both heads (saving: [`HubMixin`])."""

    card_template = "reranker.md"
    card_pipeline_tag = "text-ranking"
    card_tags = ("reranker", "text-ranking")

    tokenizer: Any

    def tokenize_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def truncation_length(self) -> int:
        """`config.max_seq_length`, cut to the backbone's token limit (with a warning once when larger)."""
        config = self.config  # type: ignore[attr-defined]
        return cap_max_length(config.max_seq_length, position_limit(config), "max_seq_length")

    @torch.inference_mode()
    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 32,
        activation: bool | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Relevance scores of `(query, document)` pairs, shape `[len(pairs)]` (float32, CPU).

        Pairs are sorted by length so each batch pads little. `activation` applies the
        configured output activation (cross-encoder: sigmoid by default); the LLM reranker's
        scores are logits (log-odds of yes, or the yes logit).
        """
        pairs = _check_pairs(pairs)
        if not pairs:
            return torch.empty(0)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if self.tokenizer is None:
            raise ValueError(
                "This reranker has no tokenizer: set `model.tokenizer` or load it from a folder with one."
            )
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        starts = range(0, len(pairs), batch_size)
        if show_progress_bar:
            starts = tqdm(starts, desc="Reranking")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = torch.empty(len(pairs))
        try:
            for s in starts:
                idx = order[s : s + batch_size]
                feats = self.tokenize_pairs([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
                logits = self(**{k: v.to(device) for k, v in feats.items()}).logits.float().cpu()
                out[torch.tensor(idx)] = logits
        finally:
            self.train(was_training)
        use_activation = activation if activation is not None else True
        return self._activate(out) if use_activation else out

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def rerank(
        self, query: str, documents: Sequence[str], top_k: int | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Documents sorted by relevance to `query`: `[{"corpus_id": index, "score": s, "text": doc}]`.

        Args:
            query (`str`): the query.
            documents (`Sequence[str]`): the candidate documents.
            top_k (`int | None`, *optional*): keep the `top_k` best documents (an int >= 1); `None` keeps all.
            batch_size (`int`, *optional*, defaults to `32`): pairs per forward pass.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            # A slice with top_k=-1 would silently drop the last document; 0 would return nothing.
            raise ValueError(f"top_k must be an int >= 1 (or None for all documents), got {top_k!r}.")
        docs = list(documents)
        scores = self.predict([(query, d) for d in docs], batch_size=batch_size).tolist()
        ranked = sorted(range(len(docs)), key=lambda i: -scores[i])
        ranked = ranked[:top_k] if top_k is not None else ranked
        return [{"corpus_id": i, "score": scores[i], "text": docs[i]} for i in ranked]

    def card_details(self) -> dict[str, Any]:
        """Settings of the head for `model_cards/reranker.md` (each head adds its own rows)."""
        config = self.config  # type: ignore[attr-defined]
        return {
            "backbone_type": getattr(config.backbone_config, "model_type", "unknown"),
            "max_seq_length": config.max_seq_length,
            "example_query": "what causes rain?",
            "example_documents": ["Clouds release water as rain.", "Cats sleep a lot."],
        }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved reranker folder (with its tokenizer when the folder has one)."""
        with corrupt_file_errors(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)  # type: ignore[misc]
        folder = Path(pretrained_model_name_or_path)
        if (folder / "tokenizer_config.json").is_file():
            model.tokenizer = AutoTokenizer.from_pretrained(folder)
        if folder.is_dir():
            model.card_info = ModelCardInfo.from_folder(folder)
        return model


class CrossEncoderHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> linear to one logit (the classification head of BERT/RoBERTa)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x)).squeeze(-1)


class CrossEncoderReranker(_RerankerMixin, PreTrainedModel):
    r"""Cross-encoder reranker (monoBERT): `[CLS] query [SEP] document [SEP]` -> one logit.

    Train it pointwise (BCE on relevant / irrelevant pairs) or listwise (InfoNCE over one
    relevant and n irrelevant documents per query) with [`RerankerTrainer`].

    Example::

        >>> reranker = CrossEncoderReranker.from_backbone("sentence-transformers/all-MiniLM-L6-v2")
        >>> reranker.rerank("what causes rain?", ["Clouds release water.", "Cats sleep a lot."])
    """

    config_class = CrossEncoderRerankerConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: CrossEncoderRerankerConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("CrossEncoderRerankerConfig.backbone_config is required.")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        if self.backbone.config._attn_implementation is None:
            self.backbone.config._attn_implementation = "sdpa" if self.backbone._supports_sdpa else "eager"
        self.head = CrossEncoderHead(config.hidden_size, config.head_dropout)
        self.tokenizer = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, CrossEncoderHead):
            std = getattr(self.config.backbone_config, "initializer_range", 0.02)
            for lin in (module.dense, module.out_proj):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
                nn.init.zeros_(lin.bias)

    @classmethod
    def from_backbone(
        cls, name_or_path: str | os.PathLike, tokenizer: Any = None, **config_kwargs: Any
    ) -> CrossEncoderReranker:
        """A new reranker on a pretrained encoder (a plain transformers or sentence-transformers
        folder such as all-MiniLM-L6-v2); the head is freshly initialised."""
        backbone = AutoModel.from_pretrained(name_or_path, add_pooling_layer=False)
        model = cls(
            CrossEncoderRerankerConfig(backbone_config=backbone.config.to_dict(), **config_kwargs), backbone
        )
        model.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(name_or_path)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    card_citations = (PointwiseBCELoss.citation,)

    def card_details(self) -> dict[str, Any]:
        details = super().card_details()
        config = self.config
        details.update(
            {
                "title": "Cross-encoder reranker",
                "description": (
                    "A cross-encoder reranker made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
                    f"a `{details['backbone_type']}` encoder reads a query and a document together and a small head "
                    "turns the pair into one relevance score (monoBERT)."
                ),
                "kind": "cross-encoder",
                "class_name": type(self).__name__,
                "rows": {
                    "input": "`[CLS] query [SEP] document [SEP]` (the document is truncated first)",
                    "pooling": f"`{config.pooling}`",
                    "head": f"Dropout({config.head_dropout}) -> Linear -> tanh -> Dropout -> Linear(-> 1)",
                    "score": "sigmoid of the logit" if config.activation == "sigmoid" else "the logit",
                },
            }
        )
        return details

    def tokenize_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pair encoding `[CLS] q [SEP] d [SEP]`; the document is truncated first."""
        return dict(
            self.tokenizer(
                list(queries),
                list(documents),
                padding=True,
                truncation="longest_first",
                max_length=self.truncation_length,
                return_tensors="pt",
            )
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> RerankerOutput:
        """Logits `[B]` for `B` tokenised pairs; with `labels` (0/1, `[B]`) also the BCE loss."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra, **kwargs)
        states = out.last_hidden_state
        if self.config.pooling == "mean":
            mask = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).unsqueeze(
                -1
            )
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            pooled = states[:, 0]
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return RerankerOutput(loss=loss, logits=logits)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.config.activation == "sigmoid" else logits


class LLMYesNoReranker(_RerankerMixin, PreTrainedModel):
    r"""A causal LM as a pointwise reranker: prompt(query, document) -> logit of the "yes" token.

    The prompt (`config.prompt_template`) is tokenised as prefix + document + suffix with the
    document cut to fit `max_seq_length` and padded on the left, so the last position of every
    row is the one predicting the answer; only the "yes" and "no" rows of the LM head are
    computed. LoRA: pass `peft_config` to [`RerankerTrainer`] (targets such as
    `q_proj`/`v_proj`).
    """

    config_class = LLMYesNoRerankerConfig
    base_model_prefix = "lm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: LLMYesNoRerankerConfig, lm: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if config.backbone_config is None:
            raise ValueError("LLMYesNoRerankerConfig.backbone_config is required.")
        if config.yes_token_id is None or config.no_token_id is None:
            raise ValueError("LLMYesNoRerankerConfig needs yes_token_id and no_token_id (use from_backbone).")
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(config.backbone_config)
        if self.lm.config._attn_implementation is None:
            self.lm.config._attn_implementation = "sdpa" if self.lm._supports_sdpa else "eager"
        self.tokenizer = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # no new parameters: the LM initialises itself

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike | PreTrainedModel,
        tokenizer: Any = None,
        yes_token: str = " yes",
        no_token: str = " no",
        **config_kwargs: Any,
    ) -> LLMYesNoReranker:
        """A reranker on a pretrained causal LM (a folder, or an already loaded model with
        `tokenizer=`). The answer tokens are the first tokens of `yes_token` / `no_token`."""
        lm = (
            name_or_path
            if isinstance(name_or_path, PreTrainedModel)
            else AutoModelForCausalLM.from_pretrained(name_or_path)
        )
        if tokenizer is None:
            if isinstance(name_or_path, PreTrainedModel):
                raise ValueError("Pass tokenizer= when giving an already loaded model.")
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        yes = tokenizer.encode(yes_token, add_special_tokens=False)
        no = tokenizer.encode(no_token, add_special_tokens=False)
        if not yes or not no or yes[0] == no[0]:
            raise ValueError(
                f"{yes_token!r} and {no_token!r} must start with different tokens; got {yes} and {no}."
            )
        config = LLMYesNoRerankerConfig(
            backbone_config=lm.config.to_dict(), yes_token_id=yes[0], no_token_id=no[0], **config_kwargs
        )
        model = cls(config, lm)
        model.tokenizer = tokenizer
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    card_citations = (YesNoSFTLoss.citation,)

    def card_details(self) -> dict[str, Any]:
        details = super().card_details()
        config = self.config
        objective = {
            "sft": "SFT: cross-entropy of the softmax over the (no, yes) logits",
            "cl": "contrastive: InfoNCE over the yes logits of one relevant and n irrelevant documents",
        }[config.objective]
        details.update(
            {
                "title": "LLM reranker",
                "description": (
                    "A reranker made with [hf-contrastive](https://github.com/hf-contrastive/hf-contrastive): "
                    f"a `{details['backbone_type']}` causal language model reads a prompt holding the query and the "
                    'document, and the pair is scored by its next-token logit of "yes".'
                ),
                "kind": "llm",
                "class_name": type(self).__name__,
                "rows": {
                    "prompt": "`" + config.prompt_template.replace("\n", " / ") + "`",
                    "answer token ids": f"yes = {config.yes_token_id}, no = {config.no_token_id}",
                    "objective": objective,
                    "score": "yes - no logit (log-odds of yes)"
                    if config.resolved_score_mode == "yes_minus_no"
                    else "yes logit",
                },
            }
        )
        return details

    def tokenize_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded prompt ids: `prefix(query) + document[:budget] + suffix`."""
        tok = self.tokenizer
        template = self.config.prompt_template
        head, rest = template.split("{document}")
        suffix_ids = tok.encode(rest, add_special_tokens=False)
        bos = (
            [tok.bos_token_id]
            if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None
            else []
        )
        rows = []
        max_length = self.truncation_length
        for q, d in zip(queries, documents):
            prefix_ids = bos + tok.encode(head.format(query=q), add_special_tokens=False)
            budget = max_length - len(prefix_ids) - len(suffix_ids)
            if budget < 1:  # a very long query: keep its end, always keep the suffix
                prefix_ids = prefix_ids[: max(1, max_length - len(suffix_ids) - 1)]
                budget = 1
            doc_ids = tok.encode(d, add_special_tokens=False)[:budget]
            rows.append(prefix_ids + doc_ids + suffix_ids)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention_mask[i, width - len(r) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> RerankerOutput:
        """Scores `[B]` of left-padded prompts; `yes_no_logits` `[B, 2]` = (no, yes).

        With `labels` (1 relevant / 0 not, `[B]`) the SFT loss is returned: cross-entropy of
        the softmax over (no, yes).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("LLMYesNoReranker expects left-padded inputs (use tokenize_pairs).")
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        base = self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model
        hidden = base(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        ).last_hidden_state[:, -1]
        head = self.lm.get_output_embeddings()
        rows = torch.tensor([self.config.no_token_id, self.config.yes_token_id], device=hidden.device)
        yes_no = hidden @ head.weight[rows].T
        if getattr(head, "bias", None) is not None:
            yes_no = yes_no + head.bias[rows]
        mode = self.config.resolved_score_mode
        scores = yes_no[:, 1] - yes_no[:, 0] if mode == "yes_minus_no" else yes_no[:, 1]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(yes_no.float(), labels.long())
        return RerankerOutput(loss=loss, logits=scores, yes_no_logits=yes_no)


__all__ = ["CrossEncoderReranker", "CrossEncoderHead", "LLMYesNoReranker", "RerankerOutput"]
