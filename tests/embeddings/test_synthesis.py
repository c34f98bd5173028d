"""MultiCSR's LLM data pipeline: strict parsing, the paper's thresholds, counted drops, the answer cache
(hits, keys, torn lines, resume after a crash), generation with a tiny causal LM (chat template, left padding,
seeds, pipelines), training on the output, and the `multicsr-data` recipe task."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from tiny_models import WORDS, bert_config, bert_tokenizer, save_tiny_bert, tiny_causal_lm, word_tokenizer
from transformers import pipeline

from hf_contrastive.core.recipes import RecipeError
from hf_contrastive.embeddings import (
    ContrastiveConfig,
    ContrastiveTrainer,
    SentenceEncoder,
    SentenceEncoderConfig,
)
from hf_contrastive.embeddings.synthesis import (
    CACHE_FILE_NAME,
    DROP_REASONS,
    STAGES,
    AnswerCache,
    GenerationSettings,
    MultiCSRData,
    MultiCSRDataBuilder,
    TextGenerator,
    model_fingerprint,
    parse_hypothesis,
    parse_score,
    threshold_reason,
)
from hf_contrastive.embeddings.synthesis import recipes as synthesis_recipes
from hf_contrastive.embeddings.synthesis.generators import _NewlineStop
from hf_contrastive.recipes import load_recipe, register_recipe_task, run_recipe

REPO = Path(__file__).resolve().parents[2]


# -- a deterministic fake LLM --------------------------------------------------------------------------------
# Short templates let the fake read its prompts back: "E|premise", "C|premise", "S|premise|hypothesis".
TEMPLATES = dict(
    entailment_prompt="E|{premise}",
    contradiction_prompt="C|{premise}",
    score_prompt="S|{sentence1}|{sentence2}",
)

# premise -> (entailment answer, contradiction answer, entailment rating answer, contradiction rating answer)
# fmt: off
SCRIPT = {
    "the dog runs in the park": ("A dog is running outside.", "The dog sleeps at home.", "4", "1"),
    "a man is eating food": ("", "The man is not eating.", "4", "0"),  # entailment/empty
    # entailment/no_hypothesis and contradiction/too_short
    "the woman plays guitar": ("Here is a paraphrase:", "No", "4", "0"),
    "cat sleeps on sofa": ("Cat sleeps on sofa!", "The cat is awake.", "4", "0"),  # entailment/echoes_premise
    "it rains today": ("It is raining now.", "it is raining now", "4", "0"),  # identical_hypotheses
    "the sun shines bright": ("The sun is bright.", "The sun is dark.", "high", "9"),  # unparsable, too high
    "children are playing outside": ("Kids play outdoors.", "No child is outside.", "2", "0"),  # positive low
    "the car drives fast": ("The car is quick.", "The car is parked.", "5", "4"),  # negative above
    "the house is big": ("The house is large.", "The house is tiny.", "3", "3"),  # equal scores
    "a red car": ("A dog is running outside.", "There is no car.", "5", "0"),  # duplicate_text
    "the blue house": ('Paraphrase: "The house is blue."', "The house is red.\nmore", "4/5", "0 out of 5"),
}
# fmt: on
PREMISES = [*list(SCRIPT)[:1], "the dog runs in the park", *list(SCRIPT)[1:]]  # one repeated premise


class FakeLLM:
    """Answers from SCRIPT; records every prompt it receives."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.prompts: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, prompts: list[str]) -> list[str]:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("generator crashed")
        self.prompts += prompts
        out = []
        for prompt in prompts:
            kind, rest = prompt.split("|", 1)
            if kind == "E":
                out.append(SCRIPT[rest.rstrip("|")][0])
            elif kind == "C":
                out.append(SCRIPT[rest][1])
            else:
                assert rest.endswith("\nScore: "), "the rating prompt ends with its answer start"
                premise, hypothesis = rest[: -len("\nScore: ")].split("|")
                e_hyp = parse_hypothesis(SCRIPT[premise][0], premise)[0]
                out.append(SCRIPT[premise][2] if hypothesis == e_hyp else SCRIPT[premise][3])
        return out


