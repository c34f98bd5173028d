"""DebCSE's sampler: the propensity and weights against a hand computation, seeded replay, false negatives,
bad input, the flattened length-difference distribution on wiki1m, a ContrastiveTrainer run and the recipe."""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, InfoNCELoss, SentenceEncoder
from hf_contrastive.core.recipes import RecipeError
from hf_contrastive.core.utils import resource_dir
from hf_contrastive.embeddings.debcse import (
    DebiasedPairSampler,
    jaccard_overlap,
    relative_length_difference,
    surface_features,
    words,
)
from hf_contrastive.embeddings.debcse_recipes import DEBCSE_TASK, DebCSEMethod
from hf_contrastive.recipes import load_recipe, register_recipe_task, run_recipe

# -- a constructed example, small enough to compute by hand -----------------------------------------------
#
# Word counts 4, 8, 2, 2. Embeddings with integer entries (exact in the encoder's float32) and norm 5, at
# known cosines: s(0,1) = 0.8, s(0,2) = 0.6, s(0,3) = 0, s(1,2) = 0.96, s(1,3) = 0.6, s(2,3) = 0.8.
HAND_TEXTS = ["a b c d", "a b c d e f g h", "x y", "a b"]
HAND_EMB = torch.tensor([[5.0, 0.0], [4.0, 3.0], [3.0, 4.0], [0.0, 5.0]])
HAND = dict(
    num_candidates=3,
    positive_threshold=0.5,
    false_negative_cutoff=0.9,
    selection_temperature=0.1,
    overlap_bins=2,
    length_bins=2,
    smoothing=1.0,
    max_weight=10.0,
)
# Surface strata (overlap bin * 2 + length bin), by hand:
#   (0,1): Jaccard 4/8 = 0.5 -> bin 1, length |4-8|/8 = 0.5 -> bin 1: stratum 3
#   (0,2): Jaccard 0 -> 0, length 2/4 = 0.5 -> 1: stratum 1
#   (0,3): Jaccard 2/4 -> 1, length 0.5 -> 1: stratum 3
#   (1,2): Jaccard 0, length 6/8 -> 1: stratum 1
#   (1,3): Jaccard 2/8 = 0.25 -> 0, length 0.75 -> 1: stratum 1
#   (2,3): Jaccard 0, length 0 -> 0: stratum 0
HAND_STRATUM = {(0, 1): 3, (0, 2): 1, (0, 3): 3, (1, 2): 1, (1, 3): 1, (2, 3): 0}
HAND_SIM = {(0, 1): 0.8, (0, 2): 0.6, (0, 3): 0.0, (1, 2): 0.96, (1, 3): 0.6, (2, 3): 0.8}


def _pair(i, j):
    return (min(i, j), max(i, j))


def lookup_encoder(texts, embeddings):
    """A reference encoder that returns fixed embeddings per text (a plain callable)."""
    table = dict(zip(texts, embeddings))

    def encode(batch):
        return torch.stack([table[t] for t in batch])

    return encode


@pytest.fixture
def hand_sampler():
    return DebiasedPairSampler(HAND_TEXTS, lookup_encoder(HAND_TEXTS, HAND_EMB), **HAND)


def test_surface_features_by_hand():
    assert surface_features("The cat sat.", "the cat") == pytest.approx((2 / 3, 1 / 3))
    assert jaccard_overlap(set(), set()) == 1.0
    assert relative_length_difference(0, 0) == 0.0
    assert relative_length_difference(3, 12) == 0.75


def test_pool_similarities_and_strata_match_the_hand_table(hand_sampler):
    pool = hand_sampler.pool
    for i in range(4):
        rows = pool.rows(i)
        got = [
            (int(c), float(s), int(b))
            for c, s, b in zip(pool.candidate[rows], pool.similarity[rows], pool.stratum[rows])
        ]
        want = sorted(
            ((j, HAND_SIM[_pair(i, j)], HAND_STRATUM[_pair(i, j)]) for j in range(4) if j != i),
            key=lambda x: (-x[1], x[0]),
        )
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[2] for g in got] == [w[2] for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=0, atol=1e-12)


