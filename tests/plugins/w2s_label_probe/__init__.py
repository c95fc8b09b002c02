"""A method that tries to read labels (tests/test_isolated_mode.py), then behaves.

`probe` opens each file of options["paths"] ({name: path}: the label store, a finished run's
test_predictions.jsonl and weak_labels.jsonl, the data file) and records what it got: "read",
or the exception's name. It tries to unmount each folder of options["unmount"] first (root in a
namespace of its own may try), looks at what processes it can see, and lists the attributes of
the sets it was given. Then it trains one student on the weak labels of B and predicts test with
it, like the built-in transfer, so its predictions can be scored.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

from w2s_scale.methods import MethodContext, MethodResult

MNT_DETACH = 2


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return "read" if fh.read(64) else "empty"
    except OSError as err:
        return type(err).__name__


def _unmount(folder: str) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(folder.encode(), MNT_DETACH) == 0:
        return "unmounted"
    return os.strerror(ctypes.get_errno())


def _label_like(obj: Any) -> list[str]:
    return sorted(a for a in dir(obj) if "label" in a.lower() and not a.startswith("__"))


def probe(ctx: MethodContext) -> MethodResult:
    unmount = {folder: _unmount(folder) for folder in ctx.options.get("unmount", [])}
    reads = {name: _read(path) for name, path in ctx.options["paths"].items()}
    processes = [p for p in os.listdir("/proc") if p.isdigit()]
    ctx.log({"probe_reads": sum(v == "read" for v in reads.values())})
    student = ctx.train_student(ctx.weak_b)
    return MethodResult(test_probs=student.test_probs, b_probs=student.b_probs, extra={
        "reads": reads, "unmount": unmount, "processes_visible": len(processes),
        "label_attributes": {"b": _label_like(ctx.b), "test": _label_like(ctx.test),
                             "context": [a for a in _label_like(ctx) if a != "weak_b"]},
        "set_types": [type(ctx.b).__name__, type(ctx.test).__name__]})
