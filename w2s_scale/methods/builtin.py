"""The built-in methods, written against the method contract like any user's method.

`transfer` is today's transfer run: one student trained on the label source's soft labels of B
with the method section's loss. With `method.loss` and `method.labels` it reaches every loss
and every label source (ensembles, probe relabel / filter, bootstrap chains, strong-to-strong):
the framework plans the label source's runs and hands the method their labels of B, so the
student it trains is the one the transfer run of that loss and source trains (the same targets,
rows, seed and settings; tests/test_methods_contract.py compares their predictions).
"""
from __future__ import annotations

from typing import Any, Mapping

from w2s_scale.methods.contract import MethodContext, MethodResult


def transfer(ctx: MethodContext) -> MethodResult:
    """A student trained on every labelled row of B against its soft labels."""
    student = ctx.train_student(ctx.weak_b)
    return MethodResult(test_probs=student.test_probs, b_probs=student.b_probs,
                        extra={"n_train": student.n_train, "steps": student.steps,
                               **dict(student.selection)})


def _no_options(options: Mapping[str, Any]) -> None:
    if options:
        raise ValueError(f"transfer takes no options (got {sorted(options)}); choose its loss "
                         f"with method.loss and its labels with method.labels")


transfer.check_options = _no_options  # type: ignore[attr-defined]

BUILTIN = {"transfer": transfer}
