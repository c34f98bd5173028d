"""`benchmarks/gpu_suite.py`: the section runner and its exit status, the decoding ratio targets, the training
and GradCache ratios, the equality-command hook, the random-weight model copies, and the whole suite in its
CPU smoke mode (slow: every training configuration starts a fresh Python process)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import save_tiny_bert, tiny_causal_lm
from transformers import BertModel, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"
PY = shlex.quote(sys.executable)


@pytest.fixture(scope="module")
def suite():
    """The benchmark script, imported as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_ratio_targets_on_hand_made_timings(suite):
    rows = [
        # medians, not means: greedy 2.0 and cs 2.3 -> exactly the target (1.15 = 2.3 / 2.0 in binary too)
        {
            "prompt": 64,
            "batch": 1,
            "times": {"greedy": [2.0, 9.0, 2.0], "cs": [2.3, 0.1, 2.3], "cs-expand": [4.0]},
        },
        {
            "prompt": 1024,
            "batch": 1,
            "times": {"greedy": [1.0, 1.0, 1.0], "cs": [1.2, 1.3, 1.2], "cs-expand": [1.1]},
        },
        # batch 8: reported, no target
        {"prompt": 64, "batch": 8, "times": {"greedy": [1.0], "cs": [3.0], "cs-expand": [3.0]}},
    ]
    summary = suite.generation_summary(rows, target=1.15, target_batch=1, enforce=True)
    figures = summary["figures"]
    assert figures["greedy s p64 b1"] == 2.0
    assert figures["cs/greedy p64 b1"] == 2.3 / 2.0
    assert figures["cs-expand/greedy p64 b1"] == 4.0 / 2.0
    assert figures["cs/greedy p1024 b1"] == 1.2 / 1.0
    assert figures["cs/greedy p64 b8"] == 3.0
    # The target applies to the default layout at batch 1 only; the boundary passes.
    assert {c["name"]: c["status"] for c in summary["checks"]} == {
        "cs/greedy p64 b1": "pass",
        "cs/greedy p1024 b1": "fail",
    }
    assert suite.section_status(summary) == "failed"

    relaxed = suite.generation_summary(rows, target=1.15, target_batch=1, enforce=False)
    assert [c["status"] for c in relaxed["checks"]] == ["pass", "miss (not enforced)"]
    assert suite.section_status(relaxed) == "ok"


def test_failing_section_is_recorded_and_fails_the_run(suite, tmp_path, capsys):
    ran = []

    def good():
        ran.append("good")
        return {"figures": {"ratio": 1.05}, "checks": [{"name": "ratio", "status": "pass", "value": 1.05}]}

    def broken():
        raise RuntimeError("device fell over")

    def exits():  # the benchmark scripts' loaders raise SystemExit when a model is missing
        raise SystemExit("model not installed")

    def after():
        ran.append("after")
        return {"figures": {"peak MiB": 12.0}}

    out = tmp_path / "report.json"
    sections = {"good": good, "broken": broken, "exits": exits, "after": after}
    assert suite.run_suite(sections, out, {"mode": "test"}) == 1
    assert ran == ["good", "after"]  # the sections after a failure still ran
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "test" and report["exit_status"] == 1
    status = {name: sec["status"] for name, sec in report["sections"].items()}
    assert status == {"good": "ok", "broken": "failed", "exits": "failed", "after": "ok"}
    assert report["sections"]["broken"]["error"] == "RuntimeError: device fell over"
    assert "device fell over" in report["sections"]["broken"]["traceback"]
    assert report["sections"]["exits"]["error"] == "SystemExit: model not installed"
    assert report["sections"]["good"]["figures"] == {"ratio": 1.05}
    table = capsys.readouterr().out
    assert "RuntimeError: device fell over" in table and "peak MiB" in table


def test_exit_status_follows_checks(suite, tmp_path):
    def skipped():
        return {"checks": [{"name": "two GPUs", "status": "skipped: needs 2 GPUs"}]}

    def missed():
        return {"figures": {"r": 1.3}, "checks": [{"name": "r", "status": "fail", "value": 1.3}]}

    out = tmp_path / "r.json"
    assert suite.run_suite({"skipped": skipped}, out) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["sections"]["skipped"]["status"] == "skipped"
    assert suite.run_suite({"skipped": skipped, "missed": missed}, out) == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["sections"]["missed"]["status"] == "failed"
    assert report["sections"]["missed"]["error"] == "r: target missed"


