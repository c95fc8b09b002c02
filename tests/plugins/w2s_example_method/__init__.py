"""An example weak-to-strong method that lives outside the w2s_scale package.

`blend`: train the strong student on the weak labels of B whose confidence (max_k p_k) is at
least `min_confidence`, then predict test as a mix of the student and the weak model,
(1 - weak_weight) * student + weak_weight * weak (the student alone where the weak model has
no prediction). The tests name it as "w2s_example_method:blend" with this folder's parent on
PYTHONPATH, and as the entry point "example_blend" of the group w2s_scale.methods.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from w2s_scale.methods import MethodContext, MethodResult

DEFAULTS = {"min_confidence": 0.0, "weak_weight": 0.5}


def check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"blend takes {sorted(DEFAULTS)}, not {sorted(unknown)}")
    for name, value in options.items():
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number in [0, 1] (got {value!r})")


def blend(ctx: MethodContext) -> MethodResult:
    opts = {**DEFAULTS, **ctx.options}
    weak = ctx.weak_b
    labelled = ~np.isnan(weak).any(axis=1)
    confident = labelled & (np.nan_to_num(weak).max(axis=1) >= opts["min_confidence"])
    rows = np.flatnonzero(confident)
    ctx.log({"confident_rows": int(len(rows)), "labelled_rows": int(labelled.sum())})
    student = ctx.train_student(weak, rows=rows)

    mix = student.test_probs.copy()
    both = ~np.isnan(mix).any(axis=1) & ~np.isnan(ctx.weak_test).any(axis=1)
    w = opts["weak_weight"]
    mix[both] = (1 - w) * student.test_probs[both] + w * ctx.weak_test[both]
    return MethodResult(test_probs=mix, b_probs=student.b_probs,
                        extra={"n_confident": int(len(rows)), "weak_weight": w,
                               "anchor_gap": ctx.anchors.ceiling_accuracy - ctx.anchors.weak_accuracy})


blend.check_options = check_options
