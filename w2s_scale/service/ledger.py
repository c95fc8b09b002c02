"""The service's log: one JSON line per call (who, when, which method and run, what came back or
why it was refused), appended and flushed to disk before the answer leaves; and what the log
implies, rebuilt from it at every start so that a restarted server forgets nothing: which
(method, run, split) were scored already (duplicates) and how much of each method's budget is
spent.

Each line is written by one write(2) on a file opened O_APPEND, then fsync'd: a reader never
sees two calls' lines interleaved, and a line cut short by a crash is the last one, skipped when
the log is read again. One server per log: it holds the log's lock file while it runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

from w2s_scale.errors import UserError
from w2s_scale.files import Busy, hold_lock
from w2s_scale.service.store import now

SUBMIT = "POST /submit"


class LedgerError(UserError):
    """The log cannot be opened, or another server writes it."""


def submission_key(entry: dict) -> tuple[str, str, str]:
    """What is scored once: a method's run on a split."""
    return entry.get("method"), entry.get("run"), entry.get("split")


def digest(predictions: Any) -> str:
    """SHA-256 of the predictions as JSON with sorted keys: the same predictions sent again (a
    retry after a lost answer) are recognised, other predictions under the same id are not."""
    return hashlib.sha256(json.dumps(predictions, sort_keys=True).encode()).hexdigest()


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.scored: dict[tuple[str, str, str], dict] = {}  # the latest scored entry per key
        self.by_id: dict[str, dict] = {}                     # every scored entry by submission id
        self.spent: Counter[str] = Counter()                 # scored submissions per method
        self.skipped = 0                                     # unreadable lines (a crash mid-line)
        # re-entrant: append() inside exclusive() takes it again in the same thread
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._held = hold_lock(self.path.with_name(self.path.name + ".lock"))
        except Busy as holder:
            raise LedgerError(f"--log {self.path}: another w2s serve writes this log ({holder}); "
                              f"stop it, or give this server another --log") from None
        except OSError as err:
            raise LedgerError(f"--log {self.path}: cannot be opened ({err.strerror}); give a "
                              f"writable path") from None
        self._replay()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.path.stat().st_size and not self._ends_with_newline():
            os.write(self._fd, b"\n")  # a line cut short by a crash stays alone on its line

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _replay(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                self.skipped += bool(line.strip())
                continue
            if isinstance(entry, dict):
                self._note(entry)

    def _note(self, entry: dict) -> None:
        if entry.get("call") == SUBMIT and entry.get("status") == 200 and not entry.get("replayed"):
            self.scored[submission_key(entry)] = entry
            if entry.get("submission_id"):
                self.by_id[entry["submission_id"]] = entry
            self.spent[entry.get("method")] += 1

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held from a submission's checks to its line in the log: two answers to one
        (method, run, split) can never both be scores."""
        with self._lock:
            yield

    def append(self, entry: dict) -> dict:
        """Write one call's line (its time added) to disk, then count what it implies."""
        entry = {"time": now(), **entry}
        line = (json.dumps(entry, default=str) + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._fd, line)
            if written != len(line):  # a full disk: the line is cut; say so rather than go on
                raise OSError(f"{self.path}: only {written} of {len(line)} bytes written")
            os.fsync(self._fd)
            self._note(entry)
        return entry

    def previous(self, key: tuple[str, str, str]) -> Optional[dict]:
        return self.scored.get(key)

    def close(self) -> None:
        os.close(self._fd)
        if self._held is not None:
            self._held.close()