def _fake_runner(failing: set[str]):
    """Stands in for the training subprocess: ours twice as fast with half the memory of st."""

    def run(spec, timeout):
        label = f"{spec['impl']} b{spec['batch_size']}"
        if label in failing:
            raise RuntimeError("out of memory: CUDA out of memory")
        ours = spec["impl"] == "ours"
        return {
            "examples_per_s": (10.0 if ours else 5.0) * spec["batch_size"],
            "peak_mib": (100.0 if ours else 200.0) + spec["batch_size"],
            "peak_source": "test",
        }

    return run


def test_training_and_gradcache_ratios_and_a_failed_run(suite, tmp_path):
    models = suite.ModelPaths(smollm2=None, minilm=tmp_path, random_weights=False, workdir=tmp_path)
    # training batch 8 / 16, GradCache batch 8 / 64
    sizes = dataclasses.replace(suite.SMOKE_SIZES, train_batches=(8, 16))
    training = suite.training_section(sizes, models, runner=_fake_runner({"st b16"}))
    f = training["figures"]
    assert f["ours/st b8 examples/s"] == (10.0 * 8) / (5.0 * 8)
    assert f["ours/st b8 peak memory"] == (100.0 + 8) / (200.0 + 8)
    assert "ours/st b16 examples/s" not in f and f["ours b16 examples/s"] == 160.0
    failed = [c for c in training["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["st b16 ran"] and "out of memory" in failed[0]["error"]
    assert suite.section_status(training) == "failed"

    gradcache = suite.gradcache_section(sizes, models, runner=_fake_runner(set()))
    g = gradcache["figures"]
    assert g["ours peak b64/b8"] == (100.0 + 64) / (100.0 + 8)
    assert g["ours/st b64 peak memory"] == (100.0 + 64) / (200.0 + 64)
    assert suite.section_status(gradcache) == "ok"


def test_equality_commands_pass_fail_and_time_out(suite, tmp_path):
    result = suite.equality_section(
        [f"{PY} -c 'print(123)'", f"{PY} -c 'import sys; sys.exit(3)'"],
        timeout=120,
        default_check=True,
        out_json=tmp_path / "worker.json",
        device_count=0,
    )
    checks = result["checks"]
    assert [c["status"] for c in checks] == ["skipped: needs 2 GPUs", "pass", "fail"]
    assert "123" in checks[1]["output_tail"]
    assert checks[2]["returncode"] == 3 and checks[2]["error"] == "exit 3"
    assert suite.section_status(result) == "failed"

    slow = suite.run_command_check("sleeper", f"{PY} -c 'import time; time.sleep(600)'", timeout=2)
    assert slow["status"] == "fail" and slow["error"].startswith("timed out")


def test_default_fsdp_check_skips(suite, tmp_path):
    out = tmp_path / "out.json"
    assert suite.fsdp_check(60, out, device_count=1)["status"] == "skipped: needs 2 GPUs"
    absent = suite.fsdp_check(60, out, device_count=2, tests=[tmp_path / "absent.py"])
    assert absent["status"] == "skipped: tests absent"


def test_default_fsdp_check_runs_the_tests_on_cuda(suite, tmp_path):
    """A stand-in test file: the command the suite builds runs pytest with the CUDA switch set."""
    out = tmp_path / "out.json"
    test = tmp_path / "test_standin.py"
    test.write_text(
        "import os\n\ndef test_device():\n    assert os.environ['HF_CONTRASTIVE_TEST_DEVICE'] == 'cuda'\n",
        encoding="utf-8",
    )
    check = suite.fsdp_check(120, out, device_count=2, tests=[test])
    assert check["status"] == "pass", check["output_tail"]
    assert 'tests="1"' in out.with_suffix(".xml").read_text()
    failing = tmp_path / "test_failing.py"
    failing.write_text("def test_no():\n    assert False\n", encoding="utf-8")
    assert suite.fsdp_check(120, out, device_count=2, tests=[failing])["status"] == "fail"


def test_random_weight_copy_keeps_the_architecture(suite, tmp_path):
    src = tmp_path / "src"
    model, _ = save_tiny_bert(src, seed=0)
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}', encoding="utf-8")
    (src / "onnx").mkdir()
    (src / "onnx" / "model.onnx").write_bytes(b"not a model")
    copy = suite.random_weight_copy(src, tmp_path / "copy", causal_lm=False, seed=1)

    fresh = BertModel.from_pretrained(copy)
    for attr in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
    ):
        assert getattr(fresh.config, attr) == getattr(model.config, attr)
    old, new = model.state_dict(), fresh.state_dict()
    assert old.keys() == new.keys()
    assert all(old[k].shape == new[k].shape and old[k].dtype == new[k].dtype for k in old)
    key = "embeddings.word_embeddings.weight"
    assert not torch.equal(old[key], new[key])  # fresh weights
    assert (copy / "1_Pooling" / "config.json").read_text(
        encoding="utf-8"
    ) == '{"pooling_mode_mean_tokens": true}'
    assert (copy / "tokenizer_config.json").is_file()
    assert not (copy / "onnx").exists()

    lm_src = tmp_path / "lm"
    tiny_causal_lm(vocab_size=50, seed=0).save_pretrained(lm_src)
    lm_copy = suite.random_weight_copy(lm_src, tmp_path / "lm_copy", causal_lm=True, seed=1)
    lm = LlamaForCausalLM.from_pretrained(lm_copy)
    assert lm.state_dict().keys() == LlamaForCausalLM.from_pretrained(lm_src).state_dict().keys()

    (src / "2_Dense").mkdir()
    (src / "2_Dense" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="below its top level"):
        suite.random_weight_copy(src, tmp_path / "copy2", causal_lm=False)