def _softmax(sims, t):
    e = [math.exp(s / t) for s in sims]
    return [x / sum(e) for x in e]


def _hand_table(eligible):
    """Population share, naive share, propensity and weights (4 strata) computed from the module docstring."""
    # All 12 ordered pairs: stratum 0 twice, stratum 1 six times, stratum 2 never, stratum 3 four times.
    counts = [2, 6, 0, 4]
    population = [(c + 1.0) / (12 + 1.0 * 4) for c in counts]
    mass = [0.0] * 4
    anchors = 0
    for i in range(4):
        cands = [j for j in range(4) if j != i and eligible(HAND_SIM[_pair(i, j)])]
        if not cands:
            continue
        anchors += 1
        for j, p in zip(cands, _softmax([HAND_SIM[_pair(i, j)] for j in cands], 0.1)):
            mass[HAND_STRATUM[_pair(i, j)]] += p
    naive = [(m + 1.0 * 4 * pa) / (anchors + 1.0 * 4) for m, pa in zip(mass, population)]
    propensity = [n / pa for n, pa in zip(naive, population)]
    weights = [min(1 / p, 10.0) for p in propensity]
    return population, naive, propensity, weights, anchors


@pytest.mark.parametrize(
    "role, eligible", [("positive", lambda s: s >= 0.5), ("negative", lambda s: s < 0.9)]
)
def test_propensity_and_weights_equal_the_hand_computation(hand_sampler, role, eligible):
    table = hand_sampler.propensity[role]
    population, naive, propensity, weights, anchors = _hand_table(eligible)
    assert table.anchors == anchors == 4
    for got, want in (
        (table.population, population),
        (table.naive, naive),
        (table.propensity, propensity),
        (table.weights, weights),
    ):
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-12, atol=0)
    # The weights undo the over-representation: a stratum picked more often than random pairing gets < 1.
    assert ((table.weights.reshape(-1) < 1) == (np.array(propensity) > 1)).all()


def test_draw_probabilities_are_pi_times_weight_and_draws_follow_them(hand_sampler):
    w_pos = hand_sampler.propensity["positive"].weights.reshape(-1)
    w_neg = hand_sampler.propensity["negative"].weights.reshape(-1)
    # Anchor 0: eligible positives 1 (cosine 0.8, stratum 3) and 2 (0.6, stratum 1).
    pi = _softmax([0.8, 0.6], 0.1)
    want = np.array([pi[0] * w_pos[3], pi[1] * w_pos[1]])
    idx, prob = hand_sampler.selection_probabilities(0, "positive")
    assert idx.tolist() == [1, 2]
    np.testing.assert_allclose(prob, want / want.sum(), rtol=1e-12, atol=0)
    idx, prob = hand_sampler.selection_probabilities(0, "positive", debias=False)
    np.testing.assert_allclose(prob, pi, rtol=1e-12, atol=0)
    # Anchor 1 with positive 2 (0.96): negatives 0 (0.8, stratum 3) and 3 (0.6, stratum 1), both below 0.9.
    pi = _softmax([0.8, 0.6], 0.1)
    want = np.array([pi[0] * w_neg[3], pi[1] * w_neg[1]])
    idx, prob = hand_sampler.selection_probabilities(1, "negative", positive=2)
    assert idx.tolist() == [0, 3]
    np.testing.assert_allclose(prob, want / want.sum(), rtol=1e-12, atol=0)
    # With positive 0 (0.8) the negative must be less similar than 0.8: only sentence 3 remains.
    idx, prob = hand_sampler.selection_probabilities(1, "negative", positive=0)
    assert idx.tolist() == [3] and prob.tolist() == [1.0]
    with pytest.raises(ValueError, match="not an eligible positive of anchor 0"):
        hand_sampler.selection_probabilities(0, "negative", positive=3)  # cosine 0 < positive_threshold
    # Seeded draws follow those probabilities (binomial standard error, 5 sigma).
    trials = 2000
    for debias in (True, False):
        _, prob = hand_sampler.selection_probabilities(0, "positive", debias=debias)
        hits = sum(hand_sampler.draw_pair(0, seed=seed, debias=debias)[0] == 1 for seed in range(trials))
        sd = math.sqrt(prob[0] * (1 - prob[0]) / trials)
        assert abs(hits / trials - prob[0]) < 5 * sd, (debias, hits / trials, prob[0])
    # draw_pair is the row draw() gives for the same seed.
    out = hand_sampler.draw(seed=11)
    for a, p, n in zip(out.anchor_index, out.positive_index, out.negative_index):
        assert hand_sampler.draw_pair(int(a), seed=11) == (p, n)