def fake_builder(tmp_path, fake=None, **kw):
    kw = {**TEMPLATES, "generator_name": "fake-llm", "cache_dir": tmp_path / "cache", **kw}
    return MultiCSRDataBuilder(fake if fake is not None else FakeLLM(), **kw)


# -- parsing -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("A dog is running outside.", "A dog is running outside."),
        ("  Paraphrase: 'A dog runs  outside.'\nmore text", "A dog runs outside."),
        ('Contradiction: "The dog is asleep', "The dog is asleep"),  # cut-off quote
        ("\n\nThe dog is asleep.\n", "The dog is asleep."),
        ('The negation of this sentence is "The dog is asleep."', "The dog is asleep."),
        ("Here is the new sentence: A dog plays outside.", "A dog plays outside."),
        (
            "The sentence is a short one about dogs.",
            "The sentence is a short one about dogs.",
        ),  # no introduction
    ],
)
def test_parse_hypothesis_reads_the_first_line(answer, expected):
    assert parse_hypothesis(answer, "the dog runs in the park") == (expected, None)


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty"),
        ("  \n \n", "empty"),
        ('""', "empty"),
        ("Here is the new sentence:", "no_hypothesis"),
        ("Dogs run.", "too_short"),
        ("The dog runs in the park!", "echoes_premise"),
        ("Sentence: the DOG runs, in the park", "echoes_premise"),
        ('The sentence is: "The dog runs in the park."', "echoes_premise"),  # an introduced copy
        ("The opposite of this sentence is:\nThe dog sits.", "no_hypothesis"),
    ],
)
def test_parse_hypothesis_gives_the_reason_of_a_bad_answer(answer, reason):
    assert parse_hypothesis(answer, "the dog runs in the park") == (None, reason)
    assert reason in DROP_REASONS


@pytest.mark.parametrize(
    "answer, value",
    [("4", 4.0), ("Score: 3.5", 3.5), ("4/5", 4.0), ("3 out of 5.", 3.0), ("**5**", 5.0), ("0.0000\n", 0.0),
     ("Similarity is 2", 2.0), ("5.0\nThe sentences are the same", 5.0)],
)  # fmt: skip
def test_parse_score_accepts_a_number_in_range(answer, value):
    assert parse_score(answer) == (value, None)


@pytest.mark.parametrize(
    "answer, reason",
    [("1. Both sentences convey the", "unparsable_score"), ("The score is high", "unparsable_score"),
     ("", "unparsable_score"), ("0.1879 - ", "unparsable_score"), ("Score:", "unparsable_score"),
     ("7", "score_out_of_range"), ("-1", "score_out_of_range"), ("5.5", "score_out_of_range")],
)  # fmt: skip
def test_parse_score_refuses_anything_but_a_number_in_range(answer, reason):
    assert parse_score(answer) == (None, reason)


@pytest.mark.parametrize(
    "pos, neg, different, expected",
    [(3.0, 2.9, True, None), (5.0, 0.0, True, None), (2.9, 0.0, True, "positive_below_threshold"),
     (5.0, 3.1, True, "negative_above_threshold"), (3.0, 3.0, True, "equal_scores"), (3.0, 3.0, False, None),
     (2.0, 4.0, True, "positive_below_threshold")],
)  # fmt: skip
def test_paper_thresholds(pos, neg, different, expected):
    assert threshold_reason(pos, neg, 3.0, 3.0, different) == expected


def test_non_string_answers_are_refused():
    with pytest.raises(TypeError, match="must be a string"):
        parse_hypothesis(None, "p")
    with pytest.raises(TypeError, match="must be a string"):
        parse_score(4)


