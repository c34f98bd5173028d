"""The training engine a `Trainer` runs on (one process, DDP, FSDP, DeepSpeed ZeRO) and the library's rules for each.

Every trainer of the library runs through `transformers.Trainer` and `accelerate`, so the engine is whatever
the user asked for: `torchrun` / `accelerate launch` for DDP, `TrainingArguments(fsdp=..., fsdp_config=
{"version": 2})` or an accelerate FSDP config for FSDP2 (`fully_shard`), `TrainingArguments(deepspeed=...)` or
an accelerate DeepSpeed config for ZeRO. [`EngineMixin`] (a base of every library trainer) adds what the
contrastive objectives need on top of that and refuses, at start, what an engine cannot do:

* **FSDP2 and parameters outside the model.** A learnable temperature or SigLIP bias lives in the loss, not in
  the model. accelerate's FSDP2 preparation swaps every optimiser parameter for its sharded version by looking
  it up among the *model's* parameters and stops with a `KeyError` on any other. The mixin takes the
  optimiser groups that hold only such parameters out of the optimiser for the preparation and puts them back
  after it, in the same place (the learning-rate schedule, built before, keeps driving them).
* **GradCache under FSDP2.** The replays of every mini-batch but the last run with gradient synchronisation
  switched off (`set_requires_gradient_sync(False)`, through `accelerator.no_sync`), so the gradients are
  reduce-scattered once per optimiser step, not once per mini-batch.
* **Saving a sharded run.** Under FSDP the final model is saved from the full (gathered) state dict: the
  folder and its card are those of a single-process run.
* **Refused at start, with what to change:** FSDP asked for where accelerate does not shard (on CPU it falls
  back to DDP without a word); GradCache under DeepSpeed (its replays back-propagate outside `engine.backward`,
  which is where ZeRO reduces or partitions the gradients, so they would be wrong or the engine would stop with
  "gradient computed twice for this partition"); more processes per node than accelerator devices.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "EngineError",
    "EngineInfo",
    "EngineMixin",
    "check_launch_config",
    "detect_engine",
    "fsdp_requested",
    "full_state_dict",
    "gradient_sync_off",
    "keep_outside_parameters_through_prepare",
]


class EngineError(ValueError):
    """A training set-up the chosen engine cannot run correctly; the message says what to change."""


@dataclass(frozen=True)
class EngineInfo:
    """What a trainer's `accelerator` runs on.

    Args:
        name (`str`): `"single"`, `"ddp"`, `"fsdp1"`, `"fsdp2"` or `"deepspeed"`.
        world_size (`int`): number of processes.
        zero_stage (`int | None`): the ZeRO stage under DeepSpeed, else `None`.
        mixed_precision (`str`): accelerate's mixed precision (`"no"`, `"bf16"`, `"fp16"`).
    """

    name: str
    world_size: int
    zero_stage: int | None = None
    mixed_precision: str = "no"

    @property
    def shards(self) -> bool:
        """Whether parameters, gradients or optimiser states are sharded across processes."""
        return self.name in ("fsdp1", "fsdp2") or (self.name == "deepspeed" and bool(self.zero_stage))

    def describe(self) -> str:
        """One line for logs and error messages, e.g. `deepspeed ZeRO-2 on 4 processes`."""
        name = f"deepspeed ZeRO-{self.zero_stage}" if self.name == "deepspeed" else self.name
        return f"{name} on {self.world_size} process{'es' if self.world_size != 1 else ''}"


def detect_engine(accelerator: Any) -> EngineInfo:
    """The engine of an `accelerate.Accelerator` (or of a Trainer's `accelerator`)."""
    state = accelerator.state
    world = int(getattr(state, "num_processes", 1) or 1)
    mp = str(getattr(state, "mixed_precision", "no") or "no")
    ds = getattr(state, "deepspeed_plugin", None)
    if ds is not None:
        stage = ds.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
        return EngineInfo("deepspeed", world, int(stage) if str(stage).isdigit() else None, mp)
    fsdp = getattr(state, "fsdp_plugin", None)
    if fsdp is not None:
        return EngineInfo(f"fsdp{int(getattr(fsdp, 'fsdp_version', 1) or 1)}", world, None, mp)
    return EngineInfo("ddp" if world > 1 else "single", world, None, mp)


def fsdp_requested(args: Any) -> bool:
    """Whether FSDP was asked for, by the `TrainingArguments` (`fsdp=...`) or by an accelerate launch config."""
    fsdp = getattr(args, "fsdp", None)
    asked = bool(fsdp) and fsdp not in ("", [], "no", False)
    return asked or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _is_fsdp2_module(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def keep_outside_parameters_through_prepare(
    accelerator: Any, parameters: Iterable[torch.nn.Parameter]
) -> None:
    """Let accelerate's FSDP2 preparation run on an optimiser that also holds parameters outside the model.

    The optimiser groups made only of `parameters` are removed from the optimiser while
    `accelerator.prepare` shards the model and swaps the optimiser's parameters, then put back at their index.
    Idempotent; a no-op unless `accelerator` prepares with FSDP2.

    Args:
        accelerator (`accelerate.Accelerator`): the trainer's accelerator.
        parameters (`Iterable[torch.nn.Parameter]`): the parameters that live outside the model (a loss's).
    """
    outside = {id(p) for p in parameters}
    known = getattr(accelerator, "_outside_model_parameters", None)
    if known is not None:  # already wrapped: only widen the set
        known |= outside
        return
    if not outside:
        return
    accelerator._outside_model_parameters = outside
    original = accelerator.prepare

    @functools.wraps(original)
    def prepare(*objects: Any, **kwargs: Any) -> Any:
        fsdp2 = getattr(accelerator, "is_fsdp2", False)
        stashed: list[tuple[torch.optim.Optimizer, list[tuple[int, dict]]]] = []
        if fsdp2:
            for obj in objects:
                if isinstance(obj, torch.optim.Optimizer):
                    groups = [
                        (i, g)
                        for i, g in enumerate(obj.param_groups)
                        if g["params"]
                        and all(id(p) in accelerator._outside_model_parameters for p in g["params"])
                    ]
                    for i, _ in reversed(groups):
                        del obj.param_groups[i]
                    stashed.append((obj, groups))
        try:
            return original(*objects, **kwargs)
        finally:
            for opt, groups in stashed:
                for i, g in groups:
                    opt.param_groups.insert(i, g)

    accelerator.prepare = prepare


class EngineMixin:
    """Engine rules for a `transformers.Trainer` subclass (see the module docstring). Put it before `Trainer`.

    Subclasses say what they need through three hooks: [`_parameters_outside_model`] (a loss's learnable
    parameters, in the optimiser but not in the model), [`_uses_gradcache`] and [`_copies_model_weights`].
    """

    def _parameters_outside_model(self) -> list[torch.nn.Parameter]:
        """Trainable parameters the optimiser holds that are not the model's (default: none)."""
        return []

    def _uses_gradcache(self) -> bool:
        """Whether training steps replay mini-batches (GradCache); default `False`."""
        return False

    def _copies_model_weights(self) -> bool:
        """Whether the trainer reads the model's weights outside its forward (a momentum encoder); default `False`."""
        return False

    def _weights_outside_forward(self) -> str:
        """What reads the model's weights outside its forward, for the refusal under sharding."""
        return "The momentum (MoCo) key encoder copies the model's weights outside its forward at every step"

    @property
    def engine(self) -> EngineInfo:
        """The engine this trainer runs on."""
        return detect_engine(self.accelerator)  # type: ignore[attr-defined]

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()  # type: ignore[misc]
        keep_outside_parameters_through_prepare(self.accelerator, self._parameters_outside_model())  # type: ignore[attr-defined]

    def check_engine(self) -> None:
        """Raise [`EngineError`] when the engine cannot run this trainer's set-up; called by `train`."""
        args = self.args  # type: ignore[attr-defined]
        engine = self.engine
        if fsdp_requested(args) and not engine.name.startswith("fsdp"):
            raise EngineError(
                f"FSDP was asked for (fsdp={getattr(args, 'fsdp', None)!r}) but accelerate set up "
                f"{engine.describe()}: it shards with FSDP only on accelerator devices (CUDA, XPU, NPU, ...) and "
                "falls back to DDP on CPU. Run on GPUs, or drop `fsdp` to train with DDP."
            )
        if engine.name == "deepspeed" and self._uses_gradcache():
            raise EngineError(
                f"GradCache cannot run under {engine.describe()}: it back-propagates every mini-batch's replay "
                "itself, outside DeepSpeed's `engine.backward`, which is where ZeRO reduces (stage 1) or "
                "partitions (stages 2-3) the gradients, so they would be wrong or the engine would stop with "
                "'gradient computed twice for this partition'. Use DDP or FSDP2 (`fsdp=\"full_shard\", "
                'fsdp_config={"version": 2}`) for GradCache, or drop `gradcache_mini_batch_size` under '
                "DeepSpeed and train with a per-device batch that fits (negatives are still gathered from every "
                "process)."
            )
        if engine.name == "deepspeed" and self._parameters_outside_model():
            raise EngineError(
                f"{engine.describe()} only optimises the model's own parameters, and this run also trains "
                "parameters that live in the loss (a learnable temperature or bias). Fix them "
                "(`learnable_temperature=False`), or train with DDP or FSDP2, which keep them."
            )
        if self._copies_model_weights() and (engine.name.startswith("fsdp") or engine.zero_stage == 3):
            raise EngineError(
                f"{self._weights_outside_forward()}, and under {engine.describe()} each process holds only a "
                "shard of them. Train with DDP or DeepSpeed ZeRO-1/2 (for MoCo, or use an in-batch loss with "
                "gathered negatives under FSDP)."
            )
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        device = getattr(self.accelerator, "device", torch.device("cpu"))  # type: ignore[attr-defined]
        if getattr(args, "fp16", False) and getattr(device, "type", "cpu") == "cpu":
            raise EngineError(
                "fp16=True on CPU: accelerate runs fp16 autocast and its loss scaler only on accelerator devices "
                "(CUDA, XPU, NPU, MPS, ...), so this run would train in float32 while reporting fp16. Use "
                "bf16=True for mixed precision on CPU, or drop fp16."
            )
        if getattr(device, "type", "cpu") == "cuda" and local > torch.cuda.device_count():
            raise EngineError(
                f"{local} processes per node were launched but this node has {torch.cuda.device_count()} "
                "CUDA device(s): set `num_processes` (accelerate config) or `--nproc_per_node` (torchrun) to "
                "the number of GPUs per node times the number of nodes."
            )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.check_engine()
        return super().train(*args, **kwargs)  # type: ignore[misc]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP2, save from the gathered full state dict (the folder of a single-process run)."""
        model = self.model  # type: ignore[attr-defined]
        if not _is_fsdp2_module(model):
            return super().save_model(output_dir, _internal_call)  # type: ignore[misc]
        args = self.args  # type: ignore[attr-defined]
        output_dir = output_dir if output_dir is not None else args.output_dir
        state = full_state_dict(model)
        if args.should_save:
            self._save(output_dir, state_dict=state)  # type: ignore[attr-defined]
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]
        if args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save")  # type: ignore[attr-defined]


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of an FSDP2 model, on CPU, on rank 0 (empty elsewhere). A collective.

    Built with `full_state_dict=True, cpu_offload=True` (rank 0 receives the gathered tensors). accelerate's
    own choice adds `broadcast_from_rank0=True`, which on CPU returns tensors whose storage is already freed.

    Args:
        model (`torch.nn.Module`): the model after `fully_shard`.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gradient_sync_off(trainer: Any, model: Any) -> Any:
    """A `no_sync` factory for GradCache's replays (DDP and FSDP2), or `None` when nothing synchronises.

    Args:
        trainer (`transformers.Trainer`): the trainer (its accelerator and engine).
        model (`torch.nn.Module`): the model as the training step receives it (DDP-wrapped or FSDP2-sharded).
    """
    if trainer.accelerator.num_processes <= 1:
        return None
    unwrapped = trainer.accelerator.unwrap_model(model)
    if unwrapped is not model or _is_fsdp2_module(model) or hasattr(model, "no_sync"):
        return lambda: trainer.accelerator.no_sync(model)
    return None


def check_launch_config(path: str | os.PathLike, gpus_per_node: int | None = None) -> dict[str, Any]:
    """Check an accelerate launch config before a run; return it as a dict.

    Args:
        path (`str | os.PathLike`): the YAML file given to `accelerate launch --config_file`.
        gpus_per_node (`int`, *optional*): GPUs of each node; defaults to `torch.cuda.device_count()` of this
            machine when it has any (not checked otherwise).

    Raises:
        [`EngineError`]: processes that do not split evenly over the nodes, more processes per node than GPUs,
            fp16 asked for on CPU, a sharding engine on CPU, or an unknown `distributed_type`.
    """
    import yaml

    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise EngineError(
            f"{path}: expected a YAML mapping of accelerate settings, got {type(config).__name__}"
        )
    kind = str(config.get("distributed_type", "NO"))
    known = {"NO", "MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED", "MULTI_XPU", "MULTI_NPU", "MULTI_HPU"}
    if kind not in known:
        raise EngineError(f"{path}: distributed_type {kind!r} is not one of {sorted(known)}")
    processes, machines = int(config.get("num_processes", 1)), int(config.get("num_machines", 1))
    if processes < 1 or machines < 1 or processes % machines:
        raise EngineError(
            f"{path}: num_processes={processes} does not split evenly over num_machines={machines}: "
            "num_processes counts the processes of all nodes (num_machines x GPUs per node)."
        )
    on_cpu = bool(config.get("use_cpu", False)) or kind in ("NO", "MULTI_CPU")
    precision = str(config.get("mixed_precision", "no"))
    if on_cpu and precision == "fp16":
        raise EngineError(f"{path}: fp16 mixed precision needs a GPU; use bf16 (CPU autocast) or no on CPU.")
    if on_cpu and kind in ("FSDP", "DEEPSPEED", "MULTI_GPU"):
        raise EngineError(f"{path}: distributed_type {kind} with use_cpu: true; use MULTI_CPU (DDP) on CPU.")
    if gpus_per_node is None and not on_cpu and torch.cuda.is_available():
        gpus_per_node = torch.cuda.device_count()
    per_node = processes // machines
    if gpus_per_node is not None and not on_cpu and per_node > gpus_per_node:
        raise EngineError(
            f"{path}: {per_node} processes per node (num_processes={processes} over {machines} node(s)) but a "
            f"node has {gpus_per_node} GPU(s): set num_processes to {gpus_per_node * machines}."
        )
    return config
