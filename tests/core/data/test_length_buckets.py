"""Length-bucketed forward of ContrastiveTrainer: same embeddings, loss and gradients as one padded forward."""

from __future__ import annotations

import torch
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.core.data.collator import length_buckets


def sentences(n, seed, lo=2, hi=20):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def encoder(tmp_path):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    return model


def test_groups_cover_every_row_once_and_trim_padding(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    batch = dict(tok(sentences(96, 1), padding=True, return_tensors="pt"))
    groups = length_buckets(batch, min_rows=32)
    assert len(groups) == 3
    rows = torch.cat([idx for idx, _ in groups])
    assert sorted(rows.tolist()) == list(range(96))
    width = batch["input_ids"].shape[1]
    for idx, part in groups:
        assert part["input_ids"].shape[1] == int(batch["attention_mask"][idx].sum(1).max()) <= width
        assert torch.equal(part["input_ids"], batch["input_ids"][idx, : part["input_ids"].shape[1]])
        assert set(part) == set(batch)


def test_small_left_padded_or_uniform_batches_stay_whole(tmp_path):
    tok = bert_tokenizer(tmp_path / "vocab")
    small = dict(tok(sentences(40, 2), padding=True, return_tensors="pt"))
    assert length_buckets(small, min_rows=32)[0][0] is None
    tok.padding_side = "left"
    left = dict(tok(sentences(96, 3), padding=True, return_tensors="pt"))
    assert length_buckets(left, min_rows=32)[0][0] is None
    uniform = {"input_ids": torch.ones(96, 8, dtype=torch.long), "attention_mask": torch.ones(96, 8)}
    assert length_buckets(uniform, min_rows=32)[0][0] is None


def test_trainer_loss_and_gradients_match_one_padded_forward(tmp_path):
    ds = Dataset.from_dict({"anchor": sentences(40, 4, 12, 30), "positive": sentences(40, 5, 2, 6)})
    model = encoder(tmp_path)
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=40, report_to="none"
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
    batch = trainer.data_collator([ds[i] for i in range(40)])
    assert len(length_buckets(dict(batch))) == 2  # 80 rows: two groups of 40
    model.eval()  # no dropout, so both ways see the same network
    results = []
    for bucketed in (True, False):
        trainer.args.length_bucketed_forward = bucketed
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4)