def _cosine(emb, i, j):
    return float(torch.nn.functional.cosine_similarity(emb[i].double(), emb[j].double(), dim=0))


def test_negatives_below_the_cutoff_and_the_positive(hand_sampler):
    # Anchor 1's nearest sentence (2, cosine 0.96) is above the false-negative threshold 0.9: it is the
    # positive or nothing, never the negative (and the same for anchor 2 and sentence 1).
    seen, dropped = set(), 0
    for seed in range(300):
        for a in range(4):
            pair = hand_sampler.draw_pair(a, seed=seed)
            if pair is None:  # anchors 1 and 2 drew their least similar candidate: nothing is below it
                dropped += 1
                continue
            p, n = pair
            seen.add((a, p, n))
            assert _cosine(HAND_EMB, a, n) < 0.9
            assert _cosine(HAND_EMB, a, n) < _cosine(HAND_EMB, a, p)
            assert p != n and a not in (p, n)
    assert not any((a, n) in ((1, 2), (2, 1)) for a, _, n in seen)
    assert (1, 2, 0) in seen and (1, 2, 3) in seen  # both negatives under the cutoff do occur
    assert 0 < dropped < 300
    out = hand_sampler.draw(seed=5)
    assert (out.negative_similarity < 0.9).all() and (out.negative_similarity < out.positive_similarity).all()
    assert out.dataset.column_names == ["anchor", "positive", "negative"]


def test_near_duplicates_are_never_negatives_on_a_bigger_corpus():
    g = torch.Generator().manual_seed(0)
    texts = [
        " ".join(WORDS[k] for k in torch.randint(len(WORDS), (6,), generator=g).tolist()) + f" {i}"
        for i in range(40)
    ]
    emb = torch.randn(40, 8, generator=g, dtype=torch.float64)
    emb[1] = emb[0] + 0.05 * torch.randn(8, generator=g, dtype=torch.float64)  # a paraphrase of sentence 0
    sampler = DebiasedPairSampler(
        texts,
        lookup_encoder(texts, emb),
        num_candidates=10,
        positive_threshold=-1.0,
        false_negative_cutoff=0.9,
    )
    assert _cosine(emb, 0, 1) > 0.9
    negatives_of_0 = set()
    for seed in range(200):
        for a in (0, 1):
            pair = sampler.draw_pair(a, seed=seed)
            if pair is not None:
                assert pair[1] != 1 - a
                if a == 0:
                    negatives_of_0.add(pair[1])
    assert len(negatives_of_0) > 1  # the draws do vary; the paraphrase is never among them
    out = sampler.draw(seed=0)
    assert (out.negative_similarity < 0.9).all()


def test_verbatim_copies_are_left_out_of_the_pools():
    texts = [
        "The cat sleeps",
        "a dog runs",
        "the  CAT sleeps",
        "red car",
        "blue house",
        "quick fox",
        "lazy dog",
    ]
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0], [0.7, 0.3]])
    sampler = DebiasedPairSampler(
        texts, lookup_encoder(texts, emb), num_candidates=4, positive_threshold=-1.0
    )
    assert sampler.duplicates_removed == 2
    for anchor, copy in ((0, 2), (2, 0)):
        cands = sampler.pool.candidate[sampler.pool.rows(anchor)].tolist()
        assert copy not in cands and anchor not in cands and len(cands) == 4  # refilled past the copy
    assert sampler.pool.candidate[sampler.pool.rows(0)].tolist() == [1, 6, 3, 4]


