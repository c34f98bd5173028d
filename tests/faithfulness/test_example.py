from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from faithfulness.helpers import tiny_causal_lm, word_tokenizer
from faithfulness.test_recipes import ROWS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faithful_summaries.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("faithful_summaries_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_runs_every_method_on_a_tiny_model(tmp_path, capsys):
    tok = word_tokenizer()
    model_dir = tmp_path / "model"
    tiny_causal_lm(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "summaries.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    example = _load_example()
    out = tmp_path / "out"
    summary = example.main(
        [
            "--model", str(model_dir), "--data", str(data), "--output", str(out),
            "--n-train", "4", "--n-validation", "2", "--n-test", "2", "--n-generate", "2",
            "--max-length", "48", "--max-document-tokens", "16", "--max-new-tokens", "3",
            "--batch-size", "2", "--epochs", "1", "--lambdas", "0,1",
        ]
    )  # fmt: skip
    results = summary["results"]
    assert list(results) == ["untouched", "sft", "unlikelihood", "gradient_ascent", "task_negation"]
    for metrics in results.values():
        assert metrics["n_generated"] == 2 and 0 <= metrics["hallucination_rate"] <= 1
    assert results["task_negation"]["lambda"] in (0.0, 1.0)
    table = capsys.readouterr().out
    assert "| task_negation (lam=" in table and "ppl vs SFT" in table
    assert json.loads((out / "results.json").read_text())["results"].keys() == results.keys()
    # a run split by --methods gives the same table through --table-from
    merged = example.main(["--table-from", str(out)])
    assert merged["results"].keys() == results.keys()
