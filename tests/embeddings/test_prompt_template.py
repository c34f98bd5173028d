"""`SentenceEncoderConfig.prompt_template` (PromptEOL-style templates for last-token pooling of a causal LM)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tiny_models import TEXTS, summation_tolerance, tiny_llama, word_tokenizer

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder, SentenceEncoderConfig

TEMPLATE = "summary : {text} . summarize :"


def templated(text: str) -> str:
    return TEMPLATE.replace("{text}", text)


def causal_encoder(**head):
    tok = word_tokenizer(chat=False)
    backbone = tiny_llama().config
    backbone.vocab_size = len(tok)
    torch.manual_seed(0)
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=backbone, pooling="last_token", **head))
    model.tokenizer = tok
    return model.to(torch.float64).eval(), tok


def last_state(model, tok, text: str) -> torch.Tensor:
    """Hand reference: the backbone on one unpadded text, the state of its last token."""
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        return model.backbone(input_ids=ids).last_hidden_state[0, -1]


def test_template_round_trips_and_wraps_texts_in_encode(tmp_path):
    model, tok = causal_encoder(prompt_template=TEMPLATE)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = SentenceEncoder.from_pretrained(tmp_path).to(torch.float64)
    assert loaded.config.prompt_template == TEMPLATE
    texts = TEXTS[:3]
    got = loaded.encode(texts, batch_size=3)  # padded batch, float32 output
    ref = torch.stack([last_state(loaded, tok, templated(t)) for t in texts]).float()
    tol = summation_tolerance(torch.float32, float(ref.abs().max()), depth=1)
    torch.testing.assert_close(got, ref, rtol=0, atol=tol)
    # Without the template the same model embeds other inputs.
    plain = SentenceEncoder.from_pretrained(tmp_path, prompt_template=None).to(torch.float64)
    assert plain.config.prompt_template is None
    assert (plain.encode(texts) - got).abs().max() > 100 * tol


def test_length_limit_cuts_the_text_not_the_template():
    model, tok = causal_encoder(prompt_template=TEMPLATE)
    long = TEXTS[3]  # 14 words
    got = model.encode([long], max_length=3)
    ref = last_state(model, tok, templated(" ".join(long.split()[:3]))).float()
    tol = summation_tolerance(torch.float32, float(ref.abs().max()), depth=1)
    torch.testing.assert_close(got[0], ref, rtol=0, atol=tol)


def test_trainer_collates_templated_texts(tmp_path):
    model, tok = causal_encoder(prompt_template=TEMPLATE)
    texts = [TEXTS[3], "cat sleeps"]
    ds = Dataset.from_dict({"text": texts})
    args = ContrastiveConfig(
        output_dir=str(tmp_path / "out"), max_seq_length=3, report_to="none", save_strategy="no"
    )
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
    batch = trainer.data_collator([ds[0], ds[1]])
    expected = [templated(" ".join(t.split()[:3])) for t in texts]
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], expected):
        assert row[mask.bool()].tolist() == tok(text)["input_ids"]


@pytest.mark.parametrize("bad", ["no slot", "{text} and {text}", "{Text}", 3])
def test_bad_template_is_refused(bad):
    with pytest.raises(ValueError, match="exactly one '\\{text\\}'"):
        SentenceEncoderConfig(backbone_config=tiny_llama().config, prompt_template=bad)
