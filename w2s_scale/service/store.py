"""The label store: what the evaluation service holds and nothing else may read.

A folder owned by the service's user (mode 0700, files 0600), written once by `export` and read
at start by the server:

  store.json                    what the store is (experiment, config, when), the datasets with
                                their classes and seeds, the baselines, and a record of every
                                file below (integrity.record), checked when the store is opened
  <dataset>/seed<k>/test.jsonl  {"id", "label"[, "subset"]} per test example
  <dataset>/seed<k>/b.jsonl     {"id", "label"} per example of B

A baseline is a (dataset, weak, strong) pair's fixed anchors for PGR: the test scores of the weak
model's and the strong ceiling's ground-truth runs, one entry per seed (as metrics.json has them),
averaged over seeds when a submission is scored: the reference notebook's and the testbed's PGR.
Imports nothing of the service and nothing heavy (json and numpy), so the server starts fast.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from w2s_scale import integrity
from w2s_scale.errors import UserError

FORMAT = 1
INDEX = "store.json"
SPLITS = ("test", "b")  # what a submission can be scored against


class StoreError(UserError):
    """A label store that is missing, unreadable or changed since it was exported."""


@dataclass(frozen=True)
class Part:
    """The ground truth of one split of one (dataset, seed): ids in a fixed order, their labels,
    and each example's test subset where the data name one (the testbed's ID / OOD sets)."""
    ids: tuple[str, ...]
    labels: np.ndarray
    subsets: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def position(self) -> dict[str, int]:
        return {ex_id: i for i, ex_id in enumerate(self.ids)}

    def rows(self) -> Iterable[dict]:
        for ex_id, label in zip(self.ids, self.labels):
            row: dict[str, Any] = {"id": ex_id, "label": int(label)}
            if ex_id in self.subsets:
                row["subset"] = self.subsets[ex_id]
            yield row


def _mean(values: list[Optional[float]]) -> Optional[float]:
    clean = [float(v) for v in values if v is not None]
    return float(np.mean(clean)) if clean else None


@dataclass(frozen=True)
class Baseline:
    """The fixed anchors of one (dataset, weak, strong) pair: {seed: the run's test scores} of the
    weak model's gt run and of the strong model's ceiling run. Scores are metrics.json's:
    {"accuracy", "auc", "subsets": {name: {"accuracy", "auc", ...}}}."""
    dataset: str
    weak: str
    strong: str
    weak_runs: Mapping[int, Mapping[str, Any]]
    ceiling_runs: Mapping[int, Mapping[str, Any]]

    def _scores(self, runs: Mapping[int, Mapping[str, Any]], key: str,
                subset: Optional[str]) -> list[Optional[float]]:
        if subset is None:
            return [run.get(key) for run in runs.values()]
        return [run.get("subsets", {}).get(subset, {}).get(key) for run in runs.values()]

    def means(self, subset: Optional[str] = None) -> dict[str, Optional[float]]:
        """Weak and ceiling accuracy and AUC averaged over seeds (over the whole test set, or one
        test subset); None where no run has the score."""
        return {f"{role}_{short}": _mean(self._scores(runs, key, subset))
                for role, runs in (("weak", self.weak_runs), ("ceiling", self.ceiling_runs))
                for short, key in (("acc", "accuracy"), ("auc", "auc"))}

    @property
    def subset_names(self) -> list[str]:
        return sorted({name for runs in (self.weak_runs, self.ceiling_runs)
                       for run in runs.values() for name in run.get("subsets", {})})

    def summary(self) -> dict[str, Any]:
        """What GET /baselines shows: the means, and the seeds they rest on."""
        return {"dataset": self.dataset, "weak": self.weak, "strong": self.strong,
                "weak_seeds": sorted(self.weak_runs), "ceiling_seeds": sorted(self.ceiling_runs),
                **self.means(),
                "subsets": {name: self.means(name) for name in self.subset_names}}

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "weak": self.weak, "strong": self.strong,
                "weak_runs": {str(s): dict(r) for s, r in self.weak_runs.items()},
                "ceiling_runs": {str(s): dict(r) for s, r in self.ceiling_runs.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Baseline":
        return cls(raw["dataset"], raw["weak"], raw["strong"],
                   {int(s): r for s, r in raw["weak_runs"].items()},
                   {int(s): r for s, r in raw["ceiling_runs"].items()})


@dataclass(frozen=True)
class LabelStore:
    folder: Path
    info: Mapping[str, Any]                       # experiment, config, exported (when)
    classes: Mapping[str, int]                    # dataset -> K
    parts: Mapping[tuple[str, int, str], Part]    # (dataset, seed, split) -> ground truth
    baselines: tuple[Baseline, ...]

    @property
    def datasets(self) -> list[str]:
        return sorted(self.classes)

    def seeds(self, dataset: str) -> list[int]:
        return sorted({seed for d, seed, _ in self.parts if d == dataset})

    def pairs(self, dataset: str) -> list[Baseline]:
        return [b for b in self.baselines if b.dataset == dataset]


def part_path(dataset: str, seed: int, split: str) -> str:
    return f"{dataset}/seed{seed}/{split}.jsonl"


def write_store(folder: Path, info: Mapping[str, Any], classes: Mapping[str, int],
                parts: Mapping[tuple[str, int, str], Part], baselines: Iterable[Baseline]) -> None:
    """Write the store whole, then put it in place in one step: a reader (a server starting)
    sees the old store or the new one. Only the owner can read it (0700 / 0600)."""
    folder = Path(folder)
    for dataset in classes:
        if not dataset or "/" in dataset or dataset.startswith("."):
            raise StoreError(f"dataset name {dataset!r} cannot name a folder of the label store")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".export"))
    try:
        for (dataset, seed, split), part in parts.items():
            path = work / part_path(dataset, seed, split)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text("".join(json.dumps(r) + "\n" for r in part.rows()))
        index = {"format": FORMAT, **info, "classes": dict(classes),
                 "baselines": [b.to_json() for b in baselines],
                 "files": integrity.record(work)}
        (work / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        _owner_only(work)
        if folder.exists():  # the old store aside, the new one in: a server starting in
            old = work.with_suffix(".old")  # between finds none and says so in one line
            os.replace(folder, old)
            os.replace(work, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _owner_only(folder: Path) -> None:
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def open_store(folder: Path) -> LabelStore:
    """The store in `folder`, its files checked against the record written with them."""
    folder = Path(folder)
    hint = (f"export one with `w2s serve --labels {folder} -c CONFIG.yaml --export-only` from "
            f"the finished experiment or sweep")
    if not (folder / INDEX).is_file():
        raise StoreError(f"--labels {folder}: no label store there ({INDEX} missing); {hint}")
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"--labels {folder}: {INDEX} cannot be read ({err}); {hint}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise StoreError(f"--labels {folder}: {INDEX} is not a label store of format {FORMAT}; {hint}")
    problem = integrity.check(folder, index.get("files"))
    if problem:
        raise StoreError(f"--labels {folder}: {problem} (changed since it was exported); {hint}")
    parts = {}
    for rel in index["files"]:
        dataset, seed_dir, name = rel.split("/")
        rows = [json.loads(line) for line in (folder / rel).read_text().splitlines() if line]
        parts[(dataset, int(seed_dir[4:]), name.removesuffix(".jsonl"))] = Part(
            ids=tuple(r["id"] for r in rows), labels=np.array([r["label"] for r in rows], dtype=int),
            subsets={r["id"]: r["subset"] for r in rows if r.get("subset") is not None})
    info = {k: v for k, v in index.items() if k not in ("format", "classes", "baselines", "files")}
    return LabelStore(folder=folder, info=info, classes=dict(index["classes"]), parts=parts,
                      baselines=tuple(Baseline.from_json(b) for b in index["baselines"]))


def now() -> str:
    """UTC time as ISO 8601 to the second: how the store and the log say when."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
