"""Worker of the kill test of `test_checkpoint.py`: ``python THIS SPEC.json RESULT.json``.

Imports the library once and forks every run from this process (the import costs seconds, a tiny run a
fraction of one). Per scenario (a learnable temperature; MoCo), 3 steps with a checkpoint at each:

1. a reference run, uninterrupted, recording every file event under its output folder (a file opened for
   writing, `torch.save`, safetensors `save_file`, `mkdir`, `rename` / `replace`, `rmtree`) and its time;
2. the same run again, which at the start of the save of step `target` forks one kill run per kill point:
   the same process from that moment on, with its own copy of the output folder, that SIGKILLs itself
   just before or just after the k-th file event of the save, or after a random delay (up to the start
   of the next save) -- what a fresh run killed there would leave on disk;
3. per kill run, a fresh trainer (other random init) resuming with `resume_from_checkpoint=True`, which
   reports `exact` (weights, loss state, key encoder, optimizer state and step all equal to the reference
   run's), `DIVERGED`, `refused: <message>` (a `ValueError`) or `error: <exception>`.

The result lists, per kill point, the event killed at, the checkpoint folders the kill left, the hidden
folders before and after the resume, the checkpoint resumed from, the outcome and the warnings.
"""

from __future__ import annotations

import builtins
import gc
import json
import logging
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # forked children must not inherit a busy thread pool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import safetensors.torch  # noqa: E402
import tqdm  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_models import WORDS, bert_config, bert_tokenizer  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from hf_contrastive.embeddings.configuration import SentenceEncoderConfig  # noqa: E402
from hf_contrastive.embeddings.modeling import SentenceEncoder  # noqa: E402
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer  # noqa: E402

# No progress bars in this process or its children. tqdm guards every bar with a multiprocessing lock shared
# across fork: a child killed while drawing one (the kill matrix kills children mid-save, during "Writing model
# shards") leaves it held for good, and the next child to draw a bar waits on it forever. No monitor thread
# either, so that no thread holds a lock at the moment of a fork.
transformers_logging.disable_progress_bar()
tqdm.tqdm.monitor_interval = 0

# Everything imported so far lives as long as the process: keep it out of the collections that each Trainer run
# ends with (seconds per run otherwise), and shared with the forked children.
gc.freeze()

_RANDOM_NAME = re.compile(r"\.(tmp|old)-(?!staging)[^/]+")


