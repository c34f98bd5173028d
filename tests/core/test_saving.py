"""Saving replaces a model folder whole: no stale file of another model, no mix after a kill, the usual
permissions, refusal to replace a folder holding something else, and a loader that refuses instead of
recursing on a folder claiming two formats."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_models import TEXTS, bert_config, sentence_transformers_folder, tiny_causal_lm, word_tokenizer
from transformers import AutoModelForCausalLM

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.core.hub.mixin import save_with_card
from hf_contrastive.core.saving import recover_folder
from hf_contrastive.core.utils import atomic_save

TESTS = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (folders as `"<dir>"`)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


# -- replacing a folder that holds another model ---------------------------------------------------------


def test_save_over_sentence_transformers_folder(tiny_encoder, bert_tok, tmp_path):
    st = sentence_transformers_folder(tmp_path / "st", bert_tok)
    SentenceEncoder.from_pretrained(st)  # a valid sentence-transformers folder
    before = snapshot(st)
    with pytest.raises(ValueError, match=r"sentence-transformers.*overwrite=True") as err:
        tiny_encoder.save_pretrained(st)
    assert "modules.json" in str(err.value) and "1_Pooling" in str(err.value)
    assert snapshot(st) == before and leftovers(st) == []

    tiny_encoder.save_pretrained(st, overwrite=True)
    tiny_encoder.save_pretrained(tmp_path / "fresh")
    assert sorted(snapshot(st)) == sorted(snapshot(tmp_path / "fresh"))
    assert not {"modules.json", "1_Pooling", "vocab.txt", "sentence_bert_config.json"} & set(os.listdir(st))
    assert leftovers(st) == []
    torch.testing.assert_close(SentenceEncoder.from_pretrained(st).encode(TEXTS), tiny_encoder.encode(TEXTS))


def _llama_folder(folder: Path) -> None:
    tok = word_tokenizer(chat=True)
    tiny_causal_lm(len(tok), seed=1).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert {"chat_template.jinja", "generation_config.json", "config.json"} <= set(os.listdir(folder))


def test_causal_lm_adapter_over_llama_folder(tmp_path):
    base_dir = tmp_path / "base"
    tiny_causal_lm(len(word_tokenizer()), seed=0).save_pretrained(base_dir)
    tok = word_tokenizer(chat=False)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora)

    llama = tmp_path / "llama"
    _llama_folder(llama)
    before = snapshot(llama)
    with pytest.raises(ValueError, match=r"'llama'.*PEFT LORA adapter"):
        save_with_card(adapter, llama, tokenizer=tok)
    assert snapshot(llama) == before

    save_with_card(adapter, llama, tokenizer=tok, overwrite=True)
    save_with_card(adapter, tmp_path / "fresh", tokenizer=tok)
    assert sorted(snapshot(llama)) == sorted(snapshot(tmp_path / "fresh"))
    assert not {"chat_template.jinja", "generation_config.json", "config.json", "model.safetensors"} & set(
        os.listdir(llama)
    )
    # The same adapter again over its own earlier save: allowed, and the folder is replaced whole.
    save_with_card(adapter, llama, tokenizer=tok)
    assert sorted(snapshot(llama)) == sorted(snapshot(tmp_path / "fresh"))


def test_causal_lm_head_over_plain_llama_folder(tmp_path):
    tok = word_tokenizer(chat=False)
    model = tiny_causal_lm(len(tok), seed=2)
    llama = tmp_path / "llama"
    _llama_folder(llama)
    # Same architecture, but a plain transformers folder (not written by hf-contrastive): refused.
    with pytest.raises(ValueError, match=r"a transformers model \(model_type 'llama'"):
        save_with_card(model, llama, tokenizer=tok)
    save_with_card(model, llama, tokenizer=tok, overwrite=True)
    assert "chat_template.jinja" not in os.listdir(llama)
    save_with_card(model, llama, tokenizer=tok)  # its own earlier save
    assert "chat_template.jinja" not in os.listdir(llama)


def test_same_head_replaces_its_own_save_and_keeps_trainer_entries(tiny_encoder, tmp_path):
    out = tmp_path / "out"
    tiny_encoder.save_pretrained(out, max_shard_size="20KB")
    assert (out / "model.safetensors.index.json").is_file()
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "optimizer.pt").write_bytes(b"state")
    (out / "training_args.bin").write_bytes(b"args")

    tiny_encoder.config.normalize = False
    try:
        tiny_encoder.save_pretrained(out)  # same head: allowed; shards of the earlier save are gone
    finally:
        tiny_encoder.config.normalize = True
    names = set(os.listdir(out))
    assert not [n for n in names if n.startswith("model-") or n.endswith(".index.json")]
    assert (out / "checkpoint-3" / "optimizer.pt").read_bytes() == b"state"
    assert (out / "training_args.bin").read_bytes() == b"args"
    assert json.loads((out / "config.json").read_text())["normalize"] is False

    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"not files of a saved model.*notes\.txt"):
        tiny_encoder.save_pretrained(out)
    assert snapshot(out) == before
    tiny_encoder.save_pretrained(out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "checkpoint-3" / "optimizer.pt").is_file()


def test_other_head_over_sentence_encoder_refused(tiny_encoder, bert_tok, tmp_path):
    out = tmp_path / "out"
    tiny_encoder.save_pretrained(out)
    torch.manual_seed(0)
    other = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(bert_tok), layers=1)))
    other.save_pretrained(out)  # same head and backbone type, other weights: a re-save
    llama_backbone = tiny_causal_lm(90).config
    different = SentenceEncoder(SentenceEncoderConfig(backbone_config=llama_backbone, pooling="last_token"))
    with pytest.raises(ValueError, match=r"backbone_config 'bert'.*backbone_config 'llama'"):
        different.save_pretrained(out)


# -- permissions ------------------------------------------------------------------------------------------


def test_saved_folders_get_umask_permissions(tiny_encoder, tmp_path):
    old = os.umask(0o022)
    try:
        for _ in range(2):  # a new folder, then a replaced one
            tiny_encoder.save_pretrained(tmp_path / "out")
            for path in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
        with atomic_save(tmp_path / "plain") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "a.txt").write_text("x")
        assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755
        # Saving through a symlink replaces the folder it points to and keeps the link.
        (tmp_path / "link").symlink_to(tmp_path / "out", target_is_directory=True)
        tiny_encoder.save_pretrained(tmp_path / "link")
        assert (tmp_path / "link").is_symlink() and stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
        assert leftovers(tmp_path / "out") == [] and leftovers(tmp_path / "link") == []
    finally:
        os.umask(old)


# -- loading ----------------------------------------------------------------------------------------------


def test_loader_refuses_folder_claiming_two_formats(tiny_encoder, tmp_path):
    mixed = tmp_path / "mixed"
    tiny_encoder.save_pretrained(mixed)
    # What the merging save used to leave after saving a head over a sentence-transformers folder.
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (mixed / "modules.json").write_text(json.dumps(modules))
    (mixed / "1_Pooling").mkdir()
    (mixed / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    with pytest.raises(ValueError, match=r"claims two formats.*modules\.json.*contrastive_sentence_encoder"):
        SentenceEncoder.from_pretrained(mixed)


def test_loader_refuses_a_head_as_backbone(tiny_encoder, tmp_path):
    st = tmp_path / "st"
    tiny_encoder.save_pretrained(st / "0_Transformer")
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    with pytest.raises(ValueError, match=r"saved hf-contrastive head .* not a backbone"):
        SentenceEncoder.from_pretrained(st)


# -- kills ------------------------------------------------------------------------------------------------

KILL_SCRIPT = r"""
import hashlib, json, os, shutil, signal, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import safetensors.torch
import transformers.modeling_utils as modeling_utils
import transformers.utils.logging as transformers_logging
from tiny_models import bert_config, bert_tokenizer

