"""An append-only JSON-lines cache of model answers, safe against a kill at any moment.

Each record is one line `{"key": ..., "answer": ..., ...}`, appended with a single `write` of the whole line,
then flushed and `fsync`ed before the call returns, under an exclusive `flock` (POSIX) so that two processes
never interleave their lines. A process killed during an append leaves at most one torn last line (no
trailing newline): reading ignores it with a warning and cuts it off before the next append, so the answers
written before stay readable and the torn one is generated again. A complete line that is not a valid record
means the file was changed by something else: it is refused with its line number, never skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = ["AnswerCache"]


class AnswerCache:
    r"""Answers by key, read from and appended to one JSON-lines file.

    Args:
        path (`str | os.PathLike`):
            The cache file (created with its folder on the first append).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"The answer cache must be a file, got a folder or special file: {self.path}")
        self._answers: dict[str, str] = {}
        self.torn_lines = 0
        self._load()

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> str | None:
        """The cached answer of `key`, or `None`."""
        return self._answers.get(key)

    @contextlib.contextmanager
    def _locked(self, mode: str) -> Iterator[Any]:
        with open(self.path, mode) as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX if "a" in mode or "+" in mode else fcntl.LOCK_SH)
            try:
                yield f
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with self._locked("rb") as f:
            data = f.read()
        complete, _, tail = data.rpartition(b"\n")
        if tail:
            self.torn_lines = 1
            logger.warning(
                "%s: ignoring a torn last line (%d bytes without a newline, an interrupted write); its "
                "answer will be generated again.",
                self.path,
                len(tail),
            )
        for number, raw in enumerate(complete.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(
                    f"{self.path}:{number}: not a JSON record ({err}); expected one object per line with "
                    "'key' and 'answer'. The file was changed by something other than this cache: move it "
                    "away to start over."
                ) from None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("key"), str)
                or not isinstance(record.get("answer"), str)
            ):
                raise ValueError(
                    f"{self.path}:{number}: expected an object with string 'key' and 'answer', "
                    f"got {raw[:200]!r}."
                )
            self._answers[record["key"]] = record["answer"]

    def _cut_torn_tail(self, f: Any) -> None:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        # Walk back to the last newline; everything after it is a torn record.
        block = 4096
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                end = start + idx + 1
                if end != size:
                    f.truncate(end)
                return
            pos = start
        f.truncate(0)

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records (each with string `key` and `answer`, other JSON fields kept for inspection).

        The records are on disk (flushed and `fsync`ed) when this returns.
        """
        records = [dict(r) for r in records]
        for r in records:
            if not isinstance(r.get("key"), str) or not isinstance(r.get("answer"), str):
                raise ValueError(f"A cache record needs string 'key' and 'answer', got {r!r}.")
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = b"".join(
            json.dumps(r, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n" for r in records
        )
        self.path.touch(exist_ok=True)
        with self._locked("r+b") as f:
            self._cut_torn_tail(f)
            f.seek(0, os.SEEK_END)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self._answers[r["key"]] = r["answer"]