def test_seeded_replay_other_seeds_and_the_map_path(hand_sampler):
    g = torch.Generator().manual_seed(1)
    texts = [
        " ".join(WORDS[k] for k in torch.randint(len(WORDS), (5,), generator=g).tolist()) + f" {i}"
        for i in range(30)
    ]
    emb = torch.randn(30, 6, generator=g, dtype=torch.float64)
    sampler = DebiasedPairSampler(
        Dataset.from_dict({"sentence": texts, "id": list(range(30))}),
        lookup_encoder(texts, emb),
        num_candidates=8,
        positive_threshold=-1.0,
        false_negative_cutoff=1.0,
    )
    first = sampler.sample(seed=3).to_dict()
    assert sampler.sample(seed=3).to_dict() == first
    assert sampler.sample(seed=4).to_dict() != first
    # The same draws through datasets' map, whatever the batch size.
    ds = Dataset.from_dict({"sentence": texts, "id": list(range(30))})
    for batch_size in (1, 7, 1000):
        mapped = ds.map(
            sampler.map_function(seed=3),
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            remove_columns=ds.column_names,
        )
        assert mapped.to_dict() == first
    # A batch that is not the sampler's corpus is refused.
    with pytest.raises(ValueError, match="not the sampler's sentence"):
        ds.shuffle(seed=0).map(
            sampler.map_function(seed=3), batched=True, with_indices=True, remove_columns=ds.column_names
        )


