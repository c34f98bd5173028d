"""ReCAT: the pruned chart against full CKY inside-outside, its size, gradients to the split scorer, the heads'
save / load through the Auto classes, masked-LM training on a toy batch, span vectors and bad inputs."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from hf_contrastive.composition import (
    ChartBatch,
    ReCATConfig,
    ReCATForMaskedLM,
    ReCATForSpanClassification,
    ReCATModel,
    build_pruned_chart,
    chart_splits,
    full_chart,
    full_cky_inside_outside,
    merge_order_from_scores,
)
from tests.card_checks import check_card, run_snippets
from tests.tiny_models import summation_tolerance

VOCAB = 40


def tiny_config(**overrides) -> ReCATConfig:
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        iter_times=2,
        window_size=4,
        max_position_embeddings=48,
        span_attention_layers=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
        mask_token_id=1,
    )
    settings.update(overrides)
    return ReCATConfig(**settings)


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=generator)


def compare_with_reference(model: ReCATModel, input_ids: torch.Tensor, use_chart_cells: bool) -> None:
    """Every cell's inside / outside vectors and scores, in every CIO layer, equal the plain-loop reference."""
    with torch.no_grad():
        out = model(input_ids, output_chart=True)
        tokens = model.embedding_norm(model.embeddings(input_ids))
    chart = out.chart
    for b in range(input_ids.shape[0]):
        splits = chart_splits(chart.charts[b]) if use_chart_cells else None
        with torch.no_grad():
            reference = full_cky_inside_outside(model, tokens[b], splits)
        ids = {chart.spans[g]: g for g in range(chart.num_cells) if chart.sentence[g] == b}
        assert set(ids) == set(reference[0]), "the chart holds other cells than the reference"
        for layer, ref in zip(out.cio_layers, reference, strict=True):
            for span, (inside, inside_score, outside, outside_score) in ref.items():
                g = ids[span]
                pairs = [
                    (layer.inside[g], inside),
                    (layer.inside_scores[g], inside_score),
                    (layer.outside[g], outside),
                    (layer.outside_scores[g], outside_score),
                ]
                for got, want in pairs:
                    # The same float64 operations summed in another order; depth: the span's nested mixes.
                    scale = 1.0 + float(want.detach().abs().max())
                    tol = summation_tolerance(torch.float64, scale, depth=4 * input_ids.shape[1] ** 2)
                    torch.testing.assert_close(got, want, rtol=0.0, atol=tol)


@pytest.fixture(scope="module")
def model64() -> ReCATModel:
    torch.manual_seed(0)
    return ReCATModel(tiny_config()).double().eval()


# -- the chart -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_short_input_gets_the_full_cky_chart(length):
    order = list(range(length - 1))
    random.Random(length).shuffle(order)
    pruned = build_pruned_chart(order, length, window=4)
    full = full_chart(length)
    assert chart_splits(pruned) == chart_splits(full)
    assert len(pruned) == length * (length + 1) // 2


def test_pruned_chart_equals_full_cky_inside_outside_on_short_inputs(model64):
    # Inputs of at most `window_size` tokens, of several lengths in one right-padded batch.
    input_ids = random_ids(3, 4, seed=1)
    compare_with_reference(model64, input_ids, use_chart_cells=False)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    with torch.no_grad():
        batched = model64(input_ids, attention_mask=mask, output_chart=True)
        tokens = model64.embedding_norm(model64.embeddings(input_ids))
    for b, n in enumerate(mask.sum(1).tolist()):
        with torch.no_grad():
            reference = full_cky_inside_outside(model64, tokens[b, :n])
        ids = {
            batched.chart.spans[g]: g
            for g in range(batched.chart.num_cells)
            if batched.chart.sentence[g] == b
        }
        assert set(ids) == set(reference[-1])
        for span, (inside, _, outside, _) in reference[-1].items():
            tol = summation_tolerance(torch.float64, 1.0 + float(inside.detach().abs().max()), depth=64)
            torch.testing.assert_close(batched.cio_layers[-1].inside[ids[span]], inside, rtol=0.0, atol=tol)
            tol = summation_tolerance(torch.float64, 1.0 + float(outside.detach().abs().max()), depth=64)
            torch.testing.assert_close(batched.cio_layers[-1].outside[ids[span]], outside, rtol=0.0, atol=tol)


def test_batched_pruned_passes_equal_plain_loops_on_a_long_input():
    torch.manual_seed(1)
    model = ReCATModel(tiny_config(hidden_size=8, intermediate_size=16, window_size=3)).double().eval()
    compare_with_reference(model, random_ids(2, 9, seed=2), use_chart_cells=True)


