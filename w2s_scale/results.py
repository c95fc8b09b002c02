"""Run folders on disk: atomic writes by rank 0, a DONE marker written last.

A folder with DONE is complete and never redone (unless forced); one without DONE resumes from
its last checkpoint if it was started with the same settings, else it is cleared and restarted.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import yaml

from w2s_scale import distributed as dist

DONE = "DONE"
STARTED = "started.json"


class ResultsError(ValueError):
    """Existing results disagree with the config; one line saying what to do."""


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path, config_hash: str):
        self.path = Path(path)
        self.hash = config_hash

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_done(self) -> bool:
        marker = self.path / DONE
        if not marker.exists():
            return False
        found = json.loads(marker.read_text()).get("hash")
        if found != self.hash:
            raise ResultsError(
                f"{self.path} was completed with other settings (hash {found}, now {self.hash}); "
                f"change `name` or `results_dir` to keep both, or pass --force to redo it")
        return True

    def prepare(self, force: bool = False) -> bool:
        """Make the folder ready to (re)start; returns True if an earlier attempt is resumed.
        Every rank calls this; only rank 0 touches the disk."""
        resumed = False
        started = self.path / STARTED
        if dist.is_main():
            if force and self.path.exists():
                shutil.rmtree(self.path)
            if started.exists() and json.loads(started.read_text()).get("hash") != self.hash:
                shutil.rmtree(self.path)  # an unfinished attempt with other settings
            self.path.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(exist_ok=True)
            resumed = started.exists()
            atomic_write(started, json.dumps({"hash": self.hash}))
        dist.barrier()
        return bool(dist.broadcast_object(resumed))

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
        """Last step of a run: everything it wrote is in place before DONE appears."""
        dist.barrier()
        if dist.is_main():
            if not keep_checkpoints:
                shutil.rmtree(self.checkpoints, ignore_errors=True)
            atomic_write(self.path / DONE, json.dumps({"hash": self.hash}) + "\n")
        dist.barrier()
