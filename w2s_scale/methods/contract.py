"""The method contract: what a weak-to-strong method is given, and what it returns.

A method is a callable `method(ctx: MethodContext) -> MethodResult`. It is given B and test as
ids and texts only (no label field anywhere), the soft labels of its label source on B, the weak
model's soft labels on test, the weak model's and the strong ceiling's test accuracy (the PGR
anchors, numbers only), its options, and `ctx.train_student`, which trains the configured strong
model through the project's engine (DeepSpeed, any loss of w2s_scale/losses.py) on rows of B
against soft targets the method chooses. It returns class probabilities on test (and, if it
has them, on B) and anything else it wants recorded. The framework scores the predictions and
writes the run's folder (w2s_scale/methods/runner.py); the method never sees a label.

Every rank calls the method (like every built-in stage): `train_student` is collective, and its
predictions come back on every rank, so a method that decides only from what it is given takes
the same decisions on every rank. numpy, random and torch are seeded alike on each rank before
the method is called.

This module holds types only (numpy, no torch), so a method's package can import it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np


@dataclass(frozen=True)
class UnlabelledSet:
    """Examples without labels: ids and texts, aligned. `groups`: rows that share a question or
    passage share a key (None: related to no other); the framework keeps them together when it
    holds slices of B out for early stopping."""
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    groups: tuple[Optional[str], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Anchors:
    """The test scores of the run's cached ground-truth runs, which PGR is measured against:
    the weak model's (trained on A) and the strong model's ceiling. Aggregates only."""
    weak_accuracy: float
    ceiling_accuracy: float
    weak_auc: Optional[float] = None
    ceiling_auc: Optional[float] = None


@dataclass(frozen=True)
class Student:
    """A strong model trained by ctx.train_student, as its predictions: class probabilities
    [N, K] on all of B and all of test, rows aligned with ctx.b and ctx.test. A row is NaN where
    the student's tokenizer could not hold the text (data.overlong: drop)."""
    b_probs: np.ndarray
    test_probs: np.ndarray
    n_train: int                # the rows of B it trained on (after early stopping's held-out cut)
    steps: int                  # optimizer steps
    selection: Mapping[str, Any] = field(default_factory=dict)  # early stopping's choice, if on


# targets [N_b, K] aligned with ctx.b; rows: which of them to train on; loss: a loss name or
# {"name": ..., "params": {...}} (None: the method section's `loss`); model: fields of the
# strong model's section to change for this student (head, lora, linear_probe, ...)
TrainStudent = Callable[..., Student]


@dataclass(frozen=True)
class MethodContext:
    """What a method is given (see the module doc). Soft labels are [N, K] float arrays aligned
    with `b` / `test`; a NaN row is an example its source did not label (over-long for the
    weak model's tokenizer, or left out by a filtering label source)."""
    seed: int
    options: Mapping[str, Any]        # the method section's `options`, as written
    num_classes: int                  # K
    b: UnlabelledSet                  # the students' training pool, without labels
    test: UnlabelledSet               # the test texts, without labels
    weak_b: np.ndarray                # the label source's soft labels on B (the weak model's by default)
    weak_test: np.ndarray             # the weak model's soft labels on test
    anchors: Anchors
    weak_model: str                   # short names, as runs and tables name them
    strong_model: str
    _train: TrainStudent = field(repr=False, compare=False, default=None)
    _log: Callable[[Mapping[str, Any]], None] = field(repr=False, compare=False, default=None)

    def train_student(self, targets: np.ndarray, rows: Optional[Sequence[int]] = None,
                      loss: Union[None, str, Mapping[str, Any]] = None,
                      model: Optional[Mapping[str, Any]] = None) -> Student:
        """Train the strong model (from its pretrained weights, seeded like a transfer run) on
        the rows of B given (default: every row whose target is not NaN), in B's order, against
        `targets` [N_b, K]; returns its predictions on B and test. Collective: every rank calls
        it with the same arguments."""
        return self._train(targets, rows=rows, loss=loss, model=model)

    def log(self, values: Mapping[str, Any]) -> None:
        """Record numbers or short values in the run's log.jsonl (and W&B, when on)."""
        self._log(values)


@dataclass
class MethodResult:
    """What a method returns: class probabilities [N_test, K] aligned with ctx.test (a NaN row:
    no prediction for that example, left out of scoring), optionally [N_b, K] on B (written as
    the run's labels of B), and `extra`: JSON-able values recorded in metrics.json."""
    test_probs: np.ndarray
    b_probs: Optional[np.ndarray] = None
    extra: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    """A method: any callable with this signature. It may also define
    `check_options(options: Mapping) -> None`, raising ValueError with a one-line reason, which
    `w2s` calls when it loads the config, before anything trains."""

    def __call__(self, ctx: MethodContext) -> MethodResult: ...
