"""Run folders on disk: atomic writes by rank 0, a DONE marker written last.

A folder with DONE (of this run's settings hash) is complete and never redone unless asked
(--redo); one without DONE resumes from its last checkpoint if it was started with the same
settings, else it is cleared and restarted.

A redo of a complete run is built beside it, in `.<run>.redo`, and swapped in only when it is
complete (its DONE written): at every instant the run's folder holds either the old complete run
or the new one. An interrupted redo leaves the old run in place; the next --redo resumes it.

DONE records what the run wrote (w2s_scale/integrity.py: each file's size, SHA-256, jsonl rows),
and every reader checks that record before it trusts the run: a run whose files no longer match
is "damaged", named in one line and treated as unfinished (redone by the next attempt, never
summarised). A DONE written before records existed holds the settings hash alone; such runs are
trusted as before (there is nothing to check them against) until they are redone. Checkpoints
carry a record of their own (RECORD_FILE), checked before a resume loads one.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import yaml

from w2s_scale import distributed as dist
from w2s_scale import integrity
from w2s_scale.errors import UserError
from w2s_scale.files import Busy, atomic_write, hold_lock

DONE = "DONE"
STARTED = "started.json"
DAMAGED = "DONE.damaged"  # a damaged run's marker, kept aside while the run is redone
State = Literal["done", "stale", "partial", "missing", "damaged"]
# not in a run's record: what is added after DONE by design (logs, PGR once the ceiling exists,
# W&B's own folder and id file), the checkpoints (their own records) and the markers themselves
NOT_RECORDED = (DONE, STARTED, DAMAGED, "log.jsonl", "pgr.json", "checkpoints/", "wandb")


class ResultsError(UserError):
    """Existing results disagree with the config; one line saying what to do."""


def _read_hash(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        return None


def _read_marker(marker: Path) -> Optional[dict]:
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def not_recorded(rel: str) -> bool:
    # hidden names: atomic_write's temporary files
    return rel.startswith(NOT_RECORDED) or any(part.startswith(".") for part in rel.split("/"))


def _done_time(folder: Path) -> float:
    try:
        return float(json.loads((folder / DONE).read_text()).get("time", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE), so neither path is ever
    missing. Where the file system cannot (EINVAL/ENOSYS), two renames; RunDir.recover repairs
    an interruption between them."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back; else a real error
            raise OSError(errno, os.strerror(errno), str(a))
    parked = a.with_name(f"{a.name}.parked")
    os.replace(a, parked)
    os.replace(b, a)
    os.replace(parked, b)


def inspect(path: Path, config_hash: str) -> tuple[State, Optional[str]]:
    """(state, what is wrong where the state is damaged). done: DONE of this hash whose record
    matches the files; damaged: DONE of this hash whose files no longer match its record (or a
    DONE that cannot be read); stale: DONE of other settings; partial: started with this hash
    (the next attempt resumes); missing. Reads only; any rank may call it."""
    if (path / DONE).exists():
        marker = _read_marker(path / DONE)
        if marker is None:
            return "damaged", f"{DONE} cannot be read (not JSON: cut short or edited)"
        if marker.get("hash") != config_hash:
            return "stale", None
        if "files" not in marker:  # written before records: trusted as before
            return "done", None
        problem = integrity.check(path, marker["files"])
        return ("damaged", problem) if problem else ("done", None)
    if _read_hash(path / STARTED) == config_hash:
        return "partial", None
    return "missing", None


def run_state(path: Path, config_hash: str) -> State:
    """The state alone (see inspect)."""
    return inspect(path, config_hash)[0]


class RunDir:
    """A run's folder. `final` is where its results are read from; `path` is where this attempt
    writes (the same folder, or the `.redo` folder beside it while a complete run is redone)."""

    def __init__(self, path: Path, config_hash: str):
        self.final = Path(path)
        self.path = self.final
        self.hash = config_hash
        self._held = None  # this run's lock while rank 0 trains it (prepare .. mark_done)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def redo_path(self) -> Path:
        return self.final.with_name(f".{self.final.name}.redo")

    def state(self) -> State:
        return run_state(self.final, self.hash)

    def is_done(self) -> bool:
        state = self.state()
        if state == "stale":
            found = _read_hash(self.final / DONE)
            raise ResultsError(
                f"{self.final} was completed with other settings (hash {found}, now {self.hash}); "
                f"change `name` or `results_dir` to keep both, or pass --redo to replace it "
                f"(the old results stay until the new run is complete)")
        if state == "damaged":
            dist.say(f"{self.final}: {inspect(self.final, self.hash)[1]}; not trusted, redoing the run")
        return state == "done"

    def recover(self) -> None:
        """Finish or undo a swap that was interrupted (rank 0). A `.redo` folder with DONE is
        either the finished replacement not yet swapped in (its DONE newer than the run's) or
        the replaced run not yet deleted."""
        redo = self.redo_path
        parked = self.final.with_name(f"{self.final.name}.parked")
        if parked.exists():  # interrupted between the two-rename fallback's steps
            if not self.final.exists():
                os.replace(redo if (redo / DONE).exists() else parked, self.final)
            shutil.rmtree(parked, ignore_errors=True)
        if not (redo / DONE).exists():
            return
        if not (self.final / DONE).exists():
            shutil.rmtree(self.final, ignore_errors=True)
            os.replace(redo, self.final)
        elif _done_time(redo) > _done_time(self.final):
            exchange(self.final, redo)
            shutil.rmtree(redo, ignore_errors=True)
        else:
            shutil.rmtree(redo, ignore_errors=True)

    def prepare(self, redo: bool = False) -> bool:
        """Make the folder this attempt writes ready; returns True if an earlier attempt is
        resumed. With `redo` and a complete run in place, that folder is `.<run>.redo` (the
        complete run is kept until the new one is done). Every rank calls this; only rank 0
        touches the disk."""
        resumed, work, busy = False, self.final, None
        if dist.is_main():
            busy = self._lock()
        busy = dist.broadcast_object(busy)
        if busy is not None:  # every rank stops; rank 0 says why
            raise ResultsError(busy)
        if dist.is_main():
            self.recover()
            if inspect(self.final, self.hash)[0] == "damaged":  # unfinished: its DONE goes aside
                os.replace(self.final / DONE, self.final / DAMAGED)
            if redo and (self.final / DONE).exists():
                work = self.redo_path
            elif redo:  # nothing complete to keep: an unfinished attempt is restarted
                shutil.rmtree(self.final, ignore_errors=True)
            started = work / STARTED
            if started.exists() and _read_hash(started) != self.hash:
                shutil.rmtree(work)  # an unfinished attempt with other settings
            work.mkdir(parents=True, exist_ok=True)
            (work / "checkpoints").mkdir(exist_ok=True)
            resumed = started.exists()
            atomic_write(started, json.dumps({"hash": self.hash}))
        dist.barrier()
        resumed, work = dist.broadcast_object((resumed, str(work)))
        self.path = Path(work)
        return bool(resumed)

    def _lock(self) -> Optional[str]:
        """Rank 0 takes this run's lock for the rest of the attempt (files.hold_lock), so a
        second command cannot train the same run at once; the reason when another holds it."""
        # beside the seed folders, not in them: results/<name>/<dataset>/.locks/seed<k>.<run>.lock
        # (a run folder itself is replaced by --redo, and readers list the seed folders)
        seed = self.final.parent
        path = seed.parent / ".locks" / f"{seed.name}.{self.final.name}.lock"
        try:
            self._held = hold_lock(path)
        except Busy as holder:
            return (f"{self.final} is being trained by another w2s command ({holder}; lock file "
                    f"{path}); wait for it to finish, or stop it, then run this again")
        if self._held is None:
            print(f"w2s: warning: {path.parent} has no file locks; two commands on one run are "
                  f"not kept apart there", file=sys.stderr, flush=True)
        return None

    def pending_redo(self) -> bool:
        """An interrupted --redo waits beside this run (resumed by the next --redo)."""
        return self.redo_path.exists() and not (self.redo_path / DONE).exists()

    def write_json(self, name: str, payload: Any) -> None:
        if dist.is_main():
            atomic_write(self.path / name, json.dumps(payload, indent=2) + "\n")

    def write_yaml(self, name: str, payload: Any) -> None:
        if dist.is_main():
            atomic_write(self.path / name, yaml.safe_dump(payload, sort_keys=False))

    def write_jsonl(self, name: str, rows: Iterable[dict]) -> None:
        if dist.is_main():
            atomic_write(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def read_jsonl(self, name: str) -> list[dict]:
        return [json.loads(line) for line in (self.path / name).read_text().splitlines() if line]

    def mark_done(self, keep_checkpoints: bool = False) -> None:
        """Last step of a run: everything it wrote is in place before DONE appears; a redo is
        then swapped in for the run it replaces, and the replaced run deleted."""
        dist.barrier()
        if dist.is_main():
            if not keep_checkpoints:
                shutil.rmtree(self.checkpoints, ignore_errors=True)
            files = integrity.record(self.path, skip=not_recorded)
            atomic_write(self.path / DONE, json.dumps({"hash": self.hash, "time": time.time(),
                                                       "files": files}, indent=1) + "\n")
            (self.path / DAMAGED).unlink(missing_ok=True)
            if self.path != self.final:
                exchange(self.final, self.path)
                shutil.rmtree(self.path, ignore_errors=True)
            self.release()
        dist.barrier()
        self.path = self.final

    def release(self) -> None:
        """Give up this run's lock (after DONE; a process that ends gives it up anyway)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()


def finished(path: Path, config_hash: str) -> RunDir:
    """The run at `path` if it finished with these settings, to read its results; else a
    ResultsError saying whether it is missing, unfinished or of other settings."""
    state, problem = inspect(path, config_hash)
    if state != "done":
        raise ResultsError(f"{path}: {describe_state(state, problem)}")
    return RunDir(path, config_hash)


def describe_state(state: State, problem: Optional[str] = None) -> str:
    if state == "damaged":
        return (f"finished, but {problem or 'its files no longer match its DONE record'}; not "
                f"trusted: rerun the same command to redo it")
    return {"done": "complete",
            "stale": "finished with other settings (not this config's result); redo it with "
                     "--redo, or give this config another `name`",
            "partial": "started but not finished; rerun the same command to resume it",
            "missing": "not run yet"}[state]


# --- checkpoints ----------------------------------------------------------------------------------

RECORD_FILE = "w2s_record.json"  # in each checkpoint folder: its files as they were saved


def record_checkpoint(folder: Path) -> None:
    """Rank 0, once every rank's files of the checkpoint are written (DeepSpeed's shards and our
    client state): its record, written before any pointer names the checkpoint."""
    files = integrity.record(folder, skip=lambda rel: rel == RECORD_FILE or not_recorded(rel))
    atomic_write(folder / RECORD_FILE, json.dumps({"files": files}, indent=1) + "\n")


def checkpoint_problem(folder: Path) -> tuple[bool, Optional[str]]:
    """(whether the checkpoint has a record, what is wrong with its files or None)."""
    if not (folder / RECORD_FILE).exists():
        return False, None if folder.is_dir() else "its folder is missing"
    marker = _read_marker(folder / RECORD_FILE)
    if marker is None or not isinstance(marker.get("files"), dict):
        return True, f"{RECORD_FILE} cannot be read"
    return True, integrity.check(folder, marker["files"])


def _step(folder: Path) -> int:
    return int(folder.name[4:])


def resume_tag(ckpt_dir: Path, named: Optional[str]) -> Optional[str]:
    """The checkpoint a resume loads (every rank calls this; rank 0 checks, all get its answer):
    the one `named` by the latest pointer if its files match its record (one saved before
    records existed is trusted as before), else the newest older one that does, else None (the
    run starts from scratch). A damaged checkpoint is named in one line and removed, with any
    newer unrecorded one (a save that never finished), so that pruning keeps the good ones."""
    choice = None
    if dist.is_main():
        choice = _choose_checkpoint(Path(ckpt_dir), named)
    return dist.broadcast_object(choice)


def _choose_checkpoint(ckpt_dir: Path, named: Optional[str]) -> Optional[str]:
    folders = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir() and p.name[4:].isdigit()),
                     key=_step, reverse=True)
    if named is not None and not (named.startswith("step") and named[4:].isdigit()):
        print(f"[w2s] {ckpt_dir.parent}: the latest checkpoint pointer reads {named[:40]!r}, not a "
              f"checkpoint; looking for the newest good one", flush=True)
        named = None
    if named is not None and not (ckpt_dir / named).is_dir():
        folders.insert(0, ckpt_dir / named)  # named but gone: said below as missing
    if named is not None and named.startswith("step") and named[4:].isdigit():
        for newer in [p for p in folders if p.name != named and _step(p) > int(named[4:])]:
            integrity.remove_tree(newer)  # a save the pointer never reached: it breaks pruning
            folders.remove(newer)
    # where any checkpoint has a record, one without it lost it (else: saved before records)
    recorded_here = any((p / RECORD_FILE).exists() for p in folders)
    rejected, choice = [], None
    for folder in folders:
        has_record, problem = checkpoint_problem(folder)
        if problem is None and not has_record and recorded_here and folder.name == named:
            problem = f"{RECORD_FILE} is missing"
        if problem is None and (has_record or folder.name == named):
            choice = folder.name
            break
        if problem is not None:
            rejected.append(f"{folder.name}: {problem}")
        integrity.remove_tree(folder)  # damaged, or newer than the pointer and never recorded
    if rejected:
        then = f"resuming from {choice}, the newest good one" if choice else "starting from scratch"
        print(f"[w2s] {ckpt_dir.parent}: checkpoint {'; '.join(rejected)}; not loaded, {then}",
              flush=True)
    return choice
