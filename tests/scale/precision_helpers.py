"""Tiny training set-ups of every trainer of the library, for the mixed-precision and checkpointing tests.

Each builder takes a folder and extra `TrainingArguments` fields (`bf16=True`, `activation_checkpointing=True`,
...) and returns a ready trainer whose run is two optimiser steps of a tiny random model on CPU. The set-ups are
those of the wings' own tests (`tests/<wing>/`), shrunk to what a two-step run needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from faithfulness.helpers import INSTRUCTION, ROWS
from PIL import Image
from relation.helpers import LABELS, examples, tiny_classifier
from tiny_models import (
    TEXTS,
    WORDS,
    bert_config,
    bert_tokenizer,
    tiny_causal_lm,
    word_tokenizer,
)
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
)

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.core.losses.base import ContrastiveLoss
from hf_contrastive.embeddings.dse import DistilledPairScorer, DSEConfig, DSETrainer, DSETrainingArguments
from hf_contrastive.embeddings.dse.teacher import CrossEncoderTeacherTrainer
from hf_contrastive.embeddings.text2token import (
    Text2TokenConfig,
    Text2TokenTrainer,
    tfidf_targets,
    token_target_dataset,
)
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer
from hf_contrastive.generation.simctg import SimCTGCollator, SimCTGConfig, SimCTGTrainer
from hf_contrastive.relation.tkre import (
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    TKREConfig,
    TKREPretrainer,
)
from hf_contrastive.retrieval.rerankers import (
    CrossEncoderReranker,
    CrossEncoderRerankerConfig,
    LLMYesNoReranker,
    RerankerConfig,
    RerankerTrainer,
)
from hf_contrastive.vision.close import CLOSECaptioner, CLOSETrainer, CLOSETrainingArguments
from hf_contrastive.vision.hydra import HydraModel, HydraTrainer, HydraTrainingArguments, load_image_folder
from hf_contrastive.vision.pixel_linguist import (
    PixelLinguistConfig,
    PixelLinguistModel,
    PixelLinguistTrainer,
    PixelLinguistTrainingArguments,
    visual_pairs,
)
from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer
from tests.vision.tiny_vision import tiny_clip, tiny_dual, tiny_processor, write_images

STEPS = 2

# Fields every run shares: two optimiser steps on CPU, nothing written, nothing reported.
COMMON: dict[str, Any] = dict(
    max_steps=STEPS,
    use_cpu=True,
    report_to="none",
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    seed=0,
    learning_rate=1e-2,
)

# Non-reentrant checkpointing: the recomputation replays the forward's random state (dropout masks), and a block
# whose inputs do not require grad (frozen embeddings under LoRA) still gets its parameters' gradients.
CHECKPOINTING: dict[str, Any] = dict(
    activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False}
)


def training_args(cls: type, folder: Path, **fields: Any) -> Any:
    """`cls(**COMMON, output_dir=folder, **fields)`: later fields win.

    Args:
        cls (`type`): a `TrainingArguments` class (the library's subclasses included).
        folder (`Path`): the run's folder (`output_dir`).
        fields (`Any`): more fields, or overrides of `COMMON`.
    """
    return cls(**{**COMMON, "output_dir": str(folder), **fields})


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` random short sentences of `tiny_models.WORDS`, all different."""
    g = torch.Generator().manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        length = int(torch.randint(3, 8, (1,), generator=g))
        text = " ".join(WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=g).tolist())
        if text not in out:
            out.append(text)
    return out


def tiny_encoder(folder: Path, seed: int = 0, dropout: float | None = None) -> SentenceEncoder:
    """A random 2-layer BERT `SentenceEncoder` (mean pooling) with its tokenizer.

    Args:
        folder (`Path`): where the tokenizer's vocabulary is written.
        seed (`int`, *optional*, defaults to 0): the weights' seed.
        dropout (`float`, *optional*): BERT's hidden and attention dropout (default: BERT's 0.1).
    """
    tok = bert_tokenizer(folder / "vocab")
    config = bert_config(len(tok))
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    torch.manual_seed(seed)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=config))
    model.tokenizer = tok
    return model


def pairs(n: int = 8) -> Dataset:
    return Dataset.from_dict({"anchor": sentences(n, 1), "positive": sentences(n, 2)})


# -- one builder per trainer -------------------------------------------------------------------------------------


