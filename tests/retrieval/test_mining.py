"""Hard-negative mining: parity with sentence-transformers' mine_hard_negatives, filters, formats."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS, save_tiny_bert

from hf_contrastive.retrieval.mining import mine_hard_negatives


def sentences(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (length,), generator=g).tolist()))
    return list(dict.fromkeys(out))


@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    folder = tmp_path_factory.mktemp("tiny-bert")
    save_tiny_bert(folder, seed=3)
    word = Transformer(str(folder), max_seq_length=32)
    return SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")


@pytest.fixture(scope="module")
def pairs():
    texts = sentences(60, seed=1)
    anchors, positives = texts[:12], texts[12:24]
    # The first anchor has two positives (two rows): neither may be mined as its negative.
    anchors = [anchors[0], *anchors]
    positives = [texts[40], *positives]
    return Dataset.from_dict({"anchor": anchors, "positive": positives}), texts[24:40]


@pytest.mark.parametrize(
    "options",
    [
        dict(num_negatives=3),
        dict(num_negatives=2, range_min=1, relative_margin=0.05),
        dict(num_negatives=2, margin=0.0, range_max=12),
        dict(num_negatives=4, max_score=0.95, output_format="n-tuple"),
        dict(num_negatives=1, relative_margin=0.01, output_format="labeled-pair"),
    ],
)
def test_parity_with_sentence_transformers(st_model, pairs, options):
    from sentence_transformers.util import mine_hard_negatives as st_mine

    data, corpus = pairs
    options = dict(options)
    fmt = options.get("output_format", "triplet")
    ours = mine_hard_negatives(st_model, data, corpus, **options)
    st_opts = {k: v for k, v in options.items() if k != "margin"}
    if "margin" in options:
        st_opts["absolute_margin"] = options["margin"]
    ref = st_mine(data, st_model, corpus=corpus, verbose=False, **st_opts)
    if fmt == "labeled-pair":
        # sentence-transformers names the columns (anchor, positive, label) the same way.
        assert ours.column_names == ref.column_names
    assert ours.to_dict() == ref.to_dict()
    assert len(ours) > 0


def test_positives_excluded_scores_and_window(st_model, pairs):
    data, corpus = pairs
    out = mine_hard_negatives(
        st_model, data, corpus, num_negatives=3, output_format="n-tuple", output_scores=True
    )
    assert out.column_names == [
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
        "negative_3",
        "mining_scores",
    ]
    pos_of = {}
    for a, p in zip(data["anchor"], data["positive"]):
        pos_of.setdefault(a, set()).add(p)
    emb = lambda texts: torch.nn.functional.normalize(  # noqa: E731
        torch.as_tensor(st_model.encode(texts)), dim=-1
    )
    for row in out:
        negs = [row[f"negative_{i}"] for i in (1, 2, 3)]
        assert not pos_of[row["anchor"]] & set(negs)
        s = row["mining_scores"]
        assert s[1] >= s[2] >= s[3]
        want = (emb([row["anchor"]]) @ emb([row["positive"], *negs]).T)[0].tolist()
        assert s == pytest.approx(want, abs=1e-5)
    # range_min skips the best candidates: the 2nd window starts where the first one's 2nd pick was.
    top = mine_hard_negatives(st_model, data, corpus, num_negatives=2, output_format="n-tuple")
    shifted = mine_hard_negatives(
        st_model, data, corpus, num_negatives=1, range_min=1, output_format="n-tuple"
    )
    assert shifted["negative_1"] == top["negative_2"]


class ReverseReranker:
    """Scores a pair by minus the length of the document: shortest documents win."""

    def __init__(self):
        self.calls = 0

    def predict(self, pairs, batch_size=32):
        self.calls += 1
        return [-float(len(d)) for _, d in pairs]


def test_reranker_rescoring_random_sampling_and_bad_input(st_model, pairs, caplog):
    data, corpus = pairs
    rr = ReverseReranker()
    out = mine_hard_negatives(
        st_model, data, corpus, num_negatives=2, range_max=20, reranker=rr, output_format="n-tuple"
    )
    assert rr.calls == 2  # candidates once, positives once
    for row in out:
        assert len(row["negative_1"]) <= len(row["negative_2"])
    a = mine_hard_negatives(
        st_model, data, corpus, num_negatives=2, range_max=10, sampling_strategy="random", seed=1
    )
    b = mine_hard_negatives(
        st_model, data, corpus, num_negatives=2, range_max=10, sampling_strategy="random", seed=1
    )
    assert a.to_dict() == b.to_dict()
    # An impossible filter leaves no negatives: a clear error, and a warning counting the short queries.
    with (
        caplog.at_level(logging.WARNING, logger="hf_contrastive.retrieval.mining"),
        pytest.raises(ValueError, match="No query kept any negative"),
    ):
        mine_hard_negatives(st_model, data, corpus, max_score=-2.0)
    assert "fewer than 3 negatives" in caplog.text
    with pytest.raises(ValueError, match="no column"):
        mine_hard_negatives(st_model, data, corpus, anchor_column="query")
    with pytest.raises(ValueError, match="window"):
        mine_hard_negatives(st_model, data, corpus, num_negatives=5, range_min=2, range_max=4)
    with pytest.raises(ValueError, match="output_format"):
        mine_hard_negatives(st_model, data, corpus, output_format="pairs")
    with pytest.raises(ValueError, match="empty"):
        mine_hard_negatives(st_model, data.select([]), corpus)


def test_mined_dataset_trains_with_contrastive_trainer(tmp_path, pairs):
    from tiny_models import bert_config, bert_tokenizer

    from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig

    tok = bert_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    data, corpus = pairs
    mined = mine_hard_negatives(model, data, corpus, num_negatives=2, output_format="n-tuple")
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=mined)
    assert trainer.roles.negatives == ["negative_1", "negative_2"]
    trainer.train()