@pytest.mark.slow
def test_failed_worker_process_is_reported(suite, tmp_path):
    """A training subprocess that fails names its exception; the end of its output is kept."""
    spec = {
        "task": "train",
        "impl": "ours",
        "model": str(tmp_path / "no-such-model"),
        "device": "cpu",
        "bf16": False,
        "threads": 1,
        "batch_size": 8,
        "warmup": 1,
        "steps": 1,
        "max_length": 32,
        "mini_batch": None,
    }
    with pytest.raises(suite.WorkerError, match=r"^exit 1: .*no-such-model") as info:
        suite.run_worker(spec, timeout=600)
    assert "Traceback" in info.value.tail


@pytest.mark.slow
@pytest.mark.integration
def test_cpu_smoke_run(tmp_path, minilm_path, shared_data):
    out = tmp_path / "tmp.json"
    # One extra equality command, so that the equality section runs a command here (the default FSDP check
    # needs two GPUs and is recorded as skipped).
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--cpu-smoke",
        "--output",
        str(out),
        "--equality-cmd",
        f"{PY} -c 'pass'",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "cpu-smoke" and report["exit_status"] == 0
    sections = report["sections"]
    assert list(sections) == ["generation", "training", "gradcache", "equality", "methods"]
    for name, sec in sections.items():
        assert sec["status"] == ("skipped" if name == "methods" else "ok"), (name, sec["error"])
    for name, sec in sections.items():
        for key, value in sec["figures"].items():
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, key, value)
    assert {"cs/greedy p16 b1", "cs-expand/greedy p64 b2"} <= set(sections["generation"]["figures"])
    assert {"ours/st b8 examples/s", "ours/st b8 peak memory"} <= set(sections["training"]["figures"])
    assert {"ours peak b64/b8", "ours/st b64 peak memory"} <= set(sections["gradcache"]["figures"])
    equality = [c["status"] for c in sections["equality"]["checks"]]
    assert equality[1:] == ["pass"]
    if torch.cuda.device_count() < 2:
        assert equality[0] == "skipped: needs 2 GPUs"
    assert report["models"]["minilm"]["weights"] == "trained"
    assert "section" in proc.stdout and "written:" in proc.stdout


def test_methods_section_runs_each_experiment_and_collects_its_numbers(suite, tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    # One experiment writes its table; one exits 0 but writes nothing; one fails; one script is absent.
    writer = (
        "import json, pathlib, sys\n"
        "assert sys.argv[1] == '--gpu' and sys.argv[2] == '--out'\n"
        "out = pathlib.Path(sys.argv[3]); out.mkdir(parents=True)\n"
        "json.dump({'after': {'top1': 0.5, 'seeds': [1, 2]}, 'note': 'toy', 'nan': float('nan'), 'ok': True},"
        " open(out / 'table.json', 'w'))\n"
    )
    (bench / "good_experiment.py").write_text(writer)
    (bench / "silent_experiment.py").write_text("pass\n")
    (bench / "broken_experiment.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    names = ("good", "silent", "broken", "absent")
    res = suite.methods_section(suite.GPU_SIZES, 60, tmp_path / "out", names=names)
    assert res["figures"] == {
        "good/table/after/top1": 0.5,
        "good/table/after/seeds/0": 1.0,
        "good/table/after/seeds/1": 2.0,
    }
    status = {c["name"]: c["status"] for c in res["checks"]}
    assert status == {"good": "pass", "silent": "fail", "broken": "fail", "absent": "skipped: script absent"}
    assert suite.section_status(res) == "failed"
    smoke = suite.methods_section(suite.SMOKE_SIZES, 60, tmp_path / "out2", names=names)
    assert suite.section_status(smoke) == "skipped" and not (tmp_path / "out2").exists()