def contrastive(folder: Path, dropout: float | None = None, **fields: Any) -> Trainer:
    """`ContrastiveTrainer`: InfoNCE on 8 (anchor, positive) pairs, 4 per batch.

    Args:
        folder (`Path`): the run's folder.
        dropout (`float`, *optional*): the encoder's dropout (default: BERT's 0.1).
        fields (`Any`): `ContrastiveConfig` fields (`bf16`, `gradcache_mini_batch_size`, ...).
    """
    args = training_args(ContrastiveConfig, folder, per_device_train_batch_size=4, **fields)
    return ContrastiveTrainer(model=tiny_encoder(folder, dropout=dropout), args=args, train_dataset=pairs())


def contrastive_gradcache(folder: Path, **fields: Any) -> Trainer:
    return contrastive(folder, gradcache_mini_batch_size=2, **fields)


def text2token(folder: Path, **fields: Any) -> Trainer:
    encoder = tiny_encoder(folder)
    data = token_target_dataset(
        TEXTS, tfidf_targets(TEXTS, encoder.tokenizer), vocab_size=len(encoder.tokenizer)
    )
    args = training_args(Text2TokenConfig, folder, per_device_train_batch_size=3, **fields)
    return Text2TokenTrainer(model=encoder, args=args, train_dataset=data)


def _scored_pairs(n: int = 8) -> Dataset:
    a, b = sentences(n, 3), sentences(n, 4)
    shared = [float(len(set(x.split()) & set(y.split()))) for x, y in zip(a, b)]
    return Dataset.from_dict({"sentence1": a, "sentence2": b, "score": shared, "teacher_logits": shared})


def dse(folder: Path, **fields: Any) -> Trainer:
    tok = bert_tokenizer(folder / "vocab")
    torch.manual_seed(0)
    model = DistilledPairScorer(
        DSEConfig(
            backbone_config=bert_config(len(tok), layers=4), classifier_hidden_size=16, max_seq_length=32
        )
    )
    model.tokenizer = tok
    args = training_args(DSETrainingArguments, folder, per_device_train_batch_size=4, **fields)
    return DSETrainer(model=model, args=args, train_dataset=_scored_pairs())


