"""The console script: help, eval and card verbs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tiny_models import bert_config, bert_tokenizer, sentence_transformers_folder

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.cli import main


def test_help_lists_verbs():
    proc = subprocess.run(
        [sys.executable, "-m", "hf_contrastive", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for verb in ("eval", "card"):
        assert verb in proc.stdout


def test_eval_verb_on_sts(tmp_path, shared_data, capsys):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "v")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    model.save_pretrained(tmp_path / "m")
    assert main(["eval", str(tmp_path / "m"), "--split", "dev", "--similarities", "cosine", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"spearman_cosine"' in out and '"split": "dev"' in out


def test_card_verb_rewrites_card(tmp_path):
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "v")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    model.save_pretrained(tmp_path / "m")
    assert main(["card", str(tmp_path / "m"), "--base-model", "org/base", "--license", "mit"]) == 0
    text = (tmp_path / "m" / "README.md").read_text()
    assert "base_model: org/base" in text and "license: mit" in text


def test_unknown_verb_fails():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_card_verb_on_a_sentence_transformers_folder_needs_overwrite(tmp_path, capsys):
    # A folder in another format is not rewritten as ours unless asked: one-line error, then --overwrite.
    tok = bert_tokenizer(tmp_path / "v")
    st = sentence_transformers_folder(tmp_path / "st", tok)
    before = sorted(p.name for p in st.iterdir())
    assert main(["card", str(st), "--license", "mit"]) != 0
    err = capsys.readouterr().err
    assert "overwrite" in err and "Traceback" not in err
    assert sorted(p.name for p in st.iterdir()) == before  # untouched
    assert main(["card", str(st), "--license", "mit", "--overwrite"]) == 0
    assert not (st / "modules.json").exists() and "license: mit" in (st / "README.md").read_text()