# -- the pipeline with a fake LLM ----------------------------------------------------------------------------
def test_build_counts_every_drop_by_stage_and_reason(tmp_path, caplog):
    fake = FakeLLM()
    with caplog.at_level(logging.INFO, logger="hf_contrastive.embeddings.synthesis"):
        data = fake_builder(tmp_path, fake).build(PREMISES)
    report = data.report
    assert report.counts == {
        "input": 12,
        "unique_premises": 11,
        "valid_hypotheses": 7,
        "valid_scores": 6,
        "passed_thresholds": 3,
        "unique_texts": 2,
    }
    assert list(report.counts) == list(STAGES)
    assert {s: dict(c) for s, c in report.dropped.items()} == {
        "unique_premises": {"duplicate_premise": 1},
        "valid_hypotheses": {
            "entailment/empty": 1,
            "entailment/no_hypothesis": 1,
            "contradiction/too_short": 1,
            "entailment/echoes_premise": 1,
            "identical_hypotheses": 1,
        },
        "valid_scores": {"entailment/unparsable_score": 1, "contradiction/score_out_of_range": 1},
        "passed_thresholds": {
            "positive_below_threshold": 1,
            "negative_above_threshold": 1,
            "equal_scores": 1,
        },
        "unique_texts": {"duplicate_text": 1},
    }
    assert data.dataset.column_names == ["anchor", "positive", "negative"]
    assert data.dataset.to_dict() == {
        "anchor": ["the dog runs in the park", "the blue house"],
        "positive": ["A dog is running outside.", "The house is blue."],
        "negative": ["The dog sleeps at home.", "The house is red."],
    }
    assert data.scores.to_dict() == {"positive_score": [4.0, 4.0], "negative_score": [1.0, 0.0]}
    assert report.answers == {
        "entailment": {"requested": 11, "generated": 11, "from_cache": 0},
        "contradiction": {"requested": 11, "generated": 11, "from_cache": 0},
        "score": {"requested": 14, "generated": 14, "from_cache": 0},
    }
    # counted and logged: the warning names the reasons, the table every stage
    assert "10 of 12 premises dropped" in caplog.text and "entailment/echoes_premise 1" in caplog.text
    table = str(report)
    for stage in STAGES:
        assert stage in table
    assert "2 triplets" in table and "duplicate_text 1" in table


def test_a_rerun_reads_every_answer_from_the_cache(tmp_path):
    first = fake_builder(tmp_path).build(PREMISES)
    fake = FakeLLM()
    second = fake_builder(tmp_path, fake).build(PREMISES)  # a new builder: only the file is shared
    assert fake.calls == 0
    assert second.dataset.to_dict() == first.dataset.to_dict()
    assert second.scores.to_dict() == first.scores.to_dict()
    assert second.report.counts == first.report.counts
    assert second.report.answers["score"] == {"requested": 14, "generated": 0, "from_cache": 14}
    lines = (tmp_path / "cache" / CACHE_FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 11 + 11 + 14 and all(json.loads(line)["generator"] == "fake-llm" for line in lines)


def test_changing_one_prompt_regenerates_only_its_answers(tmp_path):
    fake_builder(tmp_path).build(PREMISES)
    fake = FakeLLM()
    data = fake_builder(tmp_path, fake, entailment_prompt="E|{premise}|").build(PREMISES)
    assert data.report.answers["entailment"] == {"requested": 11, "generated": 11, "from_cache": 0}
    assert len(fake.prompts) == 11 and all(p.startswith("E|") and p.endswith("|") for p in fake.prompts)
    assert data.report.answers["contradiction"] == {"requested": 11, "generated": 0, "from_cache": 11}


@pytest.mark.parametrize(
    "change",
    [{"entailment_prompt": "E2|{premise}"}, {"contradiction_answer_start": "Negation: "},
     {"max_new_tokens": 10},
     {"temperature": 0.7}, {"seed": 1}, {"system_prompt": "Be brief."}, {"generator_name": "other-llm"},
     {"stop_at_newline": False}],
)  # fmt: skip
def test_cache_key_changes_with_prompt_settings_and_generator(tmp_path, change):
    base = fake_builder(tmp_path)
    same = fake_builder(tmp_path, batch_size=3)  # batch size is not part of the key
    changed = fake_builder(tmp_path, **change)
    kind = "contradiction" if "contradiction_answer_start" in change else "entailment"
    assert base.cache_key(kind, ["a dog"]) == same.cache_key(kind, ["a dog"])
    assert base.cache_key(kind, ["a dog"]) != changed.cache_key(kind, ["a dog"])
    assert base.cache_key(kind, ["a dog"]) != base.cache_key(kind, ["a cat"])


def test_model_identity_follows_the_weights():
    tok = word_tokenizer()
    a, b = tiny_causal_lm(len(tok), seed=0), tiny_causal_lm(len(tok), seed=1)
    assert model_fingerprint(a) == model_fingerprint(tiny_causal_lm(len(tok), seed=0))
    assert model_fingerprint(a) != model_fingerprint(b)
    changed = copy.deepcopy(a)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight.add_(1e-3)  # a fine-tuned middle layer
    assert model_fingerprint(changed) != model_fingerprint(a)
    assert TextGenerator((a, tok)).identity != TextGenerator((b, tok)).identity


# -- the cache file: torn lines, corruption, resume after a crash, atomic folder saves -----------------------
def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "answers.jsonl"
    cache = AnswerCache(path)
    cache.add([{"key": "a", "answer": "1"}, {"key": "b", "answer": "2"}])
    with open(path, "ab") as f:
        f.write(b'{"key": "c", "ans')  # a write killed half-way
    with caplog.at_level(logging.WARNING):
        reread = AnswerCache(path)
    assert "torn last line" in caplog.text and reread.torn_lines == 1
    assert (reread.get("a"), reread.get("b"), reread.get("c")) == ("1", "2", None)
    reread.add([{"key": "c", "answer": "3"}])
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["key"], r["answer"]) for r in records] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert AnswerCache(path).torn_lines == 0