def test_bad_input_is_refused_with_clear_errors():
    enc = lookup_encoder(HAND_TEXTS, HAND_EMB)
    with pytest.raises(ValueError, match="corpus is empty"):
        DebiasedPairSampler([], enc)
    with pytest.raises(ValueError, match="num_candidates=32 needs at least 33 sentences"):
        DebiasedPairSampler(HAND_TEXTS, enc)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        DebiasedPairSampler(HAND_TEXTS, enc, num_candidates=3, temprature=0.1)
    with pytest.raises(ValueError, match="positive_threshold must be a number in"):
        DebiasedPairSampler(HAND_TEXTS, enc, num_candidates=3, positive_threshold=1.5)
    with pytest.raises(ValueError, match="selection_temperature must be a number in"):
        DebiasedPairSampler(HAND_TEXTS, enc, num_candidates=3, selection_temperature=0)
    with pytest.raises(ValueError, match="max_weight must be a number in"):
        DebiasedPairSampler(HAND_TEXTS, enc, num_candidates=3, max_weight=0.5)
    with pytest.raises(ValueError, match="overlap_bins must be an integer"):
        DebiasedPairSampler(HAND_TEXTS, enc, num_candidates=3, overlap_bins=0)
    with pytest.raises(ValueError, match=r"empty or whitespace only \(rows 1\)"):
        DebiasedPairSampler(["a b", "  ", "c d", "e f"], enc, num_candidates=2)
    with pytest.raises(TypeError, match="item 2 is int"):
        DebiasedPairSampler(["a b", "c d", 3, "e f"], enc, num_candidates=2)
    with pytest.raises(TypeError, match="list of strings or a datasets.Dataset"):
        DebiasedPairSampler("a b c", enc)
    with pytest.raises(ValueError, match="Could not tell which column"):
        DebiasedPairSampler(Dataset.from_dict({"a": HAND_TEXTS, "b": HAND_TEXTS}), enc, num_candidates=3)
    with pytest.raises(ValueError, match="distinct sentence"):
        DebiasedPairSampler(["a b", "A  b", "a B", "c"], enc, num_candidates=3)
    with pytest.raises(TypeError, match="reference must be a sentence encoder"):
        DebiasedPairSampler(HAND_TEXTS, None, num_candidates=3)
    nan = HAND_EMB.clone()
    nan[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite embeddings"):
        DebiasedPairSampler(HAND_TEXTS, lookup_encoder(HAND_TEXTS, nan), num_candidates=3)
    with pytest.raises(ValueError, match="expected \\[4, dim\\]"):
        DebiasedPairSampler(HAND_TEXTS, lambda texts: torch.zeros(2, 3), num_candidates=3)
    sampler = DebiasedPairSampler(HAND_TEXTS, enc, **HAND)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        sampler.sample(seed=-1)
    strict = DebiasedPairSampler(HAND_TEXTS, enc, **{**HAND, "positive_threshold": 0.99})
    with pytest.raises(ValueError, match="No anchor of 4 got both a positive and a negative"):
        strict.sample()


def test_drops_are_counted_not_silent(hand_sampler, caplog):
    sampler = DebiasedPairSampler(
        HAND_TEXTS, lookup_encoder(HAND_TEXTS, HAND_EMB), **{**HAND, "positive_threshold": 0.85}
    )
    with caplog.at_level("INFO", logger="hf_contrastive.embeddings.debcse"):
        out = sampler.draw(seed=0)
    # Only anchors 1 and 2 have a candidate >= 0.85 (each other, 0.96); anchors 0 and 3 are dropped.
    assert out.dropped == {"no_positive": 2, "no_negative": 0}
    assert sorted(out.anchor_index.tolist()) == [1, 2]
    assert "dropped 2 of 4 anchors" in caplog.text


# -- real data: the length-difference distribution is flattened --------------------------------------------


def _bins(values, bins):
    return np.minimum((np.asarray(values) * bins).astype(int), bins - 1)


def _kl(p, q):
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


@pytest.mark.slow
@pytest.mark.integration
def test_length_bias_is_flattened_on_wiki1m(shared_data, minilm_path):
    corpus = (shared_data / "corpus" / "wiki1m_first11914.txt").read_text(encoding="utf-8")
    texts = [t for t in (line.strip() for line in corpus.splitlines()) if t][:500]
    model = SentenceEncoder.from_pretrained(str(minilm_path))
    sampler = DebiasedPairSampler(texts, functools.partial(model.encode, max_length=32), batch_size=64)
    n, bins = len(texts), sampler.length_bins
    counts = np.array([len(words(t)) for t in texts])
    top = np.maximum(counts[:, None], counts[None, :])
    rel = np.where(top > 0, np.abs(counts[:, None] - counts[None, :]) / np.maximum(top, 1), 0.0)
    # Uniform random pairing (what in-batch negatives are), over all ordered pairs: the length differences an
    # unbiased selection would have.
    random = np.bincount(_bins(rel[~np.eye(n, dtype=bool)], bins), minlength=bins) / (n * (n - 1))
    # The expected length-difference histogram of the drawn positives (exact, from the draw probabilities, so
    # no sampling noise), with and without the weights, and of the most similar eligible candidate.
    expected = {"ipw": np.zeros(bins), "naive": np.zeros(bins), "top1": np.zeros(bins)}
    for i in range(n):
        for name, debias in (("ipw", True), ("naive", False)):
            idx, prob = sampler.selection_probabilities(i, "positive", debias=debias)
            np.add.at(expected[name], _bins(rel[i, idx], bins), prob)
            if debias and len(idx):
                expected["top1"][_bins(rel[i, idx[0]], bins)] += 1.0
    uniform = np.full(bins, 1 / bins)
    stats = {"random": (0.0, _kl(random, uniform), float(random @ (np.arange(bins) + 0.5) / bins))}
    for name, h in expected.items():
        h = h / h.sum()
        stats[name] = (_kl(h, random), _kl(h, uniform), float(h @ (np.arange(bins) + 0.5) / bins))
    drawn = sampler.draw(seed=0)
    print(
        f"\nDebCSE length bias on wiki1m[:500], {bins} bins (KL to random pairing, KL to uniform, mean bin "
        "centre): "
        + "; ".join(f"{k} {v[0]:.4f} {v[1]:.4f} {v[2]:.3f}" for k, v in stats.items())
        + f"; rows {len(drawn.dataset)}, dropped {drawn.dropped}"
    )
    # The inverse-propensity draws are closer to random pairing, and flatter, than both naive selections, and
    # their positives differ more in length.
    for base in ("naive", "top1"):
        assert stats["ipw"][0] < stats[base][0]
        assert stats["ipw"][1] < stats[base][1]
        assert stats["ipw"][2] > stats[base][2]
    assert (drawn.negative_similarity < sampler.false_negative_cutoff).all()
    assert (drawn.negative_similarity < drawn.positive_similarity).all()


# -- training on the sampler's output ---------------------------------------------------------------------


def _tiny_corpus(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(
            " ".join(WORDS[j] for j in torch.randint(len(WORDS), (k,), generator=g).tolist()) + f" {i}"
        )
    return out


@pytest.mark.slow
def test_contrastive_trainer_runs_on_the_sampled_triples(tiny_encoder, tmp_path):
    texts = _tiny_corpus(24)
    sampler = DebiasedPairSampler(
        texts, tiny_encoder, num_candidates=8, positive_threshold=-1.0, false_negative_cutoff=1.0
    )
    drawn = sampler.draw(seed=0)
    train = drawn.dataset
    assert len(train) + sum(drawn.dropped.values()) == 24 and len(train) >= 12
    before = {k: v.detach().clone() for k, v in tiny_encoder.named_parameters()}
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
        logging_steps=1,
    )
    trainer = ContrastiveTrainer(model=tiny_encoder, args=args, train_dataset=train)
    assert trainer.roles.anchor == "anchor" and trainer.roles.positive == "positive"
    assert trainer.roles.negatives == ["negative"]
    assert isinstance(trainer.loss_fn, InfoNCELoss)
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in tiny_encoder.named_parameters())


