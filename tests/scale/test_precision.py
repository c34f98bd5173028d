"""Mixed precision (bf16 / fp16 autocast) and activation checkpointing with every trainer of the library, on CPU.

* Every trainer runs two optimiser steps under bf16 autocast and under non-reentrant activation checkpointing:
  finite losses, weights moved, autocast or checkpointing really engaged.
* The contrastive losses compute their logits in float32 inside an autocast region, and the trainers hand them
  float32 inputs outside one.
* GradCache under autocast gives the gradients of the uncached step; with checkpointing and dropout its replays
  reproduce the dropout masks; a loss scaler reaches every one of its mini-batches.
* fp16 on CPU: accelerate runs neither autocast nor a loss scaler there, so the run is float32 in disguise.

* fp16 asked for on CPU is refused at start (it would train in float32 while reporting fp16).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers.modeling_utils
from tiny_models import summation_tolerance
from transformers import Trainer

from hf_contrastive.core.engines import EngineError
from hf_contrastive.core.losses import CoSENTLoss, InfoNCELoss
from hf_contrastive.core.losses.gradcache import split_features
from hf_contrastive.vision.hydra import HydraLoss
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss
from scale.precision_helpers import (
    BUILDERS,
    CHECKPOINTING,
    CheckpointCounter,
    GradientRecorder,
    LossCalls,
    contrastive,
    tiny_encoder,
    trainable_weights,
)

BF16_UNIT_ROUNDOFF = 2.0**-8  # half of torch.finfo(torch.bfloat16).eps

# Set-ups that once failed, each fixed in the library: checkpointing in TKRE's model, Hydra and the dual encoder;
# bf16 in the improved recipe's heads; float32 logits in every ContrastiveLoss under autocast.
CHECKPOINTING_FAILS: dict[str, pytest.MarkDecorator] = {}
BF16_FAILS: dict[str, pytest.MarkDecorator] = {}
LOSS_PRECISION_FAILS: dict[str, pytest.MarkDecorator] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: faster than several on these tiny models, and steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cases(known: dict[str, pytest.MarkDecorator]) -> list:
    return [pytest.param(name, marks=known.get(name, ())) for name in BUILDERS]


def finite_run(trainer: Trainer) -> None:
    """Train; check that the two steps ran, with finite losses, and moved the weights."""
    before = trainable_weights(trainer.model)
    assert before, "nothing to train"
    result = trainer.train()
    assert trainer.state.global_step == 2
    assert math.isfinite(result.training_loss)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged and all(math.isfinite(v) for v in logged), logged
    after = trainable_weights(trainer.model)
    assert all(torch.isfinite(w).all() for w in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before), "no trainable weight changed"


# -- 1. every trainer, two steps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases(BF16_FAILS))
def test_two_bf16_steps(tmp_path, name):
    trainer = BUILDERS[name](tmp_path, bf16=True)
    dtypes: set[torch.dtype] = set()
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        for m in trainer.model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    try:
        finite_run(trainer)
    finally:
        for h in hooks:
            h.remove()
    assert torch.bfloat16 in dtypes, f"autocast never ran a linear layer in bf16 ({dtypes})"
    # autocast computes in bf16; the weights the optimiser updates stay float32
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("name", cases(CHECKPOINTING_FAILS))
def test_two_steps_with_activation_checkpointing(tmp_path, monkeypatch, name):
    counter = CheckpointCounter(transformers.modeling_utils.checkpoint)
    # read when the trainer enables checkpointing on the model, at the start of train()
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counter)
    trainer = BUILDERS[name](tmp_path, **CHECKPOINTING)
    finite_run(trainer)
    assert counter.blocks > 0, "no layer ran under torch.utils.checkpoint"
    assert counter.runs > counter.blocks, "the backward never recomputed a checkpointed layer"


# -- 2. the losses compute in float32 -----------------------------------------------------------------------------


class MatmulDtypes(torch.overrides.TorchFunctionMode):
    """Dtypes of the results of every matrix product (and cosine) computed while active."""

    PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "einsum", "linear", "cosine_similarity"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.PRODUCTS and isinstance(out, torch.Tensor):
            self.seen.append((name, out.dtype))
        return out


def loss_inputs(name: str) -> tuple[torch.nn.Module, tuple, float, int]:
    """`(loss, bf16 inputs, largest possible |logit|, terms per logit row)` of each loss."""
    g = torch.Generator().manual_seed(0)
    # unit rows, as CLIP and SigLIP expect (the other losses normalise themselves): |logit| <= the scale
    a, b = (F.normalize(torch.randn(8, 32, generator=g), dim=-1).to(torch.bfloat16) for _ in range(2))
    if name == "infonce":
        return InfoNCELoss(temperature=0.05), (a, b), 20.0, 8
    if name == "cosent":
        scores = torch.rand(8, generator=g)
        return CoSENTLoss(scale=20.0), (a, b, scores), 40.0, 8 * 8
    if name == "clip":
        return CLIPLoss(), (a, b, torch.tensor(100.0)), 100.0, 8
    if name == "siglip":
        return SigLIPLoss(), (a, b, torch.tensor(10.0), torch.tensor(-10.0)), 20.0, 8
    labels, targets = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]), torch.tensor([1, 0, 2, 1, 0, 2, 2, 0])
    gates = torch.rand(8, 32, generator=g).to(torch.bfloat16)
    probe = torch.randn(8, 3, generator=g).to(torch.bfloat16)
    # gated cosine logits of temperature 0.1, centred on the row mean: |l| <= 2 / 0.1
    return HydraLoss(num_labels=3), (a, gates, labels, targets, None, probe), 20.0, 8


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=LOSS_PRECISION_FAILS.get(n, ()))
        for n in ("infonce", "cosent", "clip", "siglip", "hydra")
    ],
)
def test_loss_logits_are_float32_under_bf16_autocast(name):
    """Called inside a bf16 autocast region with bf16 embeddings (a loss computed in a model's forward, or user
    code under `torch.autocast`), a loss computes its similarities and its value in float32: the same numbers as
    outside autocast on the upcast inputs. bf16 -> float32 is exact, so only float32 rounding may separate the
    two; logits rounded to bf16 would be off by up to 2**-8 of their size, far above this bound."""
    loss_fn, inputs, max_logit, row = loss_inputs(name)
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as products:
        got = loss_fn(*inputs).loss
    reference = loss_fn(
        *[x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs]
    )
    assert products.seen, "the loss computed no similarity"
    assert {dtype for _, dtype in products.seen} == {torch.float32}, products.seen
    assert got.dtype == torch.float32
    # a logit is a dot product of 32 terms; the loss sums `row` exponentials of logits per row
    allowed = summation_tolerance(torch.float32, max_logit, depth=32 + row)
    gap = abs(float(got) - float(reference.loss))
    assert gap <= allowed, (float(got), float(reference.loss), allowed)
    assert allowed < BF16_UNIT_ROUNDOFF * max_logit  # the bound would catch logits rounded to bf16


TRAINERS_WITH_LIBRARY_LOSSES = [
    "contrastive",
    "contrastive_gradcache",
    "text2token",
    "dse",
    "reranker_cross_encoder",
    "reranker_llm",
    "span_unlikelihood",
    "simctg",
    "tkre",
    "image_text",
    "image_text_gradcache",
    "hydra",
    "pixel_linguist",
]


@pytest.mark.parametrize(
    "name",
    [n for n in TRAINERS_WITH_LIBRARY_LOSSES],
)
def test_bf16_trainers_give_their_losses_float32(tmp_path, name):
    """In a bf16 run every library loss the trainer calls sees float32 inputs outside autocast (accelerate hands the
    model's outputs back in float32) and returns a float32 loss."""
    trainer = BUILDERS[name](tmp_path, bf16=True, max_steps=1)
    with LossCalls() as calls:
        trainer.train()
    assert calls.calls, "no library loss was called"
    for call in calls.calls:
        assert call["inputs"] <= {torch.float32, torch.float64} and not call["autocast"], call
        assert call["output"] == torch.float32, call


# -- 3. GradCache under autocast and with checkpointing -----------------------------------------------------------


def recorded_gradients(trainer: Trainer, scaler: torch.amp.GradScaler | None = None) -> GradientRecorder:
    recorder = GradientRecorder(scaler)
    trainer.add_callback(recorder)
    if scaler is not None:
        # as accelerate does for fp16 on GPUs: `backward` scales the loss, the prepared optimiser unscales
        trainer.accelerator.scaler = scaler
    trainer.train()
    return recorder


def largest(grads: dict[str, torch.Tensor]) -> float:
    return max(float(g.abs().max()) for g in grads.values())


def assert_same_gradients(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], allowed: float
) -> None:
    assert set(got) == set(want) and want
    gaps = {n: float((got[n] - want[n]).abs().max()) for n in want}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= allowed, f"{worst}: gradients differ by {gaps[worst]:.3g} > {allowed:.3g}"