class PairCollator:
    """Rows -> `[CLS] a [SEP] b [SEP]` batches with float `labels` (the cross-encoder teacher's regression)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = dict(
            self.tokenizer(
                [r["sentence1"] for r in rows],
                [r["sentence2"] for r in rows],
                padding=True,
                return_tensors="pt",
            )
        )
        feats["labels"] = torch.tensor([r["score"] for r in rows], dtype=torch.float32)
        return feats


def cross_encoder_teacher(folder: Path, **fields: Any) -> Trainer:
    tok = bert_tokenizer(folder / "vocab")
    config = bert_config(len(tok))
    config.num_labels, config.problem_type = 1, "regression"
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    args = training_args(
        TrainingArguments, folder, per_device_train_batch_size=4, remove_unused_columns=False, **fields
    )
    return CrossEncoderTeacherTrainer(
        model=model, args=args, train_dataset=_scored_pairs(), data_collator=PairCollator(tok)
    )


RERANK_GROUPS = {
    "anchor": ["dog runs", "cat sleeps", "it rains today", "woman plays guitar"],
    "positive": ["dog runs in park", "cat sleeps on sofa", "rains today", "the woman plays loud music"],
    "negative_1": ["car drives fast", "red house", "sun shines bright", "bread piece"],
}


def reranker_cross_encoder(folder: Path, **fields: Any) -> Trainer:
    tok = bert_tokenizer(folder / "vocab")
    torch.manual_seed(0)
    model = CrossEncoderReranker(
        CrossEncoderRerankerConfig(backbone_config=bert_config(len(tok)).to_dict(), max_seq_length=48)
    )
    model.tokenizer = tok
    args = training_args(
        RerankerConfig, folder, objective="listwise", per_device_train_batch_size=2, **fields
    )
    return RerankerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(RERANK_GROUPS))


def reranker_llm(folder: Path, **fields: Any) -> Trainer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", ":", *sorted(set(WORDS)), "."]
    vocab = list(dict.fromkeys(vocab))
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
        )
    )
    model = LLMYesNoReranker.from_backbone(
        lm,
        tokenizer=tok,
        yes_token="yes",
        no_token="no",
        prompt_template="query : {query} . document : {document} . yes or no :",
        max_seq_length=40,
    )
    args = training_args(RerankerConfig, folder, objective="cl", per_device_train_batch_size=2, **fields)
    return RerankerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(RERANK_GROUPS))


def span_unlikelihood(folder: Path, **fields: Any) -> Trainer:
    tok = word_tokenizer()
    # SFTConfig (trl) turns bf16 and gradient checkpointing on unless told otherwise: say both explicitly.
    fields = {"bf16": False, "activation_checkpointing": False, **fields}
    args = training_args(
        SpanUnlikelihoodConfig,
        folder,
        objective="unlikelihood",
        eps=0.5,
        instruction=INSTRUCTION,
        max_length=64,
        per_device_train_batch_size=3,
        **fields,
    )
    return SpanUnlikelihoodTrainer(
        model=tiny_causal_lm(len(tok)), args=args, train_dataset=Dataset.from_list(ROWS), processing_class=tok
    )


def simctg(folder: Path, **fields: Any) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": torch.randint(1, 64, (12,), generator=g).tolist()} for _ in range(8)]
    args = training_args(SimCTGConfig, folder, per_device_train_batch_size=4, **fields)
    return SimCTGTrainer(model=model, args=args, train_dataset=rows, data_collator=SimCTGCollator(0))


def relation_classification(folder: Path, **fields: Any) -> Trainer:
    args = training_args(RelationFinetuneConfig, folder, per_device_train_batch_size=3, **fields)
    return RelationClassificationTrainer(model=tiny_classifier(folder), args=args, train_dataset=examples())


def tkre(folder: Path, **fields: Any) -> Trainer:
    tok = bert_tokenizer(folder / "vocab")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(bert_config(len(tok)))
    # Stage 2 (MSLM + span contrastive) alone.
    args = training_args(
        TKREConfig,
        folder,
        stage1_epochs=0,
        stage2_epochs=1,
        projection_dim=16,
        per_device_train_batch_size=3,
        **fields,
    )
    return TKREPretrainer(mlm, args=args, stage2_dataset=examples(), relations=LABELS, processing_class=tok)


def image_rows(folder: Path, n: int = 4) -> list[dict[str, Any]]:
    paths = write_images(folder / "images", n, seed=2)
    words = "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa".split()
    return [{"image": p, "captions": [" ".join(words[k : k + 4])]} for k, p in enumerate(paths)]


def image_text(folder: Path, family: str = "clip", **fields: Any) -> Trainer:
    """`ImageTextContrastiveTrainer` on 4 image-caption pairs, one batch.

    Args:
        folder (`Path`): the run's folder (images and vocabulary are written there).
        family (`str`, *optional*, defaults to `"clip"`): `"clip"` (`CLIPModel`) or `"dual"`
            (`VisionTextDualEncoderModel`), both with dropout 0.1.
        fields (`Any`): `ImageTextContrastiveConfig` fields.
    """
    processor = tiny_processor(folder / "vocab")
    build = {"clip": tiny_clip, "dual": tiny_dual}[family]
    args = training_args(
        ImageTextContrastiveConfig, folder, per_device_train_batch_size=4, max_seq_length=16, **fields
    )
    return ImageTextContrastiveTrainer(
        model=build(len(processor.tokenizer), dropout=0.1),
        args=args,
        train_dataset=Dataset.from_list(image_rows(folder)),
        processing_class=processor,
    )


def image_text_gradcache(folder: Path, **fields: Any) -> Trainer:
    return image_text(folder, gradcache_mini_batch_size=2, **fields)


def image_text_dual(folder: Path, **fields: Any) -> Trainer:
    return image_text(folder, family="dual", **fields)


def image_text_improved(folder: Path, **fields: Any) -> Trainer:
    improved = {
        "projection_dim": 8,
        "projector_hidden_size": 16,
        "use_siamlip": True,
        "siamlip_hidden_size": 16,
    }
    return image_text(
        folder, family="dual", loss="improved", improved={**improved, "siamlip_dim": 8}, **fields
    )


def close(folder: Path, **fields: Any) -> Trainer:
    tok = word_tokenizer(chat=False)
    model = CLOSECaptioner.from_lm(
        tiny_causal_lm(len(tok), seed=1), tokenizer=tok, embedding_dim=16, noise_std=0.1, max_target_length=8
    )
    g = torch.Generator().manual_seed(0)
    captions = ["a man is eating food", "dog runs in park", "cat sleeps on sofa", "the woman plays guitar"]
    rows = [{"embedding": torch.randn(16, generator=g).tolist(), "text": c} for c in captions]
    args = training_args(CLOSETrainingArguments, folder, per_device_train_batch_size=2, **fields)
    return CLOSETrainer(model=model, args=args, train_dataset=Dataset.from_list(rows))


def _image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((20, 18, 3)) * 80 + c * 80).astype("uint8")).save(
                root / name / f"{i}.png"
            )
    return root


def hydra(folder: Path, **fields: Any) -> Trainer:
    data = load_image_folder(_image_folder(folder / "images"))
    torch.manual_seed(0)
    vit = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
    )
    model = HydraModel.from_backbone(
        vit,
        labels=data.features["label"].names,
        label_embedding_dim=6,
        gate_hidden_size=10,
        projector_hidden_size=12,
        feature_dim=8,
    )
    args = training_args(HydraTrainingArguments, folder, per_device_train_batch_size=6, **fields)
    return HydraTrainer(model=model, args=args, train_dataset=data)


def pixel_linguist(folder: Path, **fields: Any) -> Trainer:
    torch.manual_seed(0)
    body = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24}
    model = PixelLinguistModel(PixelLinguistConfig(backbone_config=body, max_patches=16))
    data = visual_pairs(sentences(8), seed=0)
    args = training_args(PixelLinguistTrainingArguments, folder, per_device_train_batch_size=4, **fields)
    return PixelLinguistTrainer(model=model, args=args, train_dataset=data)


BUILDERS: dict[str, Callable[..., Trainer]] = {
    "contrastive": contrastive,
    "contrastive_gradcache": contrastive_gradcache,
    "text2token": text2token,
    "dse": dse,
    "cross_encoder_teacher": cross_encoder_teacher,
    "reranker_cross_encoder": reranker_cross_encoder,
    "reranker_llm": reranker_llm,
    "span_unlikelihood": span_unlikelihood,
    "simctg": simctg,
    "relation_classification": relation_classification,
    "tkre": tkre,
    "image_text": image_text,
    "image_text_gradcache": image_text_gradcache,
    "image_text_dual": image_text_dual,
    "image_text_improved": image_text_improved,
    "close": close,
    "hydra": hydra,
    "pixel_linguist": pixel_linguist,
}


# -- what a run did ----------------------------------------------------------------------------------------------


class GradientRecorder(TrainerCallback):
    """Float64 copies of every trainable parameter's gradient just before each optimiser step, by name.

    With `max_grad_norm=0` nothing clips or unscales them first: under a loss scaler they are the *scaled*
    gradients (accelerate unscales inside `optimizer.step`), so the scale in force is recorded beside them.

    Args:
        scaler (`torch.amp.GradScaler`, *optional*): the run's loss scaler, whose scale is recorded (1 without).
    """

    def __init__(self, scaler: Any = None) -> None:
        self.scaler = scaler
        self.steps: list[dict[str, torch.Tensor]] = []
        self.scales: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = {}
        for name, p in model.named_parameters():
            if p.requires_grad and p.grad is not None:
                grads[name] = p.grad.detach().to(torch.float64).cpu().clone()
        self.steps.append(grads)
        self.scales.append(float(self.scaler.get_scale()) if self.scaler is not None else 1.0)
        return control


class CheckpointCounter:
    """Stands in for `torch.utils.checkpoint.checkpoint` and counts what it does.

    `blocks`: calls (one per checkpointed layer per forward); `runs`: executions of the layers' forward, which
    exceed `blocks` exactly when the backward recomputed activations instead of reading stored ones.

    Args:
        checkpoint (`Callable`): the function it wraps (`torch.utils.checkpoint.checkpoint`).
    """

    def __init__(self, checkpoint: Callable[..., Any]) -> None:
        self.checkpoint = checkpoint
        self.blocks = 0
        self.runs = 0

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.blocks += 1

        def counted(*a: Any, **k: Any) -> Any:
            self.runs += 1
            return function(*a, **k)

        return self.checkpoint(counted, *args, **kwargs)


class LossCalls:
    """Every call of a library loss (any `ContrastiveLoss`, including those a model builds in its forward): the
    dtypes of its floating-point inputs, whether autocast was on when its `forward` started, the loss's dtype.

    A context manager: global module hooks, removed on exit.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._open: list[int] = []  # calls whose forward has not returned yet (losses may call losses)
        self._handles: list[Any] = []

    def __enter__(self) -> LossCalls:
        self._handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(self._before),
            torch.nn.modules.module.register_module_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, ContrastiveLoss):
            tensors = [a for a in _flatten(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
            self._open.append(len(self.calls))
            self.calls.append(
                {
                    "loss": type(module).__name__,
                    "inputs": {t.dtype for t in tensors},
                    "autocast": any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")),
                    "output": None,
                }
            )

    def _after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if isinstance(module, ContrastiveLoss) and self._open:
            loss = getattr(output, "loss", output)
            self.calls[self._open.pop()]["output"] = loss.dtype if isinstance(loss, torch.Tensor) else None


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [value]


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