@pytest.mark.slow
def test_debcse_recipe_samples_trains_and_saves_with_its_card(tiny_encoder, tmp_path):
    register_recipe_task(DEBCSE_TASK, replace=True)
    tiny_encoder.save_pretrained(tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_tiny_corpus(20)) + "\n", encoding="utf-8")
    recipe = tmp_path / "tiny-debcse.yaml"
    recipe.write_text(
        "task: debcse\n"
        f"model: {{name_or_path: {tmp_path / 'model'}}}\n"
        f"data: {{train: {{type: text, path: {corpus}}}}}\n"
        "method: {num_candidates: 6, positive_threshold: -1.0, false_negative_cutoff: 1.0, sampler_seed: 7}\n"
        f"args: {{output_dir: {tmp_path / 'out'}, per_device_train_batch_size: 4, max_steps: 1, "
        "save_strategy: 'no', "
        "report_to: 'none', disable_tqdm: true}\n"
    )
    loaded = load_recipe(recipe)
    assert isinstance(DEBCSE_TASK.read_method(loaded), DebCSEMethod)
    results = run_recipe(loaded)
    summary = results["sampler"]
    assert summary["sentences"] == 20 and summary["seed"] == 7 and summary["debiased"] is True
    assert summary["rows"] + sum(summary["dropped"].values()) == 20 and summary["dropped"]["no_positive"] == 0
    assert (tmp_path / "out" / "final" / "config.json").is_file()
    card = (tmp_path / "out" / "final" / "README.md").read_text(encoding="utf-8")
    assert "DebCSE" in card


def test_packaged_debcse_recipe_resolves_and_refuses_unknown_settings():
    register_recipe_task(DEBCSE_TASK, replace=True)
    assert (resource_dir("recipes") / "debcse.yaml").is_file()
    recipe = load_recipe("debcse")
    method = DEBCSE_TASK.read_method(recipe)
    assert isinstance(method, DebCSEMethod)
    for key, value in recipe["method"].items():
        assert getattr(method, key) == value
    assert recipe["data"]["train"]["max_rows"] == 1000
    # The method's sampler defaults are the sampler's own, and the packaged recipe uses them.
    params = inspect.signature(DebiasedPairSampler).parameters
    defaults = DebCSEMethod().sampler_settings()
    assert len(defaults) == 9 and defaults == {k: params[k].default for k in defaults}
    assert method.sampler_settings() == defaults
    with pytest.raises(RecipeError, match=r"Unknown method setting\(s\) \['positive_treshold'\]"):
        load_recipe("debcse", ["--method.positive_treshold", "0.3"])
    with pytest.raises(RecipeError, match="model.refrence"):
        load_recipe("debcse", ["--model.refrence", "x"])
    with pytest.raises(RecipeError, match="method.max_weight must be a number"):
        load_recipe("debcse", ["--method.max_weight", "lots"])
    with pytest.raises(RecipeError, match=r"Unknown key\(s\) \['text_colum'\] in the data section"):
        load_recipe("debcse", ["--data.text_colum", "x"])
