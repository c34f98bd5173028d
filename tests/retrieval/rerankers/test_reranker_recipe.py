"""The ``reranker`` recipe task end to end on a tiny BEIR folder and tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import WORDS, bert_config, bert_tokenizer, save_tiny_bert

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.recipes import load_recipe, recipe_path, run_recipe
from hf_contrastive.retrieval.rerankers import CrossEncoderReranker, load_reranker


@pytest.fixture
def beir(tmp_path):
    g = torch.Generator().manual_seed(0)
    words = sorted(set(WORDS))
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {
        str(i): " ".join(words[j] for j in torch.randperm(len(words), generator=g)[:6].tolist())
        for i in range(30)
    }
    with open(folder / "corpus.jsonl", "w") as f:
        for i, text in docs.items():
            f.write(json.dumps({"_id": i, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"_id": f"q{i}", "text": " ".join(docs[str(i)].split()[:3])}) + "\n")
    for split, ids in (("train", range(8)), ("test", range(8, 12))):
        rows = "".join(f"q{i}\t{i}\t1\n" for i in ids)
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    retriever = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    retriever.tokenizer = tok
    retriever.save_pretrained(tmp_path / "retriever")
    save_tiny_bert(tmp_path / "backbone")
    return tmp_path


def test_reranker_recipe_runs_and_saves(beir):
    recipe = {
        "model": {"type": "cross-encoder", "name_or_path": str(beir / "backbone"), "max_seq_length": 32},
        "data": {
            "retrieval": str(beir / "beir"),
            "split": "train",
            "retriever": str(beir / "retriever"),
            "num_negatives": 2,
            "relative_margin": None,
            "eval_split": "test",
            "eval_top_k": 5,
        },
        "method": {"objective": "listwise"},
        "args": {
            "output_dir": str(beir / "out"),
            "per_device_train_batch_size": 4,
            "max_steps": 2,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
        },
        "task": "reranker",
    }
    out = run_recipe(recipe)
    assert out["training_groups"] == 8
    assert set(out["retriever"]) == set(out["reranked"]) == {"ndcg@10", "mrr@10"}
    saved = load_reranker(out["output"])
    assert isinstance(saved, CrossEncoderReranker) and saved.config.max_seq_length == 32
    recipe["method"] = {"objective": "listwise", "margin": 1}
    with pytest.raises(ValueError, match=r"Unknown method setting\(s\) \['margin'\]"):
        run_recipe(recipe)


def test_packaged_reranker_recipes_resolve():
    for name in ("reranker-sft", "reranker-cl"):
        assert recipe_path(name).is_file()
        recipe = load_recipe(name, ["--method.objective", "cl"])
        assert recipe["task"] == "reranker" and recipe["method"]["objective"] == "cl"
        with pytest.warns(FutureWarning, match="--method.objective"):
            old = load_recipe(name, ["--reranker.objective", "listwise"])
        assert old["method"]["objective"] == "listwise" and "reranker" not in old
        assert recipe["model"]["type"] == "llm" and recipe["lora"]["target_modules"]