def test_gradcache_equals_the_plain_step_under_bf16_autocast(tmp_path):
    """Same seed, no dropout: the GradCache step (mini-batches of 2 texts) gives the plain step's gradients.

    Each weight gradient is a sum over the batch's rows; under autocast the backward rounds the contribution of
    every forward pass to bf16 once, so GradCache (4 replays) adds 4 rounded partial sums where the plain step
    rounds one. A replay left out, or one back-propagated with another scale, would move the gradients by about a
    quarter of their size, far above this bound.
    """
    fields = dict(bf16=True, max_grad_norm=0.0, max_steps=1)
    plain = recorded_gradients(contrastive(tmp_path / "plain", dropout=0.0, **fields)).steps[0]
    cached = recorded_gradients(
        contrastive(tmp_path / "cached", dropout=0.0, gradcache_mini_batch_size=2, **fields)
    ).steps[0]
    replays = 8 // 2  # 4 pairs = 8 texts per step
    allowed = summation_tolerance(torch.bfloat16, largest(plain), depth=replays + 1, safety=2.0)
    assert allowed < largest(plain) / replays
    assert_same_gradients(cached, plain, allowed)


def test_gradcache_with_checkpointing_and_dropout_replays_the_masks(tmp_path, monkeypatch):
    """float32, dropout 0.1, non-reentrant checkpointing: the GradCache step's gradients are those of ordinary
    autograd (no cache, no checkpointing) on the same mini-batches drawn from the same random state, so both the
    GradCache replay and the checkpoint recomputation redraw the first forward's dropout masks."""
    counter = CheckpointCounter(transformers.modeling_utils.checkpoint)
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counter)
    trainer = contrastive(
        tmp_path / "cached",
        dropout=0.1,
        gradcache_mini_batch_size=2,
        max_grad_norm=0.0,
        max_steps=1,
        **CHECKPOINTING,
    )
    seen = []
    step = trainer.training_step

    def remembering_step(model, inputs, *args, **kwargs):
        seen.append(({k: v.clone() for k, v in inputs.items()}, torch.get_rng_state()))
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = remembering_step
    cached = recorded_gradients(trainer).steps[0]
    assert counter.runs > counter.blocks > 0  # checkpointed and recomputed

    # ordinary autograd, same initial weights, same batch, same random stream, mini-batch by mini-batch
    reference = tiny_encoder(tmp_path / "plain", dropout=0.1).train()
    inputs, rng = seen[0]
    chunks = split_features(inputs, mini_batch_size=2)
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(rng)
        emb = torch.cat([reference(**features).embeddings for _, features in chunks])
        with torch.no_grad():  # the masks matter: the stream that follows gives other embeddings
            other = reference(**chunks[0][1]).embeddings
    assert not torch.allclose(other, emb[: other.shape[0]])
    assert torch.equal(torch.cat([rows for rows, _ in chunks]), torch.arange(emb.shape[0]))
    half = emb.shape[0] // 2
    trainer.loss_fn(emb[:half], emb[half:]).loss.backward()  # GradCache.forward: the uncached loss
    want = {n: p.grad.double() for n, p in reference.named_parameters() if p.grad is not None}
    tokens = int(inputs["attention_mask"].sum())
    assert_same_gradients(cached, want, summation_tolerance(torch.float32, largest(want), depth=tokens))