def sentences(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def build_trainer(scenario: str, run_dir: Path, seed: int) -> ContrastiveTrainer:
    torch.manual_seed(seed)
    tok = bert_tokenizer(run_dir / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    ds = Dataset.from_dict({"anchor": sentences(32, 6), "positive": sentences(32, 7)})
    kw = dict(
        output_dir=str(run_dir / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        logging_steps=100,
        disable_tqdm=True,
        learning_rate=5e-3,
        seed=0,
    )
    if scenario == "moco":
        kw.update(loss="moco", queue_size=8, momentum=0.9)
    else:
        kw.update(learnable_temperature=True)
    return ContrastiveTrainer(model=model, args=ContrastiveConfig(**kw), train_dataset=ds)


def final_state(trainer: ContrastiveTrainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    out.update({f"loss.{k}": v.detach().clone() for k, v in trainer.loss_fn.state_dict().items()})
    if trainer.key_encoder is not None:
        out.update({f"key.{k}": v.detach().clone() for k, v in trainer.key_encoder.state_dict().items()})
    opt = trainer.optimizer.state_dict()["state"]
    for i, slots in opt.items():
        out.update({f"optim.{i}.{k}": torch.as_tensor(v).clone() for k, v in slots.items()})
    out["global_step"] = torch.tensor(trainer.state.global_step)
    return out


class FileEvents:
    """Numbers the file events under `root`; SIGKILLs the process at the chosen one, or logs them all."""

    def __init__(self, root: Path, log_path: Path, kill_at: int | None = None, when: str = "before") -> None:
        self.root = os.path.realpath(root)
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.kill_at, self.when = kill_at, when
        self.count, self.depth, self.start = 0, 0, time.monotonic()

    def _under(self, path) -> bool:
        try:
            path = os.path.realpath(os.fspath(path))
        except TypeError:
            return False
        return path == self.root or path.startswith(self.root + os.sep)

    def _label(self, kind: str, path) -> str:
        rel = os.path.relpath(os.path.realpath(os.fspath(path)), self.root)
        return f"{kind} {_RANDOM_NAME.sub(lambda m: f'.{m.group(1)}-*', rel)}"

    def wrap(self, kind: str, fn, path_arg: int = 0):
        events = self

        def wrapper(*args, **kwargs):
            path = args[path_arg] if len(args) > path_arg else None
            if (
                events.depth
                or path is None
                or not isinstance(path, (str, os.PathLike))
                or not events._under(path)
            ):
                return fn(*args, **kwargs)
            index = events.begin(kind, path)
            events.depth += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                events.depth -= 1
            events.end(index)
            return result

        return wrapper

    def begin(self, kind: str, path) -> int:
        self.count += 1
        line = {"i": self.count, "event": self._label(kind, path), "t": time.monotonic() - self.start}
        os.write(self.log_fd, (json.dumps(line) + "\n").encode())
        if self.kill_at == self.count and self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        return self.count

    def end(self, index: int) -> None:
        if self.kill_at == index and self.when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        real_open = builtins.open
        events = self

        class _Closing:
            def __init__(self, f, index):
                self._f, self._index = f, index

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __iter__(self):
                return iter(self._f)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.close()

            def close(self):
                self._f.close()
                events.end(self._index)

        def patched_open(file, mode="r", *args, **kwargs):
            writing = any(c in mode for c in "wax+")
            if (
                not writing
                or events.depth
                or not isinstance(file, (str, os.PathLike))
                or not events._under(file)
            ):
                return real_open(file, mode, *args, **kwargs)
            index = events.begin("write", file)
            return _Closing(real_open(file, mode, *args, **kwargs), index)

        builtins.open = patched_open
        torch.save = self.wrap("torch.save", torch.save, 1)
        real_save_file = safetensors.torch.save_file
        wrapped = self.wrap("save_file", real_save_file, 1)
        for module in list(sys.modules.values()):
            for name, value in list(getattr(module, "__dict__", {}).items()):
                if value is real_save_file:
                    setattr(module, name, wrapped)
        os.mkdir = self.wrap("mkdir", os.mkdir)
        os.replace = self.wrap("rename", os.replace)
        os.rename = self.wrap("rename", os.rename)
        shutil.rmtree = self.wrap("rmtree", shutil.rmtree)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def checkpoints(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(names, key=lambda n: int(n.split("-")[1]))


def start_child(fn) -> int:
    """Run `fn` in a forked child (stdout silenced); return its process id."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            fn()
        except BaseException as err:  # the parent reads the child's result file, not its traceback
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    return pid


def wait_for(pid: int, timeout: float) -> int:
    """`os.waitpid(pid, 0)` with a watchdog: a child still alive after `timeout` seconds is SIGKILLed.

    A forked child can, rarely, block forever on a lock some library held at fork time; killed by the
    watchdog it reads as killed at an arbitrary moment, which is still a valid kill point (its resume must be
    exact or refused like any other).
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.05)


def in_child(fn, timeout: float = 600.0, tries: int = 3) -> int:
    """Run `fn` in a forked child and wait for it (watchdog: a hung child is killed and `fn` run again);
    return the last wait status."""
    for _ in range(tries):
        status = wait_for(start_child(fn), timeout)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            return status
    return status


def run_with_kills(scenario: str, root: Path, target: int, points: list[dict] | None) -> None:
    """One training run; at the start of the save of step `target` it forks one kill run per point.

    A kill run is the same process from that moment on, writing into its own copy of the output folder, with
    its file events counted from the start of that save: it is what a fresh run killed there would leave.
    Without points this is the reference run (events and final state recorded).
    """
    run_dir = root / ("ref" if points is None else "template")
    trainer = build_trainer(scenario, run_dir, seed=0)
    events = FileEvents(run_dir / "out", root / f"{run_dir.name}_events.jsonl")
    events.install()
    original = trainer._save_checkpoint
    state = {"kill_run": False}

    def hooked(model, trial):
        if trainer.state.global_step == target:
            if points is None:
                (root / "save_start").write_text(str(events.count))
            for point in points or []:
                out = root / point["name"] / "out"
                pid = os.fork()
                if pid == 0:
                    state["kill_run"] = True
                    shutil.copytree(run_dir / "out", out)
                    trainer.args.output_dir = str(out)
                    os.close(events.log_fd)
                    events.__init__(out, root / point["name"] / "events.jsonl", point.get("kill_at"))
                    events.when = point.get("when", "before")
                    if "delay" in point:
                        threading.Timer(point["delay"], os.kill, (os.getpid(), signal.SIGKILL)).start()
                    break
                status = wait_for(pid, 180.0)
                (root / point["name"] / "status").write_text(str(status))
        return original(model, trial)

    trainer._save_checkpoint = hooked
    trainer.train()
    if state["kill_run"]:
        os._exit(0)  # the kill point was never reached
    if points is None:
        torch.save(final_state(trainer), root / "ref_state.pt")


def resume(scenario: str, root: Path, name: str) -> int:
    """Start a fresh trainer (other random init) resuming the killed run `name` (`resume_from_checkpoint=True`).

    Returns the child's process id; it writes `resume.json` into the run's folder.
    """
    run_dir = root / name
    result_path = run_dir / "resume.json"

    def run():
        warnings: list[str] = []

        class Catch(logging.Handler):
            def emit(self, record):
                warnings.append(record.getMessage())

        logging.getLogger("hf_contrastive").addHandler(Catch(level=logging.WARNING))
        trainer = build_trainer(scenario, run_dir, seed=123)
        loaded: list[str] = []
        original = trainer._load_from_checkpoint

        def recording(path, model=None):
            loaded.append(os.path.basename(path))
            return original(path, model)

        trainer._load_from_checkpoint = recording
        try:
            trainer.train(resume_from_checkpoint=True)
        except ValueError as err:
            outcome = f"refused: {err}"
        except Exception as err:  # reported, and failed by the test
            outcome = f"error: {type(err).__name__}: {err}"
        else:
            ref = torch.load(root / "ref_state.pt", weights_only=True)
            got = final_state(trainer)
            same = ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
            outcome = "exact" if same else "DIVERGED"
            if not same:
                diff = sorted(k for k in ref if k not in got or not torch.equal(ref[k], got[k]))
                warnings.append(f"differs: {diff[:5]} ({len(diff)} in all)")
        relevant = [w for w in warnings if "checkpoint" in w.lower() or w.startswith("differs")]
        result = {"outcome": outcome, "resumed_from": loaded[:1], "warnings": relevant}
        result_path.write_text(json.dumps(result))

    return start_child(run)


def scenario_matrix(scenario: str, root: Path, spec: dict) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    target = spec["target"]
    start = time.monotonic()
    status = in_child(lambda: run_with_kills(scenario, root, target, None))
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise RuntimeError(f"{scenario}: the reference run failed (status {status})")
    reference_seconds = time.monotonic() - start
    events = [json.loads(line) for line in (root / "ref_events.jsonl").read_text().splitlines()]
    first = int((root / "save_start").read_text())
    save = [e for e in events[first:] if f"checkpoint-{target}" in e["event"]]
    # Kill points: before / after each file event of the targeted save (the first folder creation stands for
    # all of them), then random times from the start of that save to the start of the next one.
    points: list[dict] = []
    seen_mkdir = False
    for e in save:
        if e["event"].startswith("mkdir"):
            if seen_mkdir:
                continue
            seen_mkdir = True
        for when in spec["when"]:
            points.append({"kill_at": e["i"] - first, "when": when, "ref_event": e["event"]})
    later = [e["t"] for e in events[first:] if f"checkpoint-{target + 1}" in e["event"]]
    window = (later[0] if later else events[-1]["t"]) - events[first]["t"]
    rng = random.Random(spec.get("seed", 0))
    points += [{"delay": round(rng.uniform(0.0, window), 3)} for _ in range(spec.get("random", 0))]
    for i, point in enumerate(points):
        point["name"] = f"k{i:03d}"
        (root / point["name"]).mkdir()
    # The template run forks every kill run itself (each under its own watchdog): no retry of the whole.
    in_child(lambda: run_with_kills(scenario, root, target, points), timeout=1100.0, tries=1)
    rows = []
    for point in points:
        run_dir = root / point["name"]
        out = run_dir / "out"
        status = int((run_dir / "status").read_text()) if (run_dir / "status").exists() else -1
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        log = run_dir / "events.jsonl"
        lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        rows.append(
            {
                **point,
                "killed": killed,
                "killed_at_event": (lines[-1]["event"] if lines else "(no file event yet)")
                if killed
                else None,
                "checkpoints_left": checkpoints(out),
                "hidden_before": hidden(out),
            }
        )
    jobs = max(int(spec.get("jobs", 2)), 1)
    for i in range(0, len(rows), jobs):
        batch = rows[i : i + jobs]
        for row, pid in [(row, resume(scenario, root, row["name"])) for row in batch]:
            if os.WIFSIGNALED(wait_for(pid, 300.0)):  # a hung resume: run it once more
                wait_for(resume(scenario, root, row["name"]), 300.0)
        for row in batch:
            result = root / row["name"] / "resume.json"
            row.update(json.loads(result.read_text()) if result.exists() else {"outcome": "error: no result"})
            row["hidden_after"] = hidden(root / row["name"] / "out")
    return {"scenario": scenario, "reference_seconds": reference_seconds, "save_events": save, "rows": rows}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    root = Path(spec["root"])
    results = [scenario_matrix(name, root / name, cfg) for name, cfg in spec["scenarios"].items()]
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
