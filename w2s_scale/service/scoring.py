"""A submission scored: its predictions checked against the ground truth's ids and shape, then
accuracy, AUC and PGR computed with the project's own functions (metrics.accuracy, roc_auc, pgr
and subsets.subset_metrics: the ones pipeline.execute writes into a run's metrics.json), so a
submission and an in-process run of the same predictions get the same numbers.

What comes back is aggregate only: scores over the whole split and over each test subset, never
anything per example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from w2s_scale.errors import UserError, shorten
from w2s_scale.metrics import accuracy, pgr, roc_auc
from w2s_scale.service.store import SPLITS, Baseline, LabelStore, Part
from w2s_scale.subsets import subset_metrics

SUM_TOLERANCE = 1e-3  # class probabilities rounded to 6 decimals (predictions.py) sum to 1 +- K*5e-7
SHOWN_IDS = 3         # ids named in an error about ids


class SubmissionError(UserError):
    """A submission the service refuses; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """What a submission is scored against: a split of one (dataset, seed), and the baseline
    pair whose seed means anchor its PGR."""
    dataset: str
    seed: int
    split: str
    part: Part
    num_classes: int
    baseline: Optional[Baseline]


def _choose(field: str, given: Any, choices: Sequence, what: str) -> Any:
    if given is None:
        if len(choices) == 1:
            return choices[0]
        raise SubmissionError(f"{field}: this store holds several {what} ({_listed(choices)}); "
                              f"name one")
    if given not in choices:
        raise SubmissionError(f"{field}: {shorten(given)} is not in this store; it holds "
                              f"{what} {_listed(choices)}")
    return given


def _listed(values: Sequence) -> str:
    shown = ", ".join(str(v) for v in list(values)[:8])
    return f"[{shown}{', ...' if len(values) > 8 else ''}]"


def resolve(store: LabelStore, split: str, dataset: Optional[str], seed: Optional[int],
            weak: Optional[str], strong: Optional[str]) -> Target:
    """The target a submission names; a field may be left out where the store has one choice."""
    if split not in SPLITS:
        raise SubmissionError(f"split: {shorten(split)} is not one of {list(SPLITS)}")
    dataset = _choose("dataset", dataset, store.datasets, "datasets")
    seed = _choose("seed", seed, store.seeds(dataset), f"seeds of {dataset}")
    part = store.parts.get((dataset, seed, split))
    if part is None:
        raise SubmissionError(f"split: {dataset} seed {seed} has no {split} split in this store")
    pairs = store.pairs(dataset)
    weaks = sorted({b.weak for b in pairs})
    weak = _choose("weak", weak, weaks, f"weak models of {dataset}") if pairs else None
    strongs = sorted({b.strong for b in pairs if b.weak == weak})
    strong = _choose("strong", strong, strongs, f"strong models taught by {weak}") if pairs else None
    baseline = next((b for b in pairs if (b.weak, b.strong) == (weak, strong)), None)
    return Target(dataset, seed, split, part, store.classes[dataset], baseline)


def probabilities(predictions: Mapping[str, Any], part: Part, k: int) -> np.ndarray:
    """The submission's class probabilities [N, K] in the order of the part's ids. A value is
    p(class 1) (binary tasks) or a list of the K class probabilities; every id of the split must
    have one and no other id may."""
    if not isinstance(predictions, Mapping) or not predictions:
        raise SubmissionError("predictions: give an object {example id: probability}, one entry "
                              "per example of the split")
    unknown = [i for i in predictions if i not in part.position]
    if unknown:
        raise SubmissionError(f"predictions: {len(unknown)} id(s) are not in this split "
                              f"(e.g. {_listed([shorten(i) for i in unknown[:SHOWN_IDS]])}); "
                              f"submit the split's own ids only (and check dataset, seed, split)")
    if len(predictions) < len(part.ids):
        missing = [i for i in part.ids if i not in predictions]
        raise SubmissionError(f"predictions: {len(missing)} of the split's {len(part.ids)} ids "
                              f"have no prediction (e.g. "
                              f"{_listed([shorten(i) for i in missing[:SHOWN_IDS]])}); submit "
                              f"one for every example")
    probs = np.empty((len(part.ids), k), dtype=np.float64)
    for ex_id, value in predictions.items():
        probs[part.position[ex_id]] = _one(ex_id, value, k)
    return probs


