"""Training scenarios run once on one process (the whole batch) and once sharded (FSDP2, DeepSpeed ZeRO, 2 nodes).

Each scenario builds a tiny float64 model without dropout, a fixed dataset and a `Trainer` of the library for
ONE optimiser step of plain SGD (learning rate 1, constant schedule, no clipping), so that the weights after the
step are `w0 - grad`. [`run`] returns those weights (gathered to full tensors on every engine) with the
gradients seen before the step where the engine keeps them in `.grad` (DDP, FSDP2), and saves the model with
the trainer's own `save_model` when asked. The test compares a sharded run with the single-process run of the
same scenario.

On CPU, accelerate sets up FSDP only on accelerator devices and otherwise falls back to DDP; [`cpu_fsdp2`]
flips the accelerate state of a trainer to FSDP2 right after it is created so that accelerate's own FSDP2
preparation (`fully_shard`, parameter swap, `no_sync`, full state dict) runs on gloo. With `device="cuda"`
the same scenarios take the documented route, `TrainingArguments(fsdp="full_shard", fsdp_config={"version": 2})`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import BertConfig, LlamaConfig, LlamaForCausalLM, TrainerCallback

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from tiny_models import WORDS, bert_config, bert_tokenizer, word_tokenizer  # noqa: E402

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig  # noqa: E402
from hf_contrastive.faithfulness import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer  # noqa: E402
from hf_contrastive.retrieval.rerankers import (  # noqa: E402
    CrossEncoderReranker,
    CrossEncoderRerankerConfig,
    RerankerConfig,
    RerankerTrainer,
)

GLOBAL_BATCH = 8
SCENARIOS = ("infonce_hard_negatives", "gradcache", "learnable_temperature", "lora", "span", "reranker")


def _no_dropout_bert(vocab_size: int) -> BertConfig:
    cfg = bert_config(vocab_size)
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    return cfg


def _sentences(n: int, seed: int, length: int = 5) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=g).tolist())
        for _ in range(n)
    ]


def _triples() -> Dataset:
    a, p, n = _sentences(GLOBAL_BATCH, 1), _sentences(GLOBAL_BATCH, 2), _sentences(GLOBAL_BATCH, 3)
    return Dataset.from_dict({"anchor": a, "positive": p, "negative": n})


def _encoder(workdir: Path) -> SentenceEncoder:
    tok = bert_tokenizer(
        workdir / f"vocab-rank{os.environ.get('RANK', '0')}"
    )  # (one file per process: no race)
    torch.manual_seed(0)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=_no_dropout_bert(len(tok))))
    model.tokenizer = tok
    return model.double()


def _common(workdir: Path, world: int, engine: str, device: str) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        output_dir=str(workdir / "run"),
        per_device_train_batch_size=GLOBAL_BATCH // world,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        use_cpu=device == "cpu",
    )
    if (
        engine == "fsdp2" and device == "cuda"
    ) or engine == "fsdp2-args":  # (fsdp2-args: the route, on any device)
        kw.update(fsdp="full_shard", fsdp_config={"version": 2, "reshard_after_forward": True})
    if engine.startswith("zero"):
        kw["deepspeed"] = deepspeed_config(int(engine[-1]), world)
    return kw


def deepspeed_config(stage: int, world: int) -> dict[str, Any]:
    """The ZeRO config of the scenarios (plain SGD of the Trainer, no clipping, fp32)."""
    return {
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "train_batch_size": GLOBAL_BATCH,
        "train_micro_batch_size_per_gpu": GLOBAL_BATCH // world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }


def cpu_fsdp2(trainer_cls: type) -> type:
    """`trainer_cls` whose accelerator prepares with FSDP2 on CPU (see the module docstring)."""

    class CPUFSDP2(trainer_cls):  # type: ignore[misc, valid-type]
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = FullyShardedDataParallelPlugin(
                fsdp_version=2, reshard_after_forward=True, state_dict_type="FULL_STATE_DICT"
            )
            self.is_fsdp_enabled = True

    CPUFSDP2.__name__ = trainer_cls.__name__
    return CPUFSDP2


def _contrastive(workdir, world, engine, device, **extra) -> tuple[type, dict]:
    # The model is built before the arguments: with a ZeRO-3 config alive, transformers would build it under
    # `deepspeed.zero.Init` (partitioned at birth), and its initial weights would not be the single run's.
    model = _encoder(workdir)
    cfg = ContrastiveConfig(**_common(workdir, world, engine, device), hard_negative_weight=0.5, **extra)
    return ContrastiveTrainer, dict(model=model, args=cfg, train_dataset=_triples())


def _span(workdir, world, engine, device) -> tuple[type, dict]:
    tok = word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).double()
    rows = [
        {
            "document": "the woman plays guitar in paris . it rains today",
            "summary": "the woman plays guitar in london",
            "spans": [[26, 32]],
        },
        {
            "document": "a man is eating food in the big green park",
            "summary": "a man was not eating food",
            "spans": [[6, 13]],
        },
        {"document": "dog runs in park . cat sleeps on sofa", "summary": "dog runs in park", "spans": []},
        {
            "document": "children are playing outside . sun shines bright",
            "summary": "children play inside",
            "spans": [[15, 20]],
        },
    ]
    args = SpanUnlikelihoodConfig(
        **{**_common(workdir, world, engine, device), "per_device_train_batch_size": 4 // world},
        objective="unlikelihood",
        eps=0.5,
        instruction="summarize :",
        max_length=64,
        # SFTConfig defaults to bf16=True: the fused LM head would then project in bf16 under autocast on one
        # process while FSDP2 casts the float64 model to float32 instead; compare the float64 computations.
        bf16=False,
    )
    return SpanUnlikelihoodTrainer, dict(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )


def _reranker(workdir, world, engine, device) -> tuple[type, dict]:
    tok = bert_tokenizer(
        workdir / f"vocab-rank{os.environ.get('RANK', '0')}"
    )  # (one file per process: no race)
    torch.manual_seed(0)
    model = CrossEncoderReranker(
        CrossEncoderRerankerConfig(
            backbone_config=_no_dropout_bert(len(tok)).to_dict(), max_seq_length=48, head_dropout=0.0
        )
    ).double()
    model.tokenizer = tok
    a, p = _sentences(4, 4, 3), _sentences(4, 5, 5)
    n1, n2 = _sentences(4, 6, 4), _sentences(4, 7, 4)
    groups = Dataset.from_dict({"anchor": a, "positive": p, "negative_1": n1, "negative_2": n2})
    args = RerankerConfig(
        **{**_common(workdir, world, engine, device), "per_device_train_batch_size": 4 // world},
        objective="listwise",
    )
    return RerankerTrainer, dict(model=model, args=args, train_dataset=groups)


def build(name: str, workdir: Path, world: int, engine: str, device: str = "cpu") -> tuple[type, dict]:
    """(trainer class, its keyword arguments) of scenario `name`."""
    if name == "infonce_hard_negatives":
        return _contrastive(workdir, world, engine, device, symmetric=True)
    if name == "gradcache":
        return _contrastive(workdir, world, engine, device, gradcache_mini_batch_size=2)
    if name == "learnable_temperature":
        return _contrastive(workdir, world, engine, device, learnable_temperature=True)
    if name == "lora":
        from peft import LoraConfig

        cls, kw = _contrastive(workdir, world, engine, device)
        kw["peft_config"] = LoraConfig(
            r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False
        )
        return cls, kw
    if name == "span":
        return _span(workdir, world, engine, device)
    if name == "reranker":
        return _reranker(workdir, world, engine, device)
    raise ValueError(f"unknown scenario {name!r}; known: {SCENARIOS}")


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().to("cpu", torch.float64).clone()


class _GradGrab(TrainerCallback):
    """Gradients of the model (and of the loss's own parameters) just before the optimiser step."""

    def __init__(self, extra: Callable[[], dict[str, torch.nn.Parameter]]) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.extra = extra

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        params.update({f"loss.{k}": v for k, v in self.extra().items()})
        for n, p in params.items():
            if p.grad is not None:
                self.grads[n] = _full(p.grad)


def run(
    name: str, workdir: Path, engine: str = "single", device: str = "cpu", save: bool = False
) -> dict[str, Any]:
    """Run one optimiser step of scenario `name` on `engine` and return weights, gradients and counters.

    Args:
        name (`str`): one of `SCENARIOS`.
        workdir (`Path`): scratch folder (the same on every rank).
        engine (`str`, *optional*, defaults to `"single"`): `single`, `ddp`, `fsdp2`, `zero1`, `zero2`, `zero3`.
        device (`str`, *optional*, defaults to `"cpu"`): `cpu` or `cuda`.
        save (`bool`, *optional*, defaults to `False`): also `trainer.save_model(workdir / "saved")`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cls, kw = build(name, workdir, world, engine, device)
    if engine == "fsdp2" and device == "cpu":
        cls = cpu_fsdp2(cls)
    if engine == "zero3":
        # ZeRO-3 partitions parameters of half, bfloat16 or float32 only (deepspeed refuses float64 in
        # `zero.Init`); it keeps float32 master weights in every stage anyway, so the comparison bound is float32.
        kw["model"] = kw["model"].float()
    holder: dict[str, Any] = {}

    def loss_params() -> dict[str, torch.nn.Parameter]:
        loss = getattr(holder.get("trainer"), "loss_fn", None)
        return dict(loss.named_parameters()) if isinstance(loss, torch.nn.Module) else {}

    grab = _GradGrab(loss_params)
    trainer = cls(**kw, callbacks=[grab])
    holder["trainer"] = trainer
    syncs_off = [0]
    if name == "gradcache":
        original = trainer.accelerator.no_sync

        def counting_no_sync(model):
            syncs_off[0] += 1
            return original(model)

        trainer.accelerator.no_sync = counting_no_sync
    trainer.train()
    if engine.startswith("zero"):
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}  # (ZeRO-3: rank 0 only)
    else:
        state = trainer.model.state_dict()
    weights = {k: _full(v) for k, v in state.items()}
    weights.update({f"loss.{k}": _full(v) for k, v in loss_params().items()})
    if save:
        trainer.save_model(str(workdir / "saved"))
    return {
        "weights": weights,
        "grads": grab.grads,
        "syncs_off": syncs_off[0],
        "engine": trainer.engine.describe(),
        # the step's loss as the Trainer logs it: the mean over processes of each one's loss
        "loss": float(next(h["loss"] for h in trainer.state.log_history if "loss" in h)),
    }