def test_a_corrupt_complete_line_is_refused_with_its_number(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"key": "a", "answer": "1"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"answers.jsonl:2: not a JSON record"):
        AnswerCache(path)
    path.write_text('{"key": "a", "answer": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r":1: expected an object with string 'key' and 'answer'"):
        AnswerCache(path)


def test_a_crashed_run_resumes_without_regenerating_finished_batches(tmp_path):
    with pytest.raises(RuntimeError, match="generator crashed"):
        fake_builder(tmp_path, FakeLLM(fail_on_call=3), batch_size=4).build(PREMISES)
    assert len(AnswerCache(tmp_path / "cache" / CACHE_FILE_NAME)) == 8  # two batches of entailments on disk
    fake = FakeLLM()
    data = fake_builder(tmp_path, fake, batch_size=4).build(PREMISES)
    assert data.report.answers["entailment"] == {"requested": 11, "generated": 3, "from_cache": 8}
    assert data.dataset.to_dict() == fake_builder(tmp_path / "fresh").build(PREMISES).dataset.to_dict()


def test_saved_data_round_trips_and_a_failed_save_keeps_the_old_folder(tmp_path, monkeypatch):
    data = fake_builder(tmp_path).build(PREMISES)
    folder = tmp_path / "triplets"
    data.save_to_disk(folder)
    assert load_from_disk(str(folder)).to_dict() == data.dataset.to_dict()
    back = MultiCSRData.load_from_disk(folder)
    assert back.scores.to_dict() == data.scores.to_dict() and back.report.as_dict() == data.report.as_dict()
    smaller = MultiCSRData(data.dataset.select([0]), data.scores.select([0]), data.report)
    monkeypatch.setattr(type(data.report), "as_dict", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        smaller.save_to_disk(folder)
    assert load_from_disk(str(folder)).num_rows == 2 and sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "triplets",
    ]


# -- generation with a tiny causal LM ------------------------------------------------------------------------
def tiny_lm():
    tok = word_tokenizer()
    return tiny_causal_lm(len(tok)), tok


def test_model_prompts_use_the_chat_template_and_answer_start():
    model, tok = tiny_lm()
    gen = TextGenerator((model, tok))
    assert gen.uses_chat_template
    assert gen.render("a dog runs", "Score: ") == "user : a dog runs assistant :Score: "
    plain = word_tokenizer(chat=False)
    assert TextGenerator(model, plain).render("a dog runs", "x") == "a dog runs\nx"
    assert TextGenerator(lambda prompts: prompts).render("a dog runs", "Score: ") == "a dog runs\nScore: "


def test_batched_left_padded_generation_equals_one_by_one():
    model, tok = tiny_lm()
    gen = TextGenerator((model, tok))
    settings = GenerationSettings(max_new_tokens=6)
    messages = ["a dog runs", "the woman plays guitar in the big green park today", "cat sleeps"]
    side, pad = tok.padding_side, tok.pad_token
    batched = gen(messages, [""] * 3, settings)
    single = [gen([m], [""], settings)[0] for m in messages]
    assert batched == single
    assert all(len(a.split()) <= 6 for a in batched)
    assert (tok.padding_side, tok.pad_token) == (side, pad)  # the tokenizer is left as it was


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    model, tok = tiny_lm()
    gen = TextGenerator((model, tok))
    settings = GenerationSettings(max_new_tokens=8, temperature=1.5)
    messages = ["a dog runs"] * 4
    state = torch.random.get_rng_state()
    a = gen(messages, [""] * 4, settings, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert gen(messages, [""] * 4, settings, seed=3) == a
    assert len(set(a)) > 1  # sampling: the four rows differ


def test_newline_stop_ends_a_row_at_its_newline_token():
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return {5: ".\n", 6: "word"}[ids[0]]

    stop = _NewlineStop(Tok(), prompt_length=2)
    ids = torch.tensor([[1, 2, 6], [1, 2, 5]])
    assert stop(ids, None).tolist() == [False, True]
    assert stop(ids[:, :2], None).tolist() == [False, False]  # nothing generated yet


@pytest.mark.slow
def test_a_pipeline_and_the_model_pair_give_the_same_answers(tmp_path):
    model, tok = tiny_lm()
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    premises = ["a dog runs in park", "the cat sleeps on sofa"]
    kw = dict(max_new_tokens=5, score_max_new_tokens=3, min_words=1)
    by_pipe = MultiCSRDataBuilder(pipe, cache_dir=tmp_path / "a", **kw)
    by_pair = MultiCSRDataBuilder((model, tok), cache_dir=tmp_path / "b", **kw)
    assert by_pipe.generator.identity == by_pair.generator.identity
    a, b = by_pipe.build(premises), by_pair.build(premises)
    assert a.report.counts == b.report.counts and a.report.counts["input"] == 2
    answers = [(r["key"], r["answer"]) for r in map(json.loads, (tmp_path / "a" / CACHE_FILE_NAME).open())]
    assert answers == [
        (r["key"], r["answer"]) for r in map(json.loads, (tmp_path / "b" / CACHE_FILE_NAME).open())
    ]
    assert len(answers) >= 4  # four hypotheses, plus the ratings of those that parsed


# -- training on the output ----------------------------------------------------------------------------------
def word_script(n: int) -> dict[str, tuple[str, str, str, str]]:
    g = torch.Generator().manual_seed(0)
    script = {}
    while len(script) < n:
        words = [WORDS[i] for i in torch.randint(len(WORDS), (6,), generator=g).tolist()]
        premise = " ".join(words)
        script[premise] = (" ".join(words[::-1]), " ".join([*words[:3], "not", *words[3:]]), "4", "1")
    return script


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["multicsr", "simcse_sup"])
def test_the_triplets_train_in_contrastive_trainer_as_they_are(tmp_path, monkeypatch, loss):
    monkeypatch.setitem(globals(), "SCRIPT", word_script(8))
    data = fake_builder(tmp_path).build(list(SCRIPT))
    assert data.report.triplets == 8
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    reference = copy.deepcopy(model) if loss == "multicsr" else None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        loss=loss,
        false_negative_threshold=0.95 if loss == "multicsr" else None,
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=data.dataset, reference_model=reference
    )
    assert (trainer.roles.anchor, trainer.roles.positive, trainer.roles.negatives) == (
        "anchor",
        "positive",
        ["negative"],
    )
    out = trainer.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- the recipe task -----------------------------------------------------------------------------------------
