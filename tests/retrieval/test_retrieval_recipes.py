"""The two retrieval recipes (Contriever pre-training, hard negatives + GradCache) on a tiny BEIR folder."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.recipes import load_recipe, run_recipe
from hf_contrastive.retrieval.bi_encoder import BiEncoder


@pytest.fixture
def tiny_beir(tmp_path):
    g = torch.Generator().manual_seed(0)

    def text(n):
        return " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=g).tolist())

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": {"title": text(2), "text": ". ".join(text(6) for _ in range(3))} for i in range(24)}
    with open(folder / "corpus.jsonl", "w") as f:
        for d, doc in docs.items():
            f.write(json.dumps({"_id": d, **doc}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i in range(16):
            f.write(json.dumps({"_id": f"q{i}", "text": text(4)}) + "\n")
    for split, ids in (("train", range(12)), ("test", range(12, 16))):
        with open(folder / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for i in ids:
                f.write(f"q{i}\td{i}\t1\n")
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok)), normalize=True))
    model.tokenizer = tok
    model.save_pretrained(tmp_path / "model")
    return tmp_path


COMMON = [
    "--args.max_steps", "2", "--args.per_device_train_batch_size", "4", "--args.save_strategy", "no",
    "--args.disable_tqdm", "true", "--args.max_seq_length", "32", "--args.logging_steps", "1",
]  # fmt: skip


def test_contriever_pretrain_recipe(tiny_beir):
    tmp = tiny_beir
    recipe = load_recipe(
        "contriever-pretrain",
        [
            "--model.name_or_path", str(tmp / "model"), "--data.corpus.name", str(tmp / "beir"),
            "--data.eval.name", str(tmp / "beir"), "--args.output_dir", str(tmp / "out"),
            "--method.queue_size", "16", "--method.momentum", "0.9", *COMMON,
        ],
    )  # fmt: skip
    assert recipe["task"] == "retrieval" and recipe["method"]["loss"] == "moco"
    assert recipe["method"]["queue_size"] == 16 and "queue_size" not in recipe["args"]
    out = run_recipe(recipe)
    assert set(out["before"]) == {"ndcg@10", "recall@100", "mrr@10"} and 0 <= out["after"]["ndcg@10"] <= 1
    assert out["training pairs"] == "48 random_crop pairs"  # 24 documents x 2 pairs
    model = BiEncoder.from_pretrained(out["output"])
    assert model.encode_queries(["a man"]).shape == (1, 32)


def test_retrieval_finetune_recipe_with_hard_negatives_and_gradcache(tiny_beir):
    tmp = tiny_beir
    recipe = load_recipe(
        "retrieval-finetune",
        [
            "--model.name_or_path", str(tmp / "model"), "--data.train.name", str(tmp / "beir"),
            "--data.eval.name", str(tmp / "beir"), "--args.output_dir", str(tmp / "out"),
            "--data.hard_negatives.range_min", "0", "--data.hard_negatives.range_max", "8",
            "--data.hard_negatives.relative_margin", "null", "--args.gradcache_mini_batch_size", "3", "--args.learning_rate", "1e-2", *COMMON,
        ],
    )  # fmt: skip
    assert recipe["args"]["gradcache_mini_batch_size"] == 3
    out = run_recipe(recipe)
    assert out["training pairs"] == "12 (query, relevant document, 1 mined negatives)"
    assert out["before"]["ndcg@10"] != out["after"]["ndcg@10"]
    assert (tmp / "out" / "final" / "config.json").is_file()


def test_bad_recipe_data(tiny_beir):
    tmp = tiny_beir
    recipe = load_recipe("retrieval-finetune", ["--model.name_or_path", str(tmp / "model")])
    recipe["data"]["corpus"] = {"name": str(tmp / "beir")}
    with pytest.raises(ValueError, match="either corpus .* or train .*not both"):
        run_recipe(recipe)
