"""GradCache: in-batch losses over batches far larger than what fits in memory (Gao et al. 2021).

An in-batch loss couples every row of the batch (each embedding is a negative of every other
anchor), so the batch cannot simply be split into gradient-accumulation steps: that would shrink
the set of negatives. GradCache keeps the full-batch loss and bounds the memory:

1. embed the batch in mini-batches **without** an autograd graph, recording the random-number
   state before each mini-batch;
2. compute the full-batch loss on those embeddings (detached leaves) and back-propagate it to get
   `d loss / d embedding` for every row (the *cached* gradients; the loss's own parameters, such
   as a learnable temperature, get their gradient here);
3. embed each mini-batch again **with** a graph, replaying its random-number state so that dropout
   draws the same masks, and back-propagate the cached gradient of its rows.

The parameter gradients equal those of the uncached loss on the same embeddings (same masks), up
to float summation order; peak activation memory is that of one mini-batch. The price is a second
forward pass (about 1/3 more compute).

[`GradCache`] wraps *any* loss of this library (InfoNCE/MNRL with hard negatives, SimCSE,
MultiCSR, CoSENT, regression, ...): the loss only ever sees embeddings. Cross-device negatives keep
working: the wrapped loss gathers the detached embeddings of every process with
[`hf_contrastive.core.distributed.gather_with_grad`] in step 2, whose backward hands each process
the gradient of its own rows. Under DDP, pass `no_sync` so that only the last re-forward of an
optimiser step triggers the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hf_contrastive.core.losses.base import ContrastiveLoss, LossOutput

__all__ = ["GradCache", "RandomState", "split_features"]

_GRADCACHE_CITATION = """@inproceedings{gao2021scaling,
  title     = {Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
  author    = {Gao, Luyu and Zhang, Yunyi and Han, Jiawei and Callan, Jamie},
  booktitle = {Proceedings of the 6th Workshop on Representation Learning for NLP (RepL4NLP-2021)},
  year      = {2021}
}"""

Features = dict[str, torch.Tensor]


class RandomState:
    """Snapshot of the CPU and CUDA random generators, restored by [`restore`].

    Dropout draws from these generators; restoring the snapshot before a re-forward makes it draw
    the same masks as the first forward.
    """

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _row_width(features: Features) -> tuple[int, int, torch.Tensor | None]:
    ids = features.get("input_ids")
    if ids is None:
        ids = features.get("inputs_embeds")
    if ids is None:
        raise ValueError(
            f"GradCache needs input_ids (or inputs_embeds) in the features; got {sorted(features)}."
        )
    mask = features.get("attention_mask")
    return int(ids.shape[0]), int(ids.shape[1]), mask


def _take(features: Features, rows: torch.Tensor, width: int | None, n: int, full_width: int) -> Features:
    out: Features = {}
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
            value = value[rows.to(value.device)]
            if width is not None and value.dim() >= 2 and value.shape[1] == full_width:
                value = value[:, :width]
        out[key] = value
    return out


def split_features(
    features: Features, mini_batch_size: int | None = None, token_budget: int | None = None
) -> list[tuple[torch.Tensor, Features]]:
    """Cut a padded token batch into mini-batches: `[(row_indices, features), ...]`.

    * `mini_batch_size`: consecutive groups of that many rows, in row order.
    * `token_budget`: rows sorted by length (longest first) and packed greedily so that each
      mini-batch's padded size (rows x its longest row) stays within the budget.

    Each mini-batch is trimmed to its own longest row when the padding is on the right (the
    embeddings do not change: padding is masked). `torch.cat` of the indices is a permutation
    of `range(N)`.
    """
    if (mini_batch_size is None) == (token_budget is None):
        raise ValueError("Give exactly one of mini_batch_size and token_budget.")
    n, full_width, mask = _row_width(features)
    if n == 0:
        return []
    right_padded = mask is not None and mask.dim() == 2 and bool((mask[:, 1:] <= mask[:, :-1]).all())
    lengths = mask.sum(dim=1).cpu() if right_padded else torch.full((n,), full_width)
    if mini_batch_size is not None:
        if int(mini_batch_size) < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size!r}.")
        groups = list(torch.arange(n).split(int(mini_batch_size)))
    else:
        budget = int(token_budget)
        longest = int(lengths.max())
        if budget < longest:
            raise ValueError(
                f"token_budget={budget} is smaller than the longest row of the batch ({longest} tokens): "
                "raise the budget to at least max_seq_length."
            )
        order = torch.argsort(lengths, descending=True, stable=True)
        groups, current, width = [], [], 0
        for i in order.tolist():
            w = max(width, int(lengths[i]))
            if current and (len(current) + 1) * w > budget:
                groups.append(torch.tensor(sorted(current)))
                current, w = [], int(lengths[i])
            current.append(i)
            width = w
        # (rows stay in ascending order inside a group: role blocks keep their order)
        groups.append(torch.tensor(sorted(current)))
    out = []
    for rows in groups:
        width = max(int(lengths[rows].max()), 1) if right_padded else None
        out.append((rows, _take(features, rows, width, n, full_width)))
    return out


class GradCache(ContrastiveLoss):
    r"""Memory-bounded large batches for any in-batch loss (GradCache, Gao et al. 2021).

    Wraps a loss module; [`forward`] is the plain (uncached) loss, [`backward`] runs the
    three GradCache passes described in the module docstring and leaves the parameter gradients
    in `.grad`, exactly as `loss.backward()` on the uncached loss would (same dropout masks).

    Args:
        loss (`nn.Module`): any loss of `hf_contrastive.core.losses` (an `nn.Module` whose `forward` takes
            embeddings and returns a [`LossOutput`]).
        mini_batch_size (`int | None`, *optional*): rows (texts) per forward pass. Give this or `token_budget`.
        token_budget (`int | None`, *optional*): padded tokens (rows x longest row) per forward pass; rows are grouped by
            length, so short texts travel in large groups.

    Example::

        cached = GradCache(InfoNCELoss(temperature=0.05), mini_batch_size=32)
        feats = tokenizer(anchors + positives, padding=True, return_tensors="pt")
        out = cached.backward(lambda f: model(**f).embeddings, feats, roles=2)
        optimizer.step()
    """

    citation = _GRADCACHE_CITATION

    def __init__(self, loss: nn.Module, mini_batch_size: int | None = None, token_budget: int | None = None):
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(
                f"loss must be an nn.Module (a loss of hf_contrastive.core.losses), got {type(loss).__name__}."
            )
        if isinstance(loss, GradCache):
            raise TypeError("loss is already wrapped in GradCache.")
        if (mini_batch_size is None) == (token_budget is None):
            raise ValueError(
                f"Give exactly one of mini_batch_size and token_budget, got mini_batch_size={mini_batch_size!r} "
                f"and token_budget={token_budget!r}."
            )
        for name, value in (("mini_batch_size", mini_batch_size), ("token_budget", token_budget)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.loss = loss
        self.mini_batch_size = mini_batch_size
        self.token_budget = token_budget
        self.citation = (getattr(loss, "citation", "") + "\n" + _GRADCACHE_CITATION).strip()

    def config_dict(self) -> dict[str, Any]:
        inner = getattr(self.loss, "config_dict", lambda: {})()
        return {
            **inner,
            "loss": type(self.loss).__name__,
            "gradcache_mini_batch_size": self.mini_batch_size,
            "gradcache_token_budget": self.token_budget,
        }

    def forward(self, *args: Any, **kwargs: Any) -> LossOutput:
        """The wrapped loss, uncached (evaluation, or embeddings that already have a graph)."""
        return self.loss(*args, **kwargs)

    def split(self, features: Features) -> list[tuple[torch.Tensor, Features]]:
        """Mini-batches of `features` (by count, or by token budget): `[(row_indices, features), ...]`."""
        return split_features(features, self.mini_batch_size, self.token_budget)

    def backward(
        self,
        encode: Callable[[Features], torch.Tensor],
        features: Features,
        loss_inputs: Callable[[torch.Tensor], tuple[tuple, dict]] | None = None,
        *,
        roles: int | None = None,
        encode_no_grad: Callable[[Features], torch.Tensor] | None = None,
        loss_scale: float = 1.0,
        backward: Callable[[torch.Tensor], Any] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
        check_embeddings: Callable[[torch.Tensor], None] | None = None,
    ) -> LossOutput:
        """Run the GradCache passes; gradients end up in the parameters' `.grad`.

        Args:
            encode (`Callable[[Features], torch.Tensor]`): features -> embeddings `[n, D]` (the model forward).
            features (`Features`): the padded token batch of all texts, `[N, L]` tensors.
            loss_inputs (`Callable[[torch.Tensor], tuple[tuple, dict]] | None`, *optional*): full embeddings `[N, D]` -> `(args, kwargs)` of the wrapped loss.
            roles (`int | None`, *optional*): instead of `loss_inputs`: the rows are `roles` equal blocks (anchors,
                positives, then hard-negative columns), passed as `loss(anchor, positive, negatives)`
                with `negatives` of shape `[B, roles - 2, D]`.
            encode_no_grad (`Callable[[Features], torch.Tensor] | None`, *optional*): the forward of the first pass (default `encode`); under DDP pass the
                unwrapped module so the first pass does not touch DDP's bookkeeping.
            loss_scale (`float`, *optional*, defaults to `1.0`): factor on the loss before back-propagation (gradient accumulation,
                unequal batches across processes); the returned loss is not scaled.
            backward (`Callable[[torch.Tensor], Any] | None`, *optional*): how to back-propagate the scaled loss (default `Tensor.backward`;
                a Trainer passes `accelerator.backward` for mixed-precision scaling).
            no_sync (`Callable[[], contextlib.AbstractContextManager] | None`, *optional*): context-manager factory (`ddp_model.no_sync`) entered for every re-forward
                but the last, so gradients are all-reduced once.
            check_embeddings (`Callable[[torch.Tensor], None] | None`, *optional*): called on the first-pass embeddings (e.g. a NaN check).
        Returns:
            The wrapped loss's [`LossOutput`], detached.
        """
        if (loss_inputs is None) == (roles is None):
            raise ValueError("Give exactly one of loss_inputs and roles.")
        if roles is not None:
            loss_inputs = _role_blocks(int(roles))
        encode_no_grad = encode_no_grad or encode
        chunks = self.split(features)
        if not chunks:
            raise ValueError("GradCache got an empty batch.")
        n = sum(len(rows) for rows, _ in chunks)

        # 1. embeddings without graph, remembering the random state of each mini-batch
        states, parts = [], []
        with torch.no_grad():
            for _, chunk in chunks:
                states.append(RandomState())
                parts.append(encode_no_grad(chunk).detach())
        order = torch.cat([rows for rows, _ in chunks])
        emb = torch.cat(parts)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n)
        emb = emb[inverse.to(emb.device)]
        if check_embeddings is not None:
            check_embeddings(emb)

        # 2. full-batch loss and the gradient of every embedding
        leaf = emb.detach().requires_grad_(True)
        args, kwargs = loss_inputs(leaf)
        out = self.loss(*args, **kwargs)
        scaled = out.loss * loss_scale if loss_scale != 1.0 else out.loss
        (backward or torch.Tensor.backward)(scaled)
        if leaf.grad is None:
            raise RuntimeError(
                "The wrapped loss does not depend on the embeddings: nothing to back-propagate."
            )
        grads = leaf.grad
        # The stream as it stands after the loss (a loss may draw random numbers: WhitenedCSE's channel
        # permutations); restored at the end so the next step continues it as without GradCache.
        after_loss = RandomState()

        # 3. re-forward each mini-batch with graph, same random state, and push its cached gradient
        last = len(chunks) - 1
        for k, ((rows, chunk), state) in enumerate(zip(chunks, states)):
            ctx = no_sync() if (no_sync is not None and k < last) else contextlib.nullcontext()
            with ctx:
                state.restore()
                e = encode(chunk)
                g = grads[rows.to(grads.device)].to(e.dtype)
                torch.autograd.backward(e, grad_tensors=g)
        after_loss.restore()
        return LossOutput(loss=out.loss.detach(), components=out.components)


def _role_blocks(roles: int) -> Callable[[torch.Tensor], tuple[tuple, dict]]:
    if roles < 1:
        raise ValueError(f"roles must be >= 1, got {roles}.")

    def split(emb: torch.Tensor) -> tuple[tuple, dict]:
        if emb.shape[0] % roles:
            raise ValueError(f"{emb.shape[0]} rows do not split into {roles} equal role blocks.")
        parts = emb.split(emb.shape[0] // roles)
        if roles == 1:
            return (parts[0],), {}
        if roles == 2:
            return (parts[0], parts[1]), {}
        return (parts[0], parts[1], torch.stack(parts[2:], dim=1)), {}

    return split
