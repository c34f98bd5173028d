"""Pooling functions against explicit per-row loops, with left and right padding."""

from __future__ import annotations

import pytest
import torch

from hf_contrastive.embeddings.pooling import pool

torch.manual_seed(0)
STATES = torch.randn(3, 5, 4, dtype=torch.float64)
LAYERS = tuple(torch.randn(3, 5, 4, dtype=torch.float64) for _ in range(3))  # embeddings, layer 1, layer 2
RIGHT = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
LEFT = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])


def real_positions(mask_row):
    return [i for i, m in enumerate(mask_row.tolist()) if m]


def reference(mode, states, mask, layers=None):
    out = []
    for b in range(states.shape[0]):
        pos = real_positions(mask[b])
        rows = states[b, pos]
        if mode in ("cls", "cls_before_pooler"):
            out.append(states[b, pos[0]])
        elif mode == "mean":
            out.append(rows.sum(0) / len(pos))
        elif mode == "mean_sqrt_len":
            out.append(rows.sum(0) / len(pos) ** 0.5)
        elif mode == "max":
            out.append(rows.max(0).values)
        elif mode == "last_token":
            out.append(states[b, pos[-1]])
        elif mode == "weighted_mean":
            w = torch.arange(1, len(pos) + 1, dtype=states.dtype)
            out.append((rows * w[:, None]).sum(0) / w.sum())
        elif mode == "avg_first_last":
            out.append(((layers[1][b, pos] + layers[-1][b, pos]) / 2).mean(0))
        elif mode == "avg_top2":
            out.append(((layers[-2][b, pos] + layers[-1][b, pos]) / 2).mean(0))
    return torch.stack(out)


@pytest.mark.parametrize("mask", [RIGHT, LEFT], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize(
    "mode",
    ["cls", "cls_before_pooler", "mean", "mean_sqrt_len", "max", "last_token", "weighted_mean"],
)
def test_pooling_matches_loop(mode, mask):
    got = pool(mode, STATES, mask)
    torch.testing.assert_close(got, reference(mode, STATES, mask))


@pytest.mark.parametrize("mask", [RIGHT, LEFT], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("mode", ["avg_first_last", "avg_top2"])
def test_layer_average_pooling(mode, mask):
    got = pool(mode, LAYERS[-1], mask, hidden_states=LAYERS)
    torch.testing.assert_close(got, reference(mode, LAYERS[-1], mask, LAYERS))


def test_padding_values_do_not_leak():
    noisy = STATES.clone()
    noisy[RIGHT == 0] = 1e6
    for mode in ("mean", "max", "last_token", "weighted_mean", "cls"):
        torch.testing.assert_close(pool(mode, noisy, RIGHT), pool(mode, STATES, RIGHT))


def test_half_precision_mean_accumulates_in_fp32():
    x = torch.full((1, 4096, 2), 0.1, dtype=torch.float16)
    mask = torch.ones(1, 4096, dtype=torch.long)
    got = pool("mean", x, mask)
    assert got.dtype == torch.float16
    assert abs(got.float()[0, 0].item() - 0.1) < 1e-3


def test_unknown_pooling_and_missing_inputs():
    with pytest.raises(ValueError, match="expected one of"):
        pool("avg", STATES, RIGHT)
    with pytest.raises(ValueError, match="pooler_output"):
        pool("pooler", STATES, RIGHT)
    with pytest.raises(ValueError, match="hidden states"):
        pool("avg_top2", STATES, RIGHT)
