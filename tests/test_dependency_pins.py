"""The declared ranges of the optional dependencies cover what the tests exercise, and nothing older."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _spec(extra: str, name: str):
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    reqs = [Requirement(r) for r in extras[extra]]
    found = [r.specifier for r in reqs if r.name == name]
    assert len(found) == 1, f"extra {extra!r} should name {name} once, got {found}"
    return found[0]


def test_sentence_transformers_range_is_the_tested_major():
    anchors, dev = _spec("anchors", "sentence-transformers"), _spec("dev", "sentence-transformers")
    assert anchors == dev
    # the parity tests import 6.x module paths (sentence_transformers.sentence_transformer.losses): a 5.x
    # install, or an untested 7.x, must be refused by pip rather than break the tests
    for refused in ("5.0.0", "5.9.9", "6.1.9", "7.0.0"):
        assert not dev.contains(refused), f"{dev} admits {refused}"
    for accepted in ("6.2.0", "6.9.1"):
        assert dev.contains(accepted), f"{dev} refuses {accepted}"


def test_installed_sentence_transformers_is_in_range():
    try:
        installed = importlib.metadata.version("sentence-transformers")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("sentence-transformers not installed (pip install -e '.[anchors]')")
    assert _spec("dev", "sentence-transformers").contains(installed)
    importlib.import_module("sentence_transformers.sentence_transformer.losses")  # the 6.x path the tests use