def test_packaged_recipe_loads_with_the_paper_settings():
    register_recipe_task(synthesis_recipes.RECIPE_TASK, replace=True)
    recipe = load_recipe(REPO / "trainers" / "multicsr-llm.yaml")
    assert recipe["task"] == "multicsr-data"
    assert recipe["method"]["loss"] == "multicsr" and recipe["method"]["temperature"] == 0.05
    assert recipe["method"]["false_negative_threshold"] == 0.95
    assert (recipe["method"]["positive_threshold"], recipe["method"]["negative_threshold"]) == (3.0, 3.0)
    assert recipe["args"]["per_device_train_batch_size"] == 128 and recipe["args"]["learning_rate"] == 5e-5
    assert recipe["model"]["pooling"] == "cls" and recipe["model"]["mlp_only_train"] is True
    assert "${" not in json.dumps(recipe)


@pytest.mark.slow
def test_recipe_generates_trains_and_caches(tmp_path, monkeypatch):
    register_recipe_task(synthesis_recipes.RECIPE_TASK, replace=True)
    monkeypatch.setitem(globals(), "SCRIPT", word_script(6))
    fakes = []
    monkeypatch.setattr(
        synthesis_recipes, "load_generator", lambda name: fakes.append(FakeLLM()) or fakes[-1]
    )
    save_tiny_bert(tmp_path / "bert")
    corpus = tmp_path / "premises.txt"
    corpus.write_text("\n".join(SCRIPT) + "\n", encoding="utf-8")
    args = {"per_device_train_batch_size": 3, "max_steps": 2, "report_to": "none", "save_strategy": "no",
            "disable_tqdm": True, "use_cpu": True}  # fmt: skip
    recipe = {
        "task": "multicsr-data",
        "model": {"name_or_path": str(tmp_path / "bert"), "pooling": "cls"},
        "data": {
            "premises": {"type": "text", "path": str(corpus)},
            "generator": "fake",
            "generation": {"generator_name": "fake-llm", **TEMPLATES},
            "cache_dir": str(tmp_path / "cache"),
            "save_triplets": str(tmp_path / "triplets"),
        },
        "args": {**args, "output_dir": str(tmp_path / "run")},
    }
    out = run_recipe(recipe)
    assert out["triplets"] == 6 and out["synthesis"]["counts"]["unique_texts"] == 6
    assert SentenceEncoder.from_pretrained(out["output"]).config.pooling == "cls"
    assert load_from_disk(str(tmp_path / "triplets")).num_rows == 6
    cached = AnswerCache(tmp_path / "cache" / CACHE_FILE_NAME)
    assert len(cached) == 6 + 6 + 12 and fakes[-1].calls == 3  # entailments, contradictions, ratings
    from_folder = {**recipe, "data": {"triplets": str(tmp_path / "triplets")}}
    assert (
        run_recipe({**from_folder, "args": {**args, "output_dir": str(tmp_path / "run3")}})["triplets"] == 6
    )
    with pytest.raises(RecipeError, match="either premises"):
        run_recipe({**recipe, "data": {**recipe["data"], "triplets": str(tmp_path / "triplets")}})
    with pytest.raises(RecipeError, match=r"Unknown key\(s\) \['max_tokens'\]"):
        run_recipe({**recipe, "data": {**recipe["data"], "generation": {"max_tokens": 3}}})


