"""The label-free bundle: everything an isolated method's process is given, in one folder.

  bundle.json   the context's values (seed, options, K, the models' names, the anchors), B and
                test as ids, texts and groups, and what training a student needs: the experiment
                and the run's plan as the framework resolved them (models, training, loss)
  soft.npz      weak_b [N_b, K] and weak_test [N_test, K] (NaN rows: not labelled)

Written by the framework (w2s_scale/methods/isolation.py) from the MethodContext it would have
given the method in-process, so the two modes give a method the same values; read by the
method's process (w2s_scale/methods/isolated.py). There is no label in it, by construction:
`write` takes a MethodContext and the run's settings, and neither has a field that holds one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from w2s_scale.files import atomic_write
from w2s_scale.methods.contract import Anchors, MethodContext, UnlabelledSet

INDEX = "bundle.json"
ARRAYS = "soft.npz"
# the method's workspace: BUNDLE (this module's folder, read by the method's process) and OUT
# (what it writes: RESULT, RESULT_INFO last, its LOG, ERROR when it failed; see isolated.py)
BUNDLE, OUT = "bundle", "out"
RESULT, RESULT_INFO, LOG, ERROR = "result.npz", "result.json", "log.jsonl", "error.txt"


@dataclass(frozen=True)
class Bundle:
    """A bundle as read back: the context's values (no train_student, no log: the method's
    process attaches its own) and the run's settings for the students."""
    ctx: MethodContext
    method: Mapping[str, Any]       # the method section (MethodConfig as JSON)
    experiment: Mapping[str, Any]   # the experiment (ExperimentConfig as JSON)
    run: Mapping[str, Any]          # the run's plan: name, hash, seed, model, train, loss


def _set(examples: UnlabelledSet) -> dict[str, list]:
    return {"ids": list(examples.ids), "texts": list(examples.texts), "groups": list(examples.groups)}


def write(folder: Path, ctx: MethodContext, method: Mapping[str, Any], experiment: Mapping[str, Any],
          run: Mapping[str, Any]) -> None:
    """The bundle of `ctx` into `folder` (created), arrays first, the index last."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ARRAYS, "wb") as fh:
        np.savez(fh, weak_b=ctx.weak_b, weak_test=ctx.weak_test)
    index = {"seed": ctx.seed, "options": dict(ctx.options), "num_classes": ctx.num_classes,
             "weak_model": ctx.weak_model, "strong_model": ctx.strong_model,
             "anchors": {"weak_accuracy": ctx.anchors.weak_accuracy,
                         "ceiling_accuracy": ctx.anchors.ceiling_accuracy,
                         "weak_auc": ctx.anchors.weak_auc, "ceiling_auc": ctx.anchors.ceiling_auc},
             "b": _set(ctx.b), "test": _set(ctx.test),
             "method": dict(method), "experiment": dict(experiment), "run": dict(run)}
    atomic_write(folder / INDEX, json.dumps(index) + "\n")


def read(folder: Path) -> Bundle:
    index = json.loads((folder / INDEX).read_text())
    with np.load(folder / ARRAYS) as arrays:
        weak_b, weak_test = arrays["weak_b"], arrays["weak_test"]

    def unlabelled(raw: Mapping[str, list]) -> UnlabelledSet:
        return UnlabelledSet(tuple(raw["ids"]), tuple(raw["texts"]), tuple(raw["groups"]))

    ctx = MethodContext(seed=index["seed"], options=index["options"],
                        num_classes=index["num_classes"], b=unlabelled(index["b"]),
                        test=unlabelled(index["test"]), weak_b=weak_b, weak_test=weak_test,
                        anchors=Anchors(**index["anchors"]), weak_model=index["weak_model"],
                        strong_model=index["strong_model"])
    return Bundle(ctx, index["method"], index["experiment"], index["run"])
