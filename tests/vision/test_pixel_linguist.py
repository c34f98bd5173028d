"""Pixel Linguist: renderer, visual positives, head and pooling, symmetric loss, weight averaging, saving, bad
inputs, trainer, curriculum and recipe."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModel

from hf_contrastive.embeddings import pool
from hf_contrastive.recipes import register_recipe_task, run_recipe
from hf_contrastive.vision.pixel_linguist import (
    CurriculumStage,
    PixelLinguistConfig,
    PixelLinguistModel,
    PixelLinguistTrainer,
    PixelLinguistTrainingArguments,
    PixelPairCollator,
    average_checkpoints,
    character_typos,
    load_stage_data,
    make_positive,
    run_curriculum,
    visual_pairs,
    word_shuffle,
)
from hf_contrastive.vision.pixel_linguist_recipes import PIXEL_LINGUIST_TASK
from hf_contrastive.vision.text_render import TextRenderer, default_font_path

# float64: sums of at most a few hundred terms of size <= 1e2 agree to ~1e-12 whatever the order.
TOL = 1e-10
BODY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24}
PATCHES = 16  # a 4 x 4 position grid: a 16 x 256 strip
SENTENCES = [
    "A man is playing a guitar.",
    "The cat sleeps on the warm sofa, and the dog watches it.",
    "Two children run in the park.",
    "Rain fell all night; the river rose.",
    "She reads a book.",
    "The train leaves at noon.",
    "A woman slices an onion.",
    "Birds sing at dawn.",
]


def tiny_config(**kw) -> PixelLinguistConfig:
    return PixelLinguistConfig(backbone_config=dict(BODY), max_patches=PATCHES, **kw)


def tiny_model(seed: int = 0, **kw) -> PixelLinguistModel:
    torch.manual_seed(seed)
    return PixelLinguistModel(tiny_config(**kw))


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


# -- the renderer -------------------------------------------------------------------------------------------


def test_renderer_patch_count_mask_and_ink():
    renderer = TextRenderer(max_patches=PATCHES)
    texts = ["Hi", "A man is playing a guitar.", ""]
    out = renderer(texts)
    assert out.pixel_values.shape == (3, 1, 16, 16 * PATCHES) and out.attention_mask.shape == (3, PATCHES)
    for i, text in enumerate(texts):
        # patches = ceil((left padding + advance width) / 16), at least one; the mask adds the end-of-text patch
        width = 2 + renderer.font.getlength(text)
        patches = max(1, math.ceil(width / 16))
        assert out.text_patches[i] == patches
        assert out.attention_mask[i].tolist() == [1] * (patches + 1) + [0] * (PATCHES - patches - 1)
        strip = out.pixel_values[i, 0]
        assert bool((strip[:, (patches + 1) * 16 :] == 1).all())  # blank patches are white
        assert bool((strip[:, patches * 16 : (patches + 1) * 16] == 0).all())  # PIXEL's black end patch
        if text:
            assert float(strip[:, : patches * 16].min()) < 0.5  # the text left ink
    assert float(out.pixel_values.min()) >= 0 and float(out.pixel_values.max()) <= 1
    blank = TextRenderer(max_patches=PATCHES, end_patch="blank")("Hi")
    assert bool((blank.pixel_values[0, 0, :, out.text_patches[0] * 16 :] == 1).all())
    assert blank.attention_mask.tolist() == out.attention_mask[:1].tolist()


def test_renderer_is_deterministic_and_rgb_repeats_the_grey_channel():
    a = TextRenderer(max_patches=PATCHES)(SENTENCES[:3])
    b = TextRenderer(max_patches=PATCHES)(SENTENCES[:3])
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.attention_mask, b.attention_mask)
    rgb = TextRenderer(max_patches=PATCHES, rgb=True)(SENTENCES[:3])
    assert rgb.pixel_values.shape[1] == 3
    for c in range(3):
        assert torch.equal(rgb.pixel_values[:, c], a.pixel_values[:, 0])
    # newlines and runs of spaces render as single spaces
    assert torch.equal(TextRenderer(max_patches=PATCHES)("a  b\nc").pixel_values,
                       TextRenderer(max_patches=PATCHES)("a b c").pixel_values)  # fmt: skip


def test_long_text_is_truncated_with_a_warning_naming_the_limit(caplog):
    renderer = TextRenderer(max_patches=PATCHES)
    long = " ".join(SENTENCES)
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.text_render"):
        out = renderer([long, "short"])
    assert "1 of 2 text(s)" in caplog.text and f"limit of {PATCHES} patches" in caplog.text
    assert out.truncated == [True, False] and out.text_patches[0] <= PATCHES - 1
    assert int(out.attention_mask[0].sum()) == out.text_patches[0] + 1 <= PATCHES
    # the kept text is the longest prefix that fits in the text patches
    kept = renderer._fit(long)
    assert renderer.patches_for(kept) <= PATCHES - 1 < renderer.patches_for(long[: len(kept) + 1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.vision.text_render"):
        renderer(["short"])
    assert caplog.text == ""


def test_missing_font_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        default_font_path()
    with pytest.raises(ValueError, match="end_patch"):
        TextRenderer(end_patch="grey", font_path=__file__)


# -- visual positives ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_typos_edit_one_character_in_the_drawn_words(rate):
    text = "The quick brown fox jumps over the lazy dog, 42 times."
    words = text.split(" ")
    candidates = [w for w in words if any(c.isalpha() for c in w)]
    for seed in range(20):
        typo = character_typos(text, seed, typo_rate=rate)
        out = typo.split(" ")
        assert len(out) == len(words) and out[9] == "42"  # no word added or removed; numbers untouched
        changed = [edit_distance(a, b) for a, b in zip(words, out) if a != b]
        assert all(d == 1 for d in changed)
        # every drawn word changes unless an insertion repeats a neighbouring letter... which still changes it
        assert len(changed) == min(len(candidates), max(1, round(rate * len(candidates))))
        assert typo == character_typos(text, seed, typo_rate=rate)  # replays from the seed
    assert character_typos("123 456 !", 0) == "123 456 !"
    assert character_typos("a", 3) != "a" and character_typos("a", 3) != ""  # one-letter words never vanish
    with pytest.raises(ValueError, match="typo_rate"):
        character_typos(text, 0, typo_rate=1.5)


def test_random_shuffle_keeps_the_words():
    text = "one two three four five six seven"
    outs = {word_shuffle(text, s) for s in range(10)}
    assert all(sorted(o.split()) == sorted(text.split()) for o in outs) and len(outs) > 1
    assert word_shuffle(text, 4) == word_shuffle(text, 4)


def test_clause_shuffle_keeps_first_and_last_word_of_each_clause():
    text = "The old man walked slowly home, while his tiny dog ran far ahead; they met."
    clauses = [
        c.split()
        for c in ["The old man walked slowly home,", "while his tiny dog ran far ahead;", "they met."]
    ]
    seen = set()
    for seed in range(30):
        out = word_shuffle(text, seed, mode="clause").split()
        start = 0
        for clause in clauses:
            got = out[start : start + len(clause)]
            assert got[0] == clause[0] and got[-1] == clause[-1] and sorted(got) == sorted(clause)
            start += len(clause)
        seen.add(" ".join(out))
    assert len(seen) > 1
    assert word_shuffle("a b c", 1, mode="clause") == "a b c"  # three words: nothing between the ends to move
    with pytest.raises(ValueError, match="mode"):
        word_shuffle(text, 0, mode="sideways")


def test_visual_pairs_replay_and_draw_each_kind():
    a = visual_pairs(SENTENCES * 4, seed=3)
    b = visual_pairs(SENTENCES * 4, seed=3)
    assert a["positive"] == b["positive"] and a["kind"] == b["kind"]
    assert set(a["kind"]) == {"typo", "shuffle", "clause_shuffle"}
    for row in a:
        if row["kind"] == "typo":
            assert len(row["positive"].split(" ")) == len(row["anchor"].split(" "))
        else:
            assert sorted(row["positive"].split()) == sorted(row["anchor"].split())
    # row i draws from random.Random(f"{seed}:{i}"): its kind, then its edits, whatever the other rows are
    rng = random.Random("3:5")
    kind = rng.choice(["typo", "shuffle", "clause_shuffle"])
    shorter = visual_pairs(SENTENCES[:6], seed=3)
    assert a["kind"][5] == shorter["kind"][5] == kind
    assert a["positive"][5] == shorter["positive"][5] == make_positive(SENTENCES[5], kind, rng)
    with pytest.raises(ValueError, match="kinds"):
        visual_pairs(SENTENCES, kinds=["typo", "rotate"])


# -- the head, pooling and loss -----------------------------------------------------------------------------


def test_pooling_is_the_mean_over_the_mask_and_blank_patches_change_nothing():
    model = tiny_model(head_dropout=0.0).double().eval()
    rendered = model.renderer(SENTENCES[:4])
    pixels, mask = rendered.pixel_values.double(), rendered.attention_mask
    out = model(pixel_values=pixels, attention_mask=mask, output_patch_states=True)
    # by hand: head states of each patch, averaged over the patches of the mask (class token left out)
    full = torch.cat([torch.ones(4, 1, dtype=torch.long), mask], dim=1)
    noise = torch.arange(PATCHES, dtype=torch.float32).expand(4, -1)
    tokens = model.backbone(pixel_values=pixels, noise=noise, attention_mask=full).last_hidden_state[:, 1:]
    lin, _, norm, _ = model.head
    states = norm(F.gelu(tokens @ lin.weight.T + lin.bias))
    torch.testing.assert_close(out.patch_states, states, rtol=0, atol=TOL)
    for i in range(4):
        keep = mask[i].bool()
        want = states[i, keep].sum(0) / keep.sum()
        torch.testing.assert_close(out.pooled_output[i], want, rtol=0, atol=TOL)
        torch.testing.assert_close(out.embeddings[i], want / want.norm(), rtol=0, atol=TOL)
    # the patches after the end-of-text patch are neither attended to nor pooled
    scribbled = pixels.clone()
    for i in range(4):
        scribbled[i, :, :, int(mask[i].sum()) * 16 :] = torch.rand_like(
            scribbled[i, :, :, int(mask[i].sum()) * 16 :]
        )
    again = model(pixel_values=scribbled, attention_mask=mask)
    torch.testing.assert_close(again.pooled_output, out.pooled_output, rtol=0, atol=TOL)
    # training mode adds the projection: n(W pooled + b)
    model.train()
    trained = model(pixel_values=pixels, attention_mask=mask)
    projected = out.pooled_output @ model.projection.weight.T + model.projection.bias
    torch.testing.assert_close(trained.embeddings, F.normalize(projected, dim=-1), rtol=0, atol=TOL)
    assert pool("mean", torch.ones(1, 3, 2), torch.zeros(1, 3)).abs().sum() == 0  # a row without patches


def hand_symmetric_infonce(a: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """(1/2B) sum_i [-log softmax_j(cos(a_i, p_j)/t)_i - log softmax_j(cos(p_i, a_j)/t)_i], written out."""
    n = a.shape[0]
    total = torch.zeros((), dtype=a.dtype)
    for i in range(n):
        row = torch.stack(
            [torch.dot(a[i], p[j]) / (a[i].norm() * p[j].norm()) / temperature for j in range(n)]
        )
        col = torch.stack(
            [torch.dot(p[i], a[j]) / (p[i].norm() * a[j].norm()) / temperature for j in range(n)]
        )
        total = (
            total - (row[i] - torch.log(torch.exp(row).sum())) - (col[i] - torch.log(torch.exp(col).sum()))
        )
    return total / (2 * n)


def test_symmetric_loss_matches_the_hand_computation():
    model = tiny_model(loss_temperature=0.07).double().eval()
    renderer = model.renderer
    anchors, positives = renderer(SENTENCES[:5]), renderer([character_typos(s, 1) for s in SENTENCES[:5]])
    out = model(
        pixel_values=anchors.pixel_values.double(),
        attention_mask=anchors.attention_mask,
        positive_pixel_values=positives.pixel_values.double(),
        positive_attention_mask=positives.attention_mask,
    )
    want = hand_symmetric_infonce(out.embeddings, out.positive_embeddings, 0.07)
    torch.testing.assert_close(out.loss, want, rtol=0, atol=TOL / 0.07)
    single = model(pixel_values=positives.pixel_values.double(), attention_mask=positives.attention_mask)
    torch.testing.assert_close(out.positive_embeddings, single.embeddings, rtol=0, atol=TOL)
    assert set(model.last_loss_components) >= {"infonce", "infonce_sym"}


# -- weight averaging -----------------------------------------------------------------------------------------


def test_weight_averaging_is_exact_and_saves(tmp_path):
    folders = []
    for k in range(3):
        model = tiny_model(seed=k)
        with torch.no_grad():
            for i, param in enumerate(model.parameters()):
                param.fill_(float(i + 2 * k))  # small integers: every mean is exact in float32
        model.save_pretrained(tmp_path / f"ckpt-{k}")
        folders.append(tmp_path / f"ckpt-{k}")
    averaged = average_checkpoints(folders, output_dir=tmp_path / "avg")
    for i, param in enumerate(averaged.parameters()):
        assert torch.equal(param.detach(), torch.full_like(param, float(i + 2)))  # (i + i+2 + i+4) / 3
    reloaded = AutoModel.from_pretrained(tmp_path / "avg")
    for a, b in zip(reloaded.state_dict().values(), averaged.state_dict().values()):
        assert torch.equal(a, b)
    assert "weight averaging" in (tmp_path / "avg" / "README.md").read_text()
    weighted = average_checkpoints(folders[:2], weights=[3, 1])
    for i, param in enumerate(weighted.parameters()):
        assert torch.equal(param.detach(), torch.full_like(param, float(i) + 0.5))  # 3/4 i + 1/4 (i + 2)


def test_weight_averaging_of_random_float64_weights():
    models = [tiny_model(seed=k).double() for k in range(4)]
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    averaged = average_checkpoints(models)
    for key, value in averaged.state_dict().items():
        want = sum(s[key] for s in states) / 4
        torch.testing.assert_close(value, want, rtol=0, atol=1e-15 * max(1.0, float(want.abs().max())) * 8)


def test_weight_averaging_refuses_other_architectures(tmp_path):
    a, b = tiny_model(), tiny_model(seed=1, head_hidden_size=8)
    with pytest.raises(ValueError, match="another architecture.*head_hidden_size"):
        average_checkpoints([a, b])
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a])
    with pytest.raises(ValueError, match="weights"):
        average_checkpoints([a, tiny_model(seed=2)], weights=[1, -1])
    with pytest.raises(ValueError, match="no config.json"):
        average_checkpoints([a, tmp_path])


# -- saving and bad inputs ------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(rgb=True, projection_dim=12, loss_temperature=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = PixelPairCollator(model.renderer)(
        [{"anchor": s, "positive": word_shuffle(s, 0)} for s in SENTENCES[:4]]
    )
    model(**batch).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path / "pixel")
    config = json.loads((tmp_path / "pixel" / "config.json").read_text())
    assert config["model_type"] == "pixel_linguist" and config["backbone_config"]["image_size"] == [16, 256]
    assert config["rgb"] is True and config["loss_temperature"] == 0.1
    for loaded in (
        AutoModel.from_pretrained(tmp_path / "pixel"),
        PixelLinguistModel.from_pretrained(tmp_path / "pixel"),
    ):
        assert type(loaded) is PixelLinguistModel
        mine, theirs = model.state_dict(), loaded.state_dict()
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
        a, b = model.encode(SENTENCES), loaded.encode(SENTENCES)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # float32, same weights, same pixels
    card = (tmp_path / "pixel" / "README.md").read_text()
    assert "Pixel Sentence Representation Learning" in card and "16 x 256 strip" in card


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="square number"):
        PixelLinguistConfig(backbone_config=dict(BODY), max_patches=32)
    with pytest.raises(ValueError, match="'vit_mae' backbone"):
        PixelLinguistConfig(backbone_config={"model_type": "vit", **BODY}, max_patches=PATCHES)
    with pytest.raises(ValueError, match="image_size"):
        PixelLinguistConfig(backbone_config={**BODY, "image_size": [16, 512]}, max_patches=PATCHES)
    with pytest.raises(ValueError, match="mask_ratio"):
        PixelLinguistConfig(backbone_config={**BODY, "mask_ratio": 0.25}, max_patches=PATCHES)
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 256\]"):
        model(pixel_values=torch.zeros(2, 3, 16, 256))
    with pytest.raises(ValueError, match="all-zero attention mask"):
        model(
            pixel_values=torch.zeros(2, 1, 16, 256), attention_mask=torch.zeros(2, PATCHES, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="2 anchors but 3 positives"):
        model(pixel_values=torch.zeros(2, 1, 16, 256), positive_pixel_values=torch.zeros(3, 1, 16, 256))
    with pytest.raises(ValueError, match="no 'positive' column"):
        PixelPairCollator(model.renderer)([{"anchor": "x"}])
    with pytest.raises(ValueError, match="Unknown stage key"):
        CurriculumStage.from_dict(
            {"name": "a", "data": {}, "learning_rate": 1e-4, "max_steps": 1, "epochs": 2}
        )
    with pytest.raises(ValueError, match="max_steps"):
        CurriculumStage("a", {}, 1e-4, 0)
    with pytest.raises(ValueError, match="anchor' and 'positive"):
        load_stage_data(Dataset.from_dict({"text": ["a"]}))
    with pytest.raises(TypeError, match="PixelLinguistModel"):
        PixelLinguistTrainer(model=torch.nn.Linear(2, 2))


# -- training -------------------------------------------------------------------------------------------------


def test_trainer_runs_two_steps_and_logs_the_loss_terms(tmp_path):
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = visual_pairs(SENTENCES, seed=0)
    args = PixelLinguistTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    trainer = PixelLinguistTrainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2 and {"infonce", "infonce_sym", "acc"} <= set(logged[0])
    assert all(math.isfinite(e["loss"]) for e in logged)
    assert any(
        not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("backbone.")
    )
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    trainer.save_model(str(tmp_path / "final"))
    assert type(AutoModel.from_pretrained(tmp_path / "final")) is PixelLinguistModel


def test_curriculum_runs_stages_in_order_and_averages_runs(tmp_path):
    model = tiny_model()
    args = PixelLinguistTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, disable_tqdm=True, use_cpu=True,
        save_strategy="no", seed=7,
    )  # fmt: skip
    stages = [
        {
            "name": "visual",
            "data": visual_pairs(SENTENCES, seed=1),
            "learning_rate": 1e-3,
            "max_steps": 1,
            "runs": 2,
        },
        CurriculumStage(
            "pairs", Dataset.from_dict({"anchor": SENTENCES, "positive": SENTENCES[::-1]}), 5e-4, 1
        ),
    ]
    results = run_curriculum(model, stages, args)
    assert [r["name"] for r in results] == ["visual", "pairs"]
    assert [r["seed"] for r in results[0]["runs"]] == [7, 8]
    runs = [PixelLinguistModel.from_pretrained(r["folder"]) for r in results[0]["runs"]]
    averaged = PixelLinguistModel.from_pretrained(results[0]["folder"])
    assert results[0]["folder"].endswith("0-visual/averaged")
    for key, value in averaged.state_dict().items():
        want = ((runs[0].state_dict()[key].double() + runs[1].state_dict()[key].double()) / 2).to(value.dtype)
        assert torch.equal(value, want), key
    assert not torch.equal(
        runs[0].state_dict()["projection.weight"], runs[1].state_dict()["projection.weight"]
    )
    final = PixelLinguistModel.from_pretrained(results[1]["folder"])
    for key, value in final.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_recipe_task_runs_a_tiny_recipe(tmp_path, shared_data):
    register_recipe_task(PIXEL_LINGUIST_TASK, replace=True)
    corpus = shared_data / "corpus" / "wiki1m_first11914.txt"
    recipe = {
        "task": "pixel-linguist",
        "model": {"backbone_config": dict(BODY), "max_patches": PATCHES},
        "data": {"eval": {"split": "dev", "max_rows": 16}},
        "method": {"stages": [{"name": "visual", "data": {"type": "text", "path": str(corpus), "max_rows": 16,
                                                          "positives": ["typo"]},
                               "learning_rate": 1e-3, "max_steps": 1}]},
        "args": {"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4, "save_strategy": "no",
                 "disable_tqdm": True, "use_cpu": True},
    }  # fmt: skip
    results = run_recipe(recipe)
    assert -1 <= results["before"] <= 1 and -1 <= results["after"] <= 1
    assert results["stages"][0]["rows"] == 16
    saved = AutoModel.from_pretrained(results["output"])
    assert type(saved) is PixelLinguistModel and saved.config.max_patches == PATCHES
    bad = {**recipe, "method": {"stages": [{"name": "x", "data": {}, "learning_rate": 1e-3}]}}
    with pytest.raises(ValueError, match="max_steps"):
        run_recipe(bad)
    np.testing.assert_array_equal(saved.encode(["a b"]).shape, (1, BODY["hidden_size"]))


# -- the experiment script's curriculum -----------------------------------------------------------------------


def experiment_module():
    """`benchmarks/pixel_linguist_experiment.py`, imported as a module (it is not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "pixel_linguist_experiment.py"
    spec = importlib.util.spec_from_file_location("pixel_linguist_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_experiment_stages_are_visual_then_snli_entailment_and_mrpc_paraphrases(shared_data):
    exp = experiment_module()
    a = argparse.Namespace(
        semantic="both", visual_rows=12, visual_steps=2, semantic_steps=3, batch_size=4, typo_rate=0.1
    )
    stages = exp.build_stages(a, 3e-4)
    assert [(s.name, s.learning_rate, s.max_steps) for s in stages] == [
        ("visual", 3e-4, 2),
        ("semantic", 3e-4, 3),
    ]
    semantic = load_stage_data(stages[1].data)
    assert semantic.column_names == ["anchor", "positive"]
    # the allowed pairs, read here straight from the files: SNLI entailments, MRPC pairs of quality 1
    snli = shared_data / "nli" / "snli"
    entailed, premises = set(), {}
    for split in ("dev", "test"):
        s1, s2, labels = ((snli / f"{n}.{split}").read_text(encoding="utf-8").splitlines() for n in ("s1", "s2", "labels"))  # fmt: skip
        for p, h, y in zip(s1, s2, labels):
            premises.setdefault((split, p.strip()), set()).add(y.strip())
            if y.strip() == "entailment":
                entailed.add((p.strip(), h.strip()))
    groups = sum({"entailment", "contradiction"} <= labels for labels in premises.values())
    lines = (shared_data / "paraphrase" / "mrpc" / "msr-para-train.tsv").read_text(encoding="utf-8-sig")
    mrpc = [line.split("\t") for line in lines.splitlines()[1:] if line.strip()]
    paraphrases = {(f[3].strip(), f[4].strip()) for f in mrpc if f[0] == "1"}
    assert len(semantic) + a.stsb_overlap_removed == groups + sum(f[0] == "1" for f in mrpc)
    rows = list(zip(semantic["anchor"], semantic["positive"]))
    assert all(r in entailed or r in paraphrases for r in rows)
    held_out = {exp.sentence_key(t) for s in ("dev", "test") for r in exp.load_sts_benchmark(s) for t in (r.sentence1, r.sentence2)}  # fmt: skip
    allowed = {r for r in paraphrases if not {exp.sentence_key(t) for t in r} & held_out}
    assert 0 < len(allowed) < len(paraphrases) and sum(r in paraphrases for r in rows) == len(allowed)
    assert not {exp.sentence_key(t) for r in rows for t in r} & held_out
    assert exp.sentence_key("A man is playing a flute .") == exp.sentence_key("A man is  playing a flute")

    batches = exp.stage_batches(stages, seed=5)
    assert batches == exp.stage_batches(stages, seed=5)  # both rows replay the same batches
    assert [len(b) for b in batches] == [2, 3] and all(len(x) == len(y) == 4 for s in batches for x, y in s)
    visual = load_stage_data(stages[0].data, seed=5)
    assert all(t in visual["anchor"] for anchors, _ in batches[0] for t in anchors)


def test_experiment_loop_runs_stages_in_order_and_keeps_the_best_dev_weights(shared_data):
    exp = experiment_module()
    model = tiny_model()
    seen = []

    def pair_loss(anchors, positives):
        seen.append(list(anchors))
        return renders(anchors, positives)

    stages = [
        CurriculumStage("visual", visual_pairs(SENTENCES, seed=1), 1e-3, 2, per_device_train_batch_size=4),
        CurriculumStage("semantic", Dataset.from_dict({"anchor": SENTENCES, "positive": SENTENCES[::-1]}), 1e-3, 3,
                        per_device_train_batch_size=4),
    ]  # fmt: skip
    batches = exp.stage_batches(stages, seed=0)
    renders = exp.PixelBatches(model, [t for s in batches for x, y in s for t in x + y])
    dev = exp.load_sts_benchmark("dev")[:16]
    a = argparse.Namespace(eval_every=2, eval_batch_size=8)
    before = exp.sts(model, dev, 8)
    run = exp.train_curriculum("pixel", model, pair_loss, stages, batches, a, dev, before)
    assert seen == [x for s in batches for x, _ in s]
    assert [(p["stage"], p["step"], p["global_step"]) for p in run["curve"]] == [
        ("init", 0, 0), ("visual", 2, 2), ("semantic", 2, 4), ("semantic", 3, 5)
    ]  # fmt: skip
    best = max(run["curve"], key=lambda p: p["dev"])
    assert run["best"]["dev"] == best["dev"] and run["best"]["global_step"] == best["global_step"]
    model.load_state_dict(run["state"])
    assert exp.sts(model, dev, 8) == best["dev"]  # the same weights score the same
