"""What ``import hf_contrastive`` patches, the INFO line that says so, and ``HF_CONTRASTIVE_NO_REGISTER=1``.

Each case runs in a fresh interpreter: the registration happens at import time, once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_contrastive.generation import registration

TINY_GPT2 = Path(__file__).resolve().parent / "data" / "models" / "gpt2"
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, logging, sys
import torch

records = []

class Keep(logging.Handler):
    def emit(self, record):
        records.append({"name": record.name, "level": record.levelname, "message": record.getMessage()})

logging.getLogger("hf_contrastive").addHandler(Keep())
logging.getLogger("hf_contrastive").setLevel(logging.INFO)

from transformers import AutoModelForCausalLM, GenerationMixin
from transformers.generation import utils as gen_utils
from transformers.generation.configuration_utils import GenerationMode
from transformers.pipelines.base import Pipeline


def state():
    return {
        "mapping": gen_utils.GENERATION_MODES_MAPPING[GenerationMode.CONTRASTIVE_SEARCH],
        "method": "_contrastive_search" in GenerationMixin.__dict__,
        "loader": id(GenerationMixin.__dict__["load_custom_generate"]),
        "pipeline": id(Pipeline.__dict__["_prepare_generate_kwargs"]),
    }


model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
prompt = torch.tensor([[17, 45, 99, 3, 150, 77, 12]])
kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=8, pad_token_id=0)


def plain_generate():
    try:
        return {"tokens": model.generate(prompt, penalty_alpha=0.6, top_k=4, **kwargs).tolist()}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


out = {"before": state(), "plain": plain_generate()}
import hf_contrastive

out["after"] = state()
out["enabled"] = hf_contrastive.contrastive_search_enabled()
out["generate"] = plain_generate()
out["local"] = model.generate(
    prompt, custom_generate=hf_contrastive.contrastive_search, penalty_alpha=0.6, top_k=4, **kwargs
).tolist()
out["greedy"] = model.generate(prompt, do_sample=False, **kwargs).tolist()
out["records_at_import"] = list(records)
hf_contrastive.disable_contrastive_search()
out["after_disable"] = state()
hf_contrastive.enable_contrastive_search()
out["records_at_end"] = list(records)
print("RESULT " + json.dumps(out))
"""


def _run(tmp_path: Path, no_register: bool) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "HF_CONTRASTIVE_NO_REGISTER"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if no_register:
        env["HF_CONTRASTIVE_NO_REGISTER"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(TINY_GPT2)], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _ours(records: list[dict]) -> list[dict]:
    return [r for r in records if r["name"] == "hf_contrastive.generation.registration"]


def test_no_register_leaves_transformers_untouched(tmp_path):
    r = _run(tmp_path, no_register=True)
    assert r["after"] == r["before"]  # mapping, GenerationMixin methods and the pipeline hook untouched
    assert r["before"]["mapping"] == registration.HUB_REPO_ID and not r["before"]["method"]
    assert not r["enabled"]
    # generate(penalty_alpha=...) does what plain transformers does: it asks for the remote code
    assert "error" in r["plain"] and "trust_remote_code" in r["plain"]["error"]
    assert r["generate"] == r["plain"]
    assert _ours(r["records_at_import"]) == []


def test_import_registers_local_contrastive_search_and_logs_it_once(tmp_path):
    r = _run(tmp_path, no_register=False)
    before, after = r["before"], r["after"]
    assert r["enabled"]
    assert after["mapping"] == "_contrastive_search" and after["method"]
    assert after["loader"] != before["loader"] and after["pipeline"] != before["pipeline"]
    # plain generate(penalty_alpha=0.6, top_k=4) runs our contrastive search (and is not greedy decoding)
    assert r["generate"] == {"tokens": r["local"]}
    assert r["local"] != r["greedy"]
    # one INFO line at import naming every patched object; a later disable/enable logs nothing more
    logged = _ours(r["records_at_import"])
    assert len(logged) == 1 and logged[0]["level"] == "INFO", logged
    for patched in registration.PATCHED:
        assert patched in logged[0]["message"]
    assert "HF_CONTRASTIVE_NO_REGISTER=1" in logged[0]["message"]
    assert _ours(r["records_at_end"]) == logged
    # disable puts every original object back
    assert r["after_disable"] == before


def test_enable_in_a_process_that_already_announced_logs_nothing(caplog):
    assert registration.is_enabled()
    try:
        registration.disable()
        with caplog.at_level("INFO", logger="hf_contrastive.generation.registration"):
            registration.enable()
    finally:
        registration.enable()
    assert registration.is_enabled()
    assert [r for r in caplog.records if r.name == "hf_contrastive.generation.registration"] == []


@pytest.mark.parametrize("name", ["GENERATION_MODES_MAPPING", "_contrastive_search", "load_custom_generate"])
def test_docstring_names_each_patched_object(name):
    assert name in registration.__doc__
    assert "_prepare_generate_kwargs" in registration.__doc__ and "disable" in registration.__doc__
