"""Atomic checkpoints (`core.checkpoint.AtomicCheckpointMixin`): kill a run at every file of a save and at random
times, resume it, and get either the uninterrupted run exactly or a clear refusal, never a silent divergence;
incomplete checkpoints skipped or refused, the trainer's own state never replaced by defaults, leftovers cleaned,
rotation and best-model tracking intact."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive.core.checkpoint import MANIFEST_NAME, AtomicCheckpointMixin, checkpoint_problem
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.trainer import CHECKPOINT_STATE_NAME, ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.faithfulness.trainer import SpanUnlikelihoodTrainer
from hf_contrastive.generation.simctg import SimCTGTrainer
from hf_contrastive.relation.tkre import TKREPretrainer
from hf_contrastive.relation.trainer import RelationClassificationTrainer
from hf_contrastive.retrieval.rerankers.trainer import RerankerTrainer

WORKER = Path(__file__).with_name("checkpoint_worker.py")


def sentences(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def trainer(tmp_path: Path, seed: int = 0, evaluators: list | None = None, **kw) -> ContrastiveTrainer:
    torch.manual_seed(seed)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        learnable_temperature=True,
        report_to="none",
        logging_steps=100,
        disable_tqdm=True,
        learning_rate=5e-3,
        seed=0,
    )
    args.update(kw)
    ds = Dataset.from_dict({"anchor": sentences(24, 6), "positive": sentences(24, 7)})
    return ContrastiveTrainer(
        model=model, args=ContrastiveConfig(**args), train_dataset=ds, evaluators=evaluators
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Output folder of a finished 2-step run with a learnable temperature: `checkpoint-1`, `checkpoint-2`."""
    root = tmp_path_factory.mktemp("trained")
    trainer(root).train()
    return root / "out"