# -- bad input -----------------------------------------------------------------------------------------------
def test_bad_premises_and_settings_are_refused(tmp_path):
    builder = fake_builder(tmp_path)
    with pytest.raises(ValueError, match=r"premises\[1\] is empty or blank"):
        builder.build(["a dog runs", "  "])
    with pytest.raises(TypeError, match=r"premises\[0\] is a int"):
        builder.build([3])
    with pytest.raises(TypeError, match="sequence of strings, got str"):
        builder.build("a dog runs")
    with pytest.raises(ValueError, match=r"score_prompt must contain the field\(s\) \['\{sentence2\}'\]"):
        fake_builder(tmp_path, score_prompt="S|{sentence1}")
    with pytest.raises(ValueError, match="positive_threshold is a rating in"):
        fake_builder(tmp_path, positive_threshold=6)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        fake_builder(tmp_path, temperature=-1.0)
    with pytest.raises(ValueError, match="pass generator_name="):
        MultiCSRDataBuilder(lambda prompts: prompts, cache_dir=tmp_path / "c")
    with pytest.raises(TypeError, match="generator must be"):
        MultiCSRDataBuilder(42)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        MultiCSRDataBuilder(tiny_lm()[0])


def test_a_generator_that_breaks_its_contract_is_refused(tmp_path):
    with pytest.raises(ValueError, match="returned 1 answers for 2 prompts"):
        fake_builder(tmp_path, lambda prompts: ["x"]).build(["a dog runs", "a cat sleeps"])
    with pytest.raises(TypeError, match="answer 0 is a NoneType"):
        fake_builder(tmp_path, lambda prompts: [None] * len(prompts)).build(["a dog runs"])
    with pytest.raises(TypeError, match="must return a list of strings, got str"):
        fake_builder(tmp_path, lambda prompts: "x").build(["a dog runs"])