import hf_contrastive.core.saving as saving
from hf_contrastive import SentenceEncoder, SentenceEncoderConfig

# No progress bars: tqdm's lock is shared across fork, and a child killed while drawing one ("Writing model
# shards") would leave it held for every later bar of this process and its other children.
transformers_logging.disable_progress_bar()

base = Path(sys.argv[1])
target = base / "enc"
WATCH = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.link", "os.chmod", "os.symlink",
         "shutil.rmtree", "shutil.copyfile", "ctypes.call_function", "test.safetensors"}


def snapshot(folder):
    if not folder.is_dir():
        return None
    return {p.relative_to(folder).as_posix(): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def make(seed, pooling, normalize, max_length):
    tok = bert_tokenizer(base / f"vocab{seed}")
    tok.model_max_length = max_length
    torch.manual_seed(seed)
    config = SentenceEncoderConfig(backbone_config=bert_config(len(tok)), pooling=pooling, normalize=normalize)
    model = SentenceEncoder(config)
    model.tokenizer = tok
    return model.eval()


old_model = make(1, "cls", False, 32)
new_model = make(2, "mean", True, 64)


def save_old():
    old_model.save_pretrained(target, max_shard_size="20KB")


def save_new():
    new_model.save_pretrained(target)


def child(kill_at, fallback, count_file=None):
    count = 0
    real_save = modeling_utils.safe_save_file

    def counted_save(tensors, filename, *args, **kwargs):
        sys.audit("test.safetensors", filename)
        return real_save(tensors, filename, *args, **kwargs)

    modeling_utils.safe_save_file = counted_save
    if fallback:
        saving._exchange = lambda a, b: False

    def hook(event, args):
        nonlocal count
        if event not in WATCH:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if not writing:
                return
        if event not in ("ctypes.call_function",) and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if os.path.isabs(path) and not path.startswith(str(base)):
                return
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    save_new()
    if count_file:
        Path(count_file).write_text(str(count))
    os._exit(0)


def run_child(kill_at, fallback, count_file=None):
    pid = os.fork()
    if pid == 0:
        try:
            child(kill_at, fallback, count_file)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def reset(pristine):
    for p in base.iterdir():
        if p.name.startswith(".enc.") or p.name == "enc":
            shutil.rmtree(p)
    shutil.copytree(pristine, target, symlinks=True)


save_old()
OLD = snapshot(target)
pristine = base / "pristine-old"
shutil.copytree(target, pristine)
save_new()
NEW = snapshot(target)
save_new()
assert snapshot(target) == NEW, "a save is not reproducible"
print(json.dumps({"old": sorted(OLD), "new": sorted(NEW)}), flush=True)

for fallback in (False, True):
    reset(pristine)
    count_file = base / "count"
    assert not run_child(None, fallback, count_file)
    total = int(count_file.read_text())
    assert snapshot(target) == NEW
    for k in range(1, total + 1):
        reset(pristine)
        killed = run_child(k, fallback)
        state = snapshot(target)
        name = "old" if state == OLD else "new" if state == NEW else "missing" if state is None else "mixed"
        left = sorted(p.name for p in base.iterdir() if p.name.startswith(".enc."))
        recover = None
        if name == "missing":
            saving.recover_folder(target)
            state = snapshot(target)
            recover = "old" if state == OLD else "new" if state == NEW else "other"
        save_new()
        after = "new" if snapshot(target) == NEW else "other"
        after_left = sorted(p.name for p in base.iterdir() if p.name.startswith(".enc."))
        print(json.dumps({"fallback": fallback, "k": k, "total": total, "killed": killed, "state": name,
                          "leftovers": left, "recovered": recover, "after": after,
                          "after_leftovers": after_left}), flush=True)
"""


@pytest.mark.slow
def test_kill_at_every_file_operation_leaves_old_or_new(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    files, runs = lines[0], lines[1:]
    assert files["old"] != files["new"]  # shards, config, card and tokenizer all differ
    for fallback in (False, True):
        mine = [r for r in runs if r["fallback"] is fallback]
        assert len(mine) == mine[0]["total"] >= 10 and all(r["killed"] for r in mine)
        assert {r["state"] for r in mine} >= {"old", "new"}
    # Exactly the old or exactly the new model after every kill; with the two-rename fallback, a kill between
    # the renames leaves the target absent, and recovery (the next save's first step) restores the old one.
    exchange_missing = [r for r in runs if not r["fallback"] and r["state"] not in ("old", "new")]
    assert exchange_missing == []
    mixed = [
        r
        for r in runs
        if r["state"] not in ("old", "new") and not (r["state"] == "missing" and r["recovered"] == "old")
    ]
    assert mixed == []
    # At most clearly named leftovers, which the next save removes.
    assert [
        r for r in runs if not all(n.startswith((".enc.tmp-", ".enc.old-")) for n in r["leftovers"])
    ] == []
    assert [r for r in runs if r["after"] != "new" or r["after_leftovers"]] == []


def test_next_save_cleans_leftovers_of_dead_processes(tiny_encoder, tmp_path):
    out = tmp_path / "out"
    tiny_encoder.save_pretrained(out)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (tmp_path / f".out.tmp-{pid}-abc").mkdir()
    (tmp_path / f".out.tmp-{pid}-abc" / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".out.tmp-{os.getpid()}-live"
    live.mkdir()  # a save in progress in a live process is not touched
    tiny_encoder.save_pretrained(out)
    assert leftovers(out) == [live.name]


def test_recover_folder_puts_back_a_folder_renamed_aside(tiny_encoder, tmp_path):
    out = tmp_path / "out"
    tiny_encoder.save_pretrained(out)
    before = snapshot(out)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    os.rename(out, tmp_path / f".out.old-{int(dead.stdout)}-abc")
    recover_folder(out)
    assert snapshot(out) == before and leftovers(out) == []