@pytest.mark.parametrize("window", [2, 4])
def test_pruned_chart_keeps_linear_cells_on_long_inputs(window):
    rng = random.Random(window)
    counts = {}
    for length in (64, 256, 1024):
        order = list(range(length - 1))
        rng.shuffle(order)
        chart = build_pruned_chart(order, length, window)
        counts[length] = len(chart)
        assert len(chart) < 2 * length * window, (length, len(chart))
        assert len(chart) < length * (length + 1) // 2
        assert max(len(s) for s in chart.splits) <= window - 1
        # Every split's children are cells, children come before parents, and the parser's tree is in the chart.
        index = chart.index()
        for c, splits in enumerate(chart.splits):
            i, j = chart.spans[c]
            for k, left, right in splits:
                assert chart.spans[left] == (i, k) and chart.spans[right] == (k + 1, j)
                assert left < c and right < c
        assert all(span in index for span in chart.merged) and chart.spans[chart.root] == (0, length - 1)
    # O(n): the cells per token stay under a bound that does not depend on the length, while the full chart's
    # (n + 1) / 2 per token grows with it.
    assert all(count / length < 2 * window for length, count in counts.items()), counts


def test_model_chart_is_linear_and_holds_the_best_tree():
    torch.manual_seed(0)
    model = ReCATModel(tiny_config(window_size=3)).eval()
    lengths = [40, 23]
    input_ids = random_ids(2, 40, seed=10)
    mask = (torch.arange(40)[None] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask, output_chart=True)
    chart = out.chart
    for b, n in enumerate(lengths):
        spans = {chart.spans[g] for g in range(chart.num_cells) if chart.sentence[g] == b}
        assert len(spans) < 2 * n * 3
        nodes = [tuple(span) for span in out.node_spans[b][out.node_mask[b]].tolist()]
        assert len(nodes) == 2 * n - 1 and set(nodes) <= spans
        # A binary tree: every internal node is split into two nodes.
        node_set = set(nodes)
        for i, j in nodes:
            if i < j:
                assert sum((i, k) in node_set and (k + 1, j) in node_set for k in range(i, j)) == 1


def test_merge_order_is_the_top_down_parse():
    scores = [0.1, 0.9, -0.3, 0.5]
    order = merge_order_from_scores(scores)
    assert order == [2, 0, 3, 1]
    chart = build_pruned_chart(order, 5, window=2)
    # Split at the highest score first (1), then within (2..4) at 3, then 2; within (0..1) at 0.
    assert chart.merged == [(2, 3), (0, 1), (2, 4), (0, 4)]


def test_chart_batch_orders_children_before_parents():
    charts = [
        build_pruned_chart([1, 0, 2], 4, 4),
        build_pruned_chart([], 1, 4),
        build_pruned_chart([0], 2, 4),
    ]
    batch = ChartBatch.from_charts(charts)
    assert batch.num_leaves == 7
    assert [batch.spans[g] for g in range(7)] == [(0, 0), (1, 1), (2, 2), (3, 3), (0, 0), (0, 0), (1, 1)]
    for wave in batch.inside_waves:
        assert int(wave.left[wave.mask].max()) < wave.start and int(wave.right[wave.mask].max()) < wave.start


# -- the model -------------------------------------------------------------------------------------------------


def test_gradients_reach_the_split_scorer():
    torch.manual_seed(0)
    model = ReCATForMaskedLM(tiny_config())
    input_ids = random_ids(2, 10, seed=3)
    labels = input_ids.clone()
    out = model(input_ids, labels=labels)
    assert out.parser_loss.item() > 0
    out.loss.backward()
    for name, param in model.recat.parser.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    # And to the composers of every CIO layer (through the masked-LM loss).
    for layer in model.recat.cio_layers:
        assert layer.inside_composer.score.weight.grad.abs().sum() > 0


def test_parser_loss_teaches_the_parser_the_best_tree():
    # On inputs of at most `window_size` tokens the chart is full, so the best tree does not depend on the parser:
    # training the parser alone on its loss must make its top-down parse that tree.
    torch.manual_seed(0)
    model = ReCATModel(tiny_config(window_size=5)).eval()
    input_ids = random_ids(3, 5, seed=11)
    optimizer = torch.optim.Adam(model.parser.parameters(), lr=0.02)
    for _ in range(60):
        out = model(input_ids, output_chart=True)
        optimizer.zero_grad()
        out.parser_loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = model(input_ids, output_chart=True)
    for b in range(3):
        best = {tuple(span) for span in out.node_spans[b][out.node_mask[b]].tolist()}
        order = merge_order_from_scores(out.split_scores[b].tolist())
        parsed = set(build_pruned_chart(order, 5, window=5).merged) | {(t, t) for t in range(5)}
        assert parsed == best, (b, sorted(parsed), sorted(best))
    assert out.parser_loss.item() < 0.1


def test_outputs_are_aligned_and_padding_does_not_change_a_row():
    torch.manual_seed(0)
    model = ReCATModel(tiny_config()).eval()
    input_ids = random_ids(2, 7, seed=4)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    with torch.no_grad():
        out = model(input_ids, attention_mask=mask)
        alone = model(input_ids[1:, :5])
    assert out.last_hidden_state.shape == (2, 7, 16) and out.node_states.shape == (2, 13, 16)
    assert out.node_mask.sum(1).tolist() == [13, 9]
    # The leaves' spans are the tokens; internal nodes are nested spans with the root covering the row.
    assert out.node_spans[1, :5].tolist() == [[t, t] for t in range(5)]
    assert out.node_spans[1, 7].tolist() == [0, 4]
    tol = summation_tolerance(torch.float32, 1.0 + float(alone.last_hidden_state.abs().max()), depth=64)
    torch.testing.assert_close(out.last_hidden_state[1, :5], alone.last_hidden_state[0], rtol=0.0, atol=tol)


