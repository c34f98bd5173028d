"""Absent data or packaged models: skipped locally, a failure under CI (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing_resource, running_in_ci

TESTS = Path(__file__).resolve().parent

PROBE = """
def test_needs_the_data(shared_data):
    assert shared_data.is_dir()
"""


def _session(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """A pytest session in its own folder: our conftest, one test that needs the benchmark data."""
    root = tmp_path / "session"
    root.mkdir()
    shutil.copy(TESTS / "conftest.py", root / "conftest.py")
    (root / "test_probe.py").write_text(PROBE, encoding="utf-8")
    empty = tmp_path / "empty-data"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HF_CONTRASTIVE_DATA"] = str(empty)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_probe.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_data_fails_under_ci(tmp_path):
    proc = _session(tmp_path, ci="true")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 error" in out and "passed" not in out and "skipped" not in out, out
    assert "CI=true but a required resource is missing" in out, out
    assert "empty-data is missing or empty" in out, out


def test_missing_data_skips_without_ci(tmp_path):
    proc = _session(tmp_path, ci=None)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 skipped" in out and "empty-data is missing or empty" in out, out


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("TRUE", True), ("false", False), ("", False)]
)
def test_helper_reads_ci_and_fails_or_skips(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert running_in_ci() is ci
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="packaged thing not installed"):
        missing_resource("packaged thing not installed", "pip install thing")