def copy_run(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    return out


def test_every_trainer_of_the_package_is_atomic():
    for cls in (
        ContrastiveTrainer,
        RerankerTrainer,
        SimCTGTrainer,
        SpanUnlikelihoodTrainer,
        TKREPretrainer,
        RelationClassificationTrainer,
    ):
        mro = cls.__mro__
        assert AtomicCheckpointMixin in mro, cls
        # before the transformers / TRL classes, so its _save_checkpoint wraps theirs
        trainer_index = next(i for i, c in enumerate(mro) if c.__module__.startswith(("transformers", "trl")))
        assert mro.index(AtomicCheckpointMixin) < trainer_index, cls


def test_checkpoints_are_whole_with_manifest_and_state(trained):
    assert sorted(p.name for p in trained.iterdir() if p.name.startswith(".")) == []
    for name in ("checkpoint-1", "checkpoint-2"):
        folder = trained / name
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        for required in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            assert required in manifest["files"], (name, required)
        assert {"trainer_state.json", CHECKPOINT_STATE_NAME} <= set(manifest["files"])
        assert checkpoint_problem(folder, (CHECKPOINT_STATE_NAME,)) is None
        # the staging folder the files were written in leaves no trace in what the checkpoint says
        for text_file in ("README.md", "trainer_state.json"):
            if (folder / text_file).exists():
                assert ".tmp-staging" not in (folder / text_file).read_text(), (name, text_file)


@pytest.mark.parametrize(
    "damage",
    ["emptied_with_leftover", "no_trainer_state", "truncated_trainer_state", "truncated_optimizer"],
)
def test_incomplete_checkpoint_is_skipped_with_warning_or_refused(trained, tmp_path, caplog, damage):
    """What a kill in the middle of a save used to leave: `resume_from_checkpoint=True` falls back to the previous
    whole checkpoint, naming the incomplete one; an explicit path to it is refused."""
    out = copy_run(trained, tmp_path)
    bad = out / "checkpoint-2"
    if damage == "emptied_with_leftover":  # killed while the weights were written
        shutil.rmtree(bad)
        bad.mkdir()
        (out / ".checkpoint-2.tmp-k1ll3d").mkdir()
        (out / ".checkpoint-2.tmp-k1ll3d" / "model.safetensors").write_bytes(b"\0" * 10)
    elif damage == "no_trainer_state":  # killed before trainer_state.json (a save without manifest)
        (bad / MANIFEST_NAME).unlink()
        (bad / "trainer_state.json").unlink()
    elif damage == "truncated_trainer_state":  # killed while trainer_state.json was written
        (bad / MANIFEST_NAME).unlink()
        text = (bad / "trainer_state.json").read_text()
        (bad / "trainer_state.json").write_text(text[: len(text) // 2])
    else:  # a file shorter than the manifest says
        data = (bad / "optimizer.pt").read_bytes()
        (bad / "optimizer.pt").write_bytes(data[:100])
    t = trainer(tmp_path, seed=123)
    with pytest.raises(ValueError, match=r"Refusing to resume from .*checkpoint-2"):
        t.train(resume_from_checkpoint=str(bad))
    caplog.set_level(logging.WARNING, logger="hf_contrastive")
    assert t.resolve_checkpoint(True) == str(out / "checkpoint-1")
    assert any(
        "Skipping incomplete checkpoint" in r.getMessage() and str(bad) in r.getMessage()
        for r in caplog.records
    )
    if damage == "emptied_with_leftover":
        # the whole resume: falls back to checkpoint-1, trains to the end, cleans the leftover, replaces the
        # incomplete checkpoint-2 with a whole one
        loaded = []
        original = t._load_from_checkpoint
        t._load_from_checkpoint = lambda path, model=None: (loaded.append(path), original(path, model))[1]
        t.train(resume_from_checkpoint=True)
        assert loaded == [str(out / "checkpoint-1")] and t.state.global_step == 2
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
        assert checkpoint_problem(bad) is None


def test_checkpoint_without_the_trainers_own_state_is_refused(trained, tmp_path, caplog):
    """A checkpoint whose learnable temperature was never written (killed after trainer_state.json, before the
    trainer's own state) is never resumed with the temperature's initial value."""
    out = copy_run(trained, tmp_path)
    bad = out / "checkpoint-2"
    (bad / CHECKPOINT_STATE_NAME).unlink()
    (bad / MANIFEST_NAME).unlink()
    t = trainer(tmp_path, seed=123)
    with pytest.raises(ValueError, match=CHECKPOINT_STATE_NAME):
        t.train(resume_from_checkpoint=str(bad))
    with pytest.raises(ValueError, match=CHECKPOINT_STATE_NAME):  # also when reached directly
        t._load_from_checkpoint(str(bad))
    caplog.set_level(logging.WARNING, logger="hf_contrastive")
    assert t.resolve_checkpoint(True) == str(out / "checkpoint-1")
    assert any(str(bad) in r.getMessage() and CHECKPOINT_STATE_NAME in r.getMessage() for r in caplog.records)
    # a trainer without such state (fixed temperature) resumes from it
    fixed = trainer(tmp_path, seed=123, learnable_temperature=False)
    assert fixed.resolve_checkpoint(str(bad)) == str(bad)


def test_rotation_best_model_and_leftovers(tmp_path):
    """`save_total_limit` rotation and `load_best_model_at_end` on staged checkpoints; leftovers of killed saves
    (ours and `atomic_save`'s) are removed when training starts."""
    out = tmp_path / "out"
    (out / ".checkpoint-9.tmp-staging" / "checkpoint-9").mkdir(parents=True)  # no manifest: not whole
    (out / ".checkpoint-1.tmp-a1b2c3").mkdir()
    scores = iter([0.5, 0.9, 0.2])  # the best evaluation is that of step 2, not the last one
    t = trainer(
        tmp_path,
        evaluators=[lambda encoder: {"score": next(scores)}],
        max_steps=3,
        save_total_limit=1,
        eval_strategy="steps",
        eval_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
    )
    t.train()
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.startswith(".")] == []
    best = t.state.best_model_checkpoint
    assert best is not None and os.path.dirname(best) == str(out) and os.path.isdir(best), best
    assert best == str(out / "checkpoint-2")
    kept = [n for n in names if n.startswith("checkpoint-")]
    assert kept == ["checkpoint-2"], kept  # save_total_limit=1 keeps the best one at the end
    assert checkpoint_problem(best) is None
    state = json.loads((Path(best) / "trainer_state.json").read_text())
    assert ".tmp-" not in json.dumps(state)


def format_matrix(results: list[dict]) -> str:
    lines = []
    for res in results:
        lines.append(f"== {res['scenario']} (reference run {res['reference_seconds']:.1f} s) ==")
        lines.append(f"{'kill point':<78} {'left':<26} {'resumed from':<14} outcome")
        for row in res["rows"]:
            if "delay" in row:
                point = f"random t+{row['delay']:.3f}s -> at {row['killed_at_event'] or '(not killed)'}"
            else:
                point = f"{row['when']:<6} {row['ref_event']}"
            left = ",".join(c.replace("checkpoint-", "ckpt-") for c in row["checkpoints_left"])
            left += " +hidden" if row["hidden_before"] else ""
            outcome = row["outcome"] if len(row["outcome"]) < 90 else row["outcome"][:87] + "..."
            if row.get("hidden_after"):
                outcome += f" LEFTOVER {row['hidden_after']}"
            lines.append(f"{point:<78} {left:<26} {','.join(row['resumed_from']) or '-':<14} {outcome}")
    return "\n".join(lines)


@pytest.mark.slow
def test_kill_matrix(tmp_path):
    """SIGKILL a run before and after each file event of the save of step 2 (learnable temperature; MoCo), and at
    random times up to the next save, then resume with `resume_from_checkpoint=True` in a fresh process.

    `checkpoint-1` is whole in every case, so each resume must reproduce the uninterrupted run exactly (weights,
    temperature / queue / key encoder, optimizer state and step); `checkpoint-2` must exist only whole (when
    present, it is the one resumed from); no leftover may survive the resume."""
    spec = {
        "root": str(tmp_path),
        "scenarios": {
            "learnable_temperature": {"target": 2, "when": ["before", "after"], "random": 4, "seed": 0},
            "moco": {"target": 2, "when": ["after"], "random": 3, "seed": 1},
        },
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # The worker forks: no jemalloc background thread (pyarrow's) whose lock a child could inherit held.
        "JE_ARROW_MALLOC_CONF": "background_thread:false",
        # The worker imports the package from this checkout, whatever an installed copy points at.
        "PYTHONPATH": os.pathsep.join([str(WORKER.parents[2]), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "spec.json"), str(tmp_path / "result.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "result.json").read_text())
    matrix = format_matrix(results)
    print("\n" + matrix)
    bad = []
    for res in results:
        by_file = [r for r in res["rows"] if "delay" not in r]
        assert len(by_file) >= 10, res["save_events"]
        assert any(r["killed"] for r in res["rows"] if "delay" in r)
        for row in res["rows"]:
            if "delay" not in row and not row["killed"]:
                bad.append((res["scenario"], row["name"], "kill point not reached"))
            if not row["killed"]:
                continue
            if row["outcome"] != "exact":
                bad.append((res["scenario"], row["name"], row["outcome"]))
            if row["hidden_after"]:
                bad.append((res["scenario"], row["name"], f"leftover {row['hidden_after']}"))
            # checkpoint-2 is whole whenever it is there; a whole staged one (killed before its rename) is recovered
            if "checkpoint-2" in row["checkpoints_left"]:
                expected = [["checkpoint-2"]]
            else:
                recovered = any("Recovered the whole checkpoint" in w for w in row["warnings"])
                expected = [["checkpoint-2"]] if recovered else [["checkpoint-1"]]
            if row["resumed_from"] not in expected:
                bad.append(
                    (res["scenario"], row["name"], f"resumed from {row['resumed_from']}, not {expected}")
                )
    assert bad == [], f"{bad}\n{matrix}"