def test_span_vectors_use_tree_nodes():
    torch.manual_seed(0)
    model = ReCATModel(tiny_config()).eval()
    input_ids = random_ids(1, 6, seed=5)
    with torch.no_grad():
        out = model(input_ids)
    nodes = {tuple(span): pos for pos, span in enumerate(out.node_spans[0].tolist()) if span[0] >= 0}
    (i, j), pos = next((span, pos) for span, pos in nodes.items() if span[1] > span[0] and span != (0, 5))
    vectors = ReCATModel.span_vectors(out, torch.tensor([[[i, j + 1], [0, 6], [2, 3]]]))
    torch.testing.assert_close(vectors[0, 0], out.node_states[0, pos])
    torch.testing.assert_close(vectors[0, 1], out.node_states[0, nodes[(0, 5)]])
    torch.testing.assert_close(vectors[0, 2], out.node_states[0, 2])
    with pytest.raises(ValueError, match="empty or outside"):
        ReCATModel.span_vectors(out, torch.tensor([[[3, 3]]]))


def test_masked_lm_loss_decreases_on_a_toy_batch():
    torch.manual_seed(0)
    model = ReCATForMaskedLM(tiny_config())
    input_ids = random_ids(4, 8, seed=6)
    generator = torch.Generator().manual_seed(7)
    masked = torch.rand(input_ids.shape, generator=generator) < 0.3
    masked[:, 0] = True
    labels = input_ids.masked_fill(~masked, -100)
    inputs = input_ids.masked_fill(masked, model.config.mask_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        out = model(inputs, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.mlm_loss.item())
    assert losses[-1] < 0.8 * losses[0] and max(losses[1:]) < losses[0], losses


def test_span_classification_trains_end_to_end():
    torch.manual_seed(0)
    model = ReCATForSpanClassification(tiny_config(num_labels=3))
    input_ids = random_ids(2, 6, seed=8)
    spans = torch.tensor([[[0, 2], [3, 6]], [[1, 2], [2, 5]]])
    out = model(input_ids, spans=spans, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.span_vectors.shape == (2, 2, 16)
    out.loss.backward()
    assert model.recat.parser.scorer[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_spans"):
        model(input_ids, spans=spans[:, :1])


def test_save_load_round_trip_through_the_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = ReCATForMaskedLM(tiny_config()).eval()
    folder = tmp_path / "recat"
    model.save_pretrained(folder)
    check_card(folder, None, "fill-mask")
    assert isinstance(AutoConfig.from_pretrained(folder), ReCATConfig)
    input_ids = random_ids(2, 7, seed=9)
    loaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
    encoder = AutoModel.from_pretrained(folder).eval()
    assert isinstance(loaded, ReCATForMaskedLM) and isinstance(encoder, ReCATModel)
    assert loaded.lm_decoder.weight.data_ptr() == loaded.recat.embeddings.weight.data_ptr()
    with torch.no_grad():
        pairs = [
            (loaded(input_ids).logits, model(input_ids).logits),
            (encoder(input_ids).node_states, model.recat(input_ids).node_states),
        ]
    for got, want in pairs:
        # Same weights, same operations; kernels may round differently on differently aligned buffers.
        tol = summation_tolerance(torch.float32, 1.0 + float(want.abs().max()), depth=64)
        torch.testing.assert_close(got, want, rtol=0.0, atol=tol)
    ignored = {"_name_or_path", "transformers_version"}
    settings = {k: v for k, v in loaded.config.to_dict().items() if k not in ignored}
    assert settings == {k: v for k, v in model.config.to_dict().items() if k not in ignored}
    namespaces = run_snippets(folder)
    assert namespaces[1]["states"].shape == (1, 12, 16)


# -- bad inputs ------------------------------------------------------------------------------------------------


def test_input_longer_than_the_chart_supports_is_a_clear_error():
    model = ReCATModel(tiny_config(max_position_embeddings=12))
    with pytest.raises(
        ValueError,
        match=r"13 tokens is longer than the chart supports \(config.max_position_embeddings = 12\)",
    ):
        model(random_ids(1, 13))
    model(random_ids(1, 12))  # the longest supported input runs


def test_other_bad_inputs_are_clear_errors():
    model = ReCATModel(tiny_config())
    ids = random_ids(2, 5)
    with pytest.raises(ValueError, match="right-padded"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="at least one token"):
        model(ids, attention_mask=torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model(ids[0])
    with pytest.raises(ValueError, match="permutation"):
        build_pruned_chart([0, 0, 1], 4, 4)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tiny_config(hidden_size=15)
    with pytest.raises(ValueError, match="window_size must be >= 2"):
        tiny_config(window_size=1)