def _one(ex_id: str, value: Any, k: int) -> np.ndarray:
    where = f"predictions[{shorten(ex_id)}]"
    if _is_number(value):
        if k != 2:
            raise SubmissionError(f"{where}: one number, but this task has {k} classes; give "
                                  f"the list of its {k} class probabilities")
        _check_probability(where, value)
        return np.array([1.0 - float(value), float(value)])
    if not isinstance(value, list) or len(value) != k or not all(_is_number(v) for v in value):
        raise SubmissionError(f"{where}: {shorten(value)} is not a probability; give "
                              f"{'p(class 1) or ' if k == 2 else ''}a list of {k} class "
                              f"probabilities")
    for v in value:
        _check_probability(where, v)
    if abs(sum(value) - 1.0) > SUM_TOLERANCE:
        raise SubmissionError(f"{where}: the class probabilities sum to {sum(value):.6g}, not 1; "
                              f"submit softmax outputs")
    return np.asarray(value, dtype=np.float64)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_probability(where: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SubmissionError(f"{where}: {value!r} is not a probability in [0, 1]; submit "
                              f"probabilities, not logits")


def scores(ids: Sequence[str], labels: np.ndarray, probs: np.ndarray,
           subsets: Mapping[str, str]) -> dict[str, Any]:
    """Accuracy and AUC over the examples, and per test subset: the same functions and inputs
    as a run's metrics.json (pipeline.execute), shaped {accuracy, auc, n, subsets: {name:
    {accuracy, auc, n}}}."""
    per_subset = subset_metrics(ids, labels, probs, subsets) if subsets else {}
    return {"accuracy": accuracy(labels, probs), "auc": roc_auc(labels, probs), "n": len(ids),
            "subsets": {name: {"accuracy": m["accuracy"], "auc": m["auc"], "n": m["n_test"]}
                        for name, m in per_subset.items()}}


def with_pgr(scored: Mapping[str, Any], baseline: Optional[Baseline]) -> dict[str, Any]:
    """The scores with PGR on accuracy and on AUC against the baseline's seed means (overall and
    per subset); None where undefined (no baseline, no gap, or a score missing)."""
    out = {**scored, "subsets": {}}
    out.update(_pgrs(scored, baseline.means() if baseline else None))
    for name, sub in scored["subsets"].items():
        out["subsets"][name] = {**sub, **_pgrs(sub, baseline.means(name) if baseline else None)}
    return out


def _pgrs(scored: Mapping[str, Any], means: Optional[Mapping[str, Optional[float]]]) -> dict:
    def one(metric: str, value: Optional[float]) -> Optional[float]:
        weak, ceiling = (means or {}).get(f"weak_{metric}"), (means or {}).get(f"ceiling_{metric}")
        if weak is None or ceiling is None or value is None:
            return None
        return pgr(weak, ceiling, value)
    return {"pgr": one("acc", scored["accuracy"]), "pgr_auc": one("auc", scored["auc"])}


def score_submission(target: Target, predictions: Mapping[str, Any]) -> dict[str, Any]:
    """Everything /submit answers about the predictions: scores, and PGR on test (the baselines
    are test scores; on B there is no ceiling to anchor it, so PGR is left out there)."""
    part = target.part
    probs = probabilities(predictions, part, target.num_classes)
    scored = scores(part.ids, part.labels, probs, part.subsets)
    return with_pgr(scored, target.baseline if target.split == "test" else None)