# -- 4. fp16 and the loss scaler ----------------------------------------------------------------------------------


def test_loss_scaler_reaches_every_gradcache_mini_batch(tmp_path):
    """A `GradScaler` in accelerate's place (what fp16 sets up on a GPU): the GradCache step back-propagates the
    scaled loss to the cached embedding gradients, so every replay carries the scale; unscaled, its gradients are
    the float32 plain step's. float32 compute, so the bound is float32's; the scale is a power of two (exact)."""
    fields = dict(max_grad_norm=0.0, max_steps=1)
    plain = recorded_gradients(contrastive(tmp_path / "plain", dropout=0.0, **fields)).steps[0]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    recorder = recorded_gradients(
        contrastive(tmp_path / "cached", dropout=0.0, gradcache_mini_batch_size=2, **fields), scaler
    )
    assert recorder.scales[0] == 2.0**12
    unscaled = {n: g / recorder.scales[0] for n, g in recorder.steps[0].items()}
    # 8 texts of at most 7 words, with [CLS] and [SEP]: each weight gradient sums at most 72 token terms
    assert_same_gradients(unscaled, plain, summation_tolerance(torch.float32, largest(plain), depth=8 * 9))


def test_fp16_on_cpu_is_refused_at_start(tmp_path):
    trainer = contrastive(tmp_path, fp16=True)
    assert trainer.accelerator.mixed_precision == "fp16" and trainer.accelerator.scaler is None
    with pytest.raises(EngineError, match="fp16"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast and its loss scaler need a GPU")
def test_fp16_gradcache_on_gpu_equals_the_plain_fp16_step_after_unscaling(tmp_path):
    """Real fp16 mixed precision (CUDA autocast and accelerate's loss scaler): unscaled, the GradCache step's
    gradients are the plain step's, with the bound of the bf16 comparison at fp16's precision."""
    runs = {}
    for name, extra in (("plain", {}), ("cached", {"gradcache_mini_batch_size": 2})):
        trainer = contrastive(
            tmp_path / name, dropout=0.0, fp16=True, use_cpu=False, max_grad_norm=0.0, max_steps=1, **extra
        )
        assert trainer.accelerator.native_amp and trainer.accelerator.scaler is not None
        # accelerate's scaler starts at 2**16, enough to overflow fp16 activation gradients of a random model
        # in the first step (which the scaler then skips): start lower, still a power of two
        recorder = recorded_gradients(trainer, torch.amp.GradScaler("cuda", init_scale=2.0**8))
        grads = recorder.steps[0]
        assert all(torch.isfinite(g).all() for g in grads.values())
        runs[name] = {n: g / recorder.scales[0] for n, g in grads.items()}
    allowed = summation_tolerance(torch.float16, largest(runs["plain"]), depth=8 // 2 + 1, safety=2.0)
    assert_same_gradients(runs["cached"], runs["plain"], allowed)
