"""Model cards and Hub pushes (the upload call is intercepted: the Hub is unreachable in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from tiny_models import TEXTS

from hf_contrastive import EvalEntry, SentenceEncoder
from hf_contrastive.core.utils import atomic_save


@pytest.fixture
def model(tiny_encoder):
    return tiny_encoder


@pytest.fixture
def fake_hub(hub):
    return hub


def test_save_writes_card_with_metadata(model, tmp_path):
    model.card_info.base_model = "sentence-transformers/all-MiniLM-L6-v2"
    model.card_info.datasets = ["sentence-transformers/stsb"]
    model.card_info.license = "apache-2.0"
    model.card_info.add_result(
        EvalEntry(
            "sentence-similarity",
            "STS Benchmark",
            "sentence-transformers/stsb",
            "spearman_cosine",
            0.8203,
            dataset_split="test",
            metric_name="Spearman (cosine)",
        )
    )
    model.save_pretrained(tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "hf-contrastive"
    assert data["pipeline_tag"] == "sentence-similarity"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["datasets"] == ["sentence-transformers/stsb"]
    assert data["license"] == "apache-2.0"
    assert {"hf-contrastive", "sentence-embeddings", "bert"} <= set(data["tags"])
    index = data["model-index"][0]["results"][0]
    assert index["metrics"][0]["type"] == "spearman_cosine" and index["metrics"][0]["value"] == pytest.approx(
        0.8203
    )
    assert index["dataset"]["split"] == "test"
    assert "| pooling | `mean` |" in card.text
    # Loading the folder again recovers the metadata (a save/load/save cycle keeps the card).
    again = SentenceEncoder.from_pretrained(tmp_path / "out")
    assert again.card_info.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert again.card_info.eval_results[0].metric_value == pytest.approx(0.8203)


def test_push_uploads_exact_files_in_one_commit(model, fake_hub):
    model.push_to_hub("someone/tiny-encoder", private=True, commit_message="first")
    assert fake_hub.repos == [("someone/tiny-encoder", {"private": True, "token": None, "exist_ok": True})]
    assert len(fake_hub.commits) == 1
    commit = fake_hub.commits[0]
    assert commit["commit_message"] == "first"
    assert sorted(commit["files"]) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    card_text = commit["files"]["README.md"].decode()
    meta = yaml.safe_load(card_text.split("---")[1])
    assert meta["library_name"] == "hf-contrastive"
    assert 'SentenceEncoder.from_pretrained("someone/tiny-encoder")' in card_text


def test_save_pretrained_push_to_hub_flag(model, fake_hub, tmp_path):
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="someone/x")
    assert (tmp_path / "local" / "README.md").exists()
    assert set(fake_hub.commits[0]["files"]) >= {"README.md", "config.json", "model.safetensors"}


def test_card_usage_snippet_really_runs(model, fake_hub, tmp_path):
    model.push_to_hub("someone/tiny-encoder")
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, content in fake_hub.commits[0]["files"].items():
        (pushed / name).write_bytes(content)
    card = (pushed / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(snippets) == 2
    outputs = []
    for code in snippets:
        code = code.replace("someone/tiny-encoder", str(pushed))
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout)
    assert "torch.Size([2, 32])" in outputs[0]


def test_push_bad_repo_id(model):
    with pytest.raises(ValueError, match="repo_id"):
        model.push_to_hub("")


def test_atomic_save_failure_keeps_previous_content(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "out" / "checkpoint-10").mkdir()  # a Trainer's checkpoint must survive a save

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(model.tokenizer), "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "out")
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before
    assert (tmp_path / "out" / "checkpoint-10").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_atomic_save_new_folder_appears_whole(tmp_path):
    with pytest.raises(RuntimeError), atomic_save(tmp_path / "new") as tmp:
        (tmp / "a.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert not (tmp_path / "new").exists()
    with atomic_save(tmp_path / "new") as tmp:
        (tmp / "a.txt").write_text("x")
    assert (tmp_path / "new" / "a.txt").read_text() == "x"


def test_save_into_existing_file_refused(model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="folder"):
        model.save_pretrained(tmp_path / "file")


def test_encode_matches_after_push_round_trip(model, fake_hub, tmp_path):
    model.push_to_hub("someone/tiny")
    folder = tmp_path / "dl"
    folder.mkdir()
    for name, content in fake_hub.commits[0]["files"].items():
        (folder / name).write_bytes(content)
    torch.testing.assert_close(SentenceEncoder.from_pretrained(folder).encode(TEXTS), model.encode(TEXTS))
