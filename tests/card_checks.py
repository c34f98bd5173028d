"""Checks every saved head and trained artefact must pass: a parseable card, snippets that run against the
saved folder, atomic saves, and pushes that upload only the model's files (the Hub is intercepted)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, ModelCard

MODEL_FILE_NAMES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "chat_template.jinja",
}


class FakeHub:
    """Records what a push would create and upload, reading each file at commit time."""

    def __init__(self) -> None:
        self.repos: list[tuple[str, dict]] = []
        self.commits: list[dict[str, Any]] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))

        class Url:
            pass

        url = Url()
        url.repo_id = repo_id
        return url

    def create_commit(self, api, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            with open(op.path_or_fileobj, "rb") as f:
                files[op.path_in_repo] = f.read()
        self.commits.append({"repo_id": repo_id, "files": files, **kwargs})
        return "https://huggingface.co/" + repo_id

    def download(self, folder: Path, commit: int = -1) -> Path:
        """Write the files of a commit to ``folder`` (what a user would get from the Hub)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.commits[commit]["files"].items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        return folder


def install_fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda api, repo_id, operations, **kw: hub.create_commit(api, repo_id, operations, **kw),
    )
    return hub


def python_snippets(card_text: str) -> list[str]:
    return [textwrap.dedent(code) for code in re.findall(r"```python\n(.*?)```", card_text, flags=re.S)]


def run_snippets(folder: Path, replace: str | None = None) -> list[dict[str, Any]]:
    """Execute every Python snippet of ``folder/README.md`` (``replace`` -> the folder path first).

    Each snippet runs in its own namespace, which is returned so a test can compare its outputs.
    """
    card = (folder / "README.md").read_text(encoding="utf-8")
    snippets = python_snippets(card)
    assert snippets, "the card has no usage snippet"
    namespaces = []
    for code in snippets:
        if replace is not None:
            code = code.replace(replace, str(folder))
        assert str(folder) in code, "the snippet does not load the saved folder"
        namespace: dict[str, Any] = {"__name__": "__card_snippet__"}
        exec(compile(code, f"{folder}/README.md", "exec"), namespace)
        namespaces.append(namespace)
    return namespaces


def check_card(folder: Path, base_model: str | None, pipeline_tag: str | None = None) -> ModelCard:
    """README.md exists, its YAML parses, and it names the library (and the base model when given)."""
    path = folder / "README.md"
    assert path.is_file()
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "hf-contrastive"
    assert "hf-contrastive" in data["tags"]
    if base_model is not None:
        assert data["base_model"] == base_model
    if pipeline_tag is not None:
        assert data["pipeline_tag"] == pipeline_tag
    assert "## Usage" in card.text and "## Framework versions" in card.text
    return card


def check_failed_save_keeps_previous(
    save: Callable[[Path], Any], folder: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    """A save that fails while writing weights leaves no new folder, and an earlier save intact.

    ``writer`` is the dotted path of the function that writes the weight file.
    """

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    new = folder.parent / (folder.name + "-new")
    with monkeypatch.context() as m:
        m.setattr(writer, boom)
        with pytest.raises(OSError, match="disk full"):
            save(new)
    assert not new.exists()

    save(folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with monkeypatch.context() as m:
        m.setattr(writer, boom)
        with pytest.raises(OSError, match="disk full"):
            save(folder)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.tmp")]


def check_push_uploads_model_files_only(
    push: Callable[..., Any], hub: FakeHub, tmp_path: Path, expected: set[str]
) -> None:
    """One commit with exactly ``expected``; an extra file goes up only when asked for."""
    push()
    assert len(hub.commits) == 1
    files = set(hub.commits[0]["files"])
    assert files == expected, files ^ expected
    assert "README.md" in files
    assert not {"training_args.bin", "trainer_state.json"} & files
    extra = tmp_path / "eval_results.json"
    extra.write_text('{"score": 1.0}')
    push(extra_files=[extra])
    assert set(hub.commits[1]["files"]) == expected | {"eval_results.json"}
    assert hub.commits[1]["files"]["eval_results.json"] == b'{"score": 1.0}'


def local_causal_lm(folder: Path, chat: bool = False):
    """A tiny random causal LM and its word tokenizer, saved to ``folder`` and loaded back from it, so that
    an adapter trained on it records a base model path the card's snippet can load."""
    from tiny_models import tiny_causal_lm, word_tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = word_tokenizer(chat=chat)
    tiny_causal_lm(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def check_causal_lm_snippet(
    folder: Path,
    model: Any,
    generate_kwargs: dict[str, Any],
    adapter_name: str | None = None,
) -> dict[str, Any]:
    """The card's snippet loads the folder and gives the in-memory model's weights, logits and generated ids.

    ``adapter_name`` is the in-memory name of the adapter the folder holds. A trainer may have replaced the
    in-memory model's ``forward`` on the instance (TRL's SFT trainer installs a fused LM head whose plain
    forward gives logits about 1e-3 away from the model's own): the reference is computed with the class's
    forward, which is what the saved folder runs, so the comparison stays exact.
    """
    import torch

    (ns,) = run_snippets(folder)
    model.eval()
    # A saved named adapter loads back as "default".
    rename = (lambda n: n.replace(".default.", f".{adapter_name}.")) if adapter_name else (lambda n: n)
    loaded = {rename(n): p for n, p in ns["model"].named_parameters()}
    ours = dict(model.named_parameters())
    assert loaded.keys() <= ours.keys() and len(loaded) > 0
    for name, param in loaded.items():
        assert torch.equal(param, ours[name]), name
    patched = {m: m.__dict__.pop("forward") for m in model.modules() if "forward" in m.__dict__}
    try:
        with torch.no_grad():
            expected = model(**ns["inputs"]).logits
        torch.testing.assert_close(ns["logits"], expected)
        assert torch.equal(ns["output_ids"], model.generate(**ns["inputs"], **generate_kwargs))
    finally:
        for module, forward in patched.items():
            module.forward = forward
    return ns
