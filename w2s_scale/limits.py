"""Limits that would otherwise fail (or silently mislead) hours into a sweep, checked from the
plans before the first step: the method lists, which models a run compares, their sizes and
folders, and every method's sizes against the data it will get.

- Method lists: `labels` empty (no transfer run, like an empty `losses`) or listing one source
  twice; a sweep whose roles leave no (weak, strong) pair.
- Models: the same model (same resolved name or folder, same settings) under two labels would
  be trained and compared with itself under two names; two different models whose runs share a
  folder name are refused by planning (planning.plan_experiment, sweep.plan_sweep).
- Sizes: a weak model with more parameters than a student it teaches, unless
  `allow_larger_weak: true`; parameters are counted on the meta device (preflight builds every
  model there anyway), so config_overrides count.
- Data: a probe's k against B, a filter's kept fraction, early stopping's and the ground-truth
  curve's held-out slices and the batch size against what is left of B (or of A for gt_n_train).

Each cause is one error naming the field and the fix (w2s_scale/errors.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from w2s_scale.catalogue import lookup
from w2s_scale.config import DataConfig, LabelsConfig, ModelConfig, ProbeConfig, label_models
from w2s_scale.errors import ConfigError, TooFewExamplesError, shorten
from w2s_scale.models import resolve_name
from w2s_scale.planning import RunPlan
from w2s_scale.selection import held_out_sizes
from w2s_scale.weight_files import check_folder


class MethodListError(ConfigError):
    """An empty or repeated method list (labels), or a sweep with no pair to transfer between."""


class SameModelError(ConfigError):
    """One model under two labels, so a run would compare it with itself under two names."""


class ModelSizeError(ConfigError):
    """A weak model larger than the student it teaches (without allow_larger_weak)."""


# --- stage 1: the settings alone -------------------------------------------------------------------

def check_method_lists(cfg: Any) -> None:
    if not cfg.labels:
        raise MethodListError("labels: empty, so no transfer run would be trained and the summary "
                              "would have no PGR; list at least one source, e.g. labels: [weak]")
    dumps = [entry.model_dump_json() for entry in cfg.labels]
    for i, dump in enumerate(dumps):
        if dumps.index(dump) != i:
            raise MethodListError(f"labels.{i}: listed twice (as labels.{dumps.index(dump)} too); "
                                  f"list each label source once")
    if hasattr(cfg, "models"):
        roles = [m.role for m in cfg.models]
        teachers = [i for i, r in enumerate(roles) if r != "strong"]
        pairs = [(w, s) for w in teachers for s in range(len(roles))
                 if roles[s] != "weak" and (s > w or (s == w and cfg.self_transfer and roles[w] == "both"))]
        if not pairs:
            raise MethodListError(f"models: no model teaches a later one (roles {roles}, "
                                  f"self_transfer {cfg.self_transfer}), so no transfer run would be "
                                  f"trained; list weak models before the students they teach")


def identity(model: ModelConfig) -> str:
    """What makes two model sections the same model: the resolved name or folder and every
    setting, but not the label."""
    name = model.name  # an offline: asset is named as is (resolving it may build it)
    if not name.startswith("offline:"):
        entry = lookup(name)
        name = entry.hf_id if entry is not None else name
        if Path(name).exists():
            name = str(Path(name).resolve())
    keep = model.model_dump(mode="json", exclude={"label", "resources", "role"})
    return repr((name, sorted((k, repr(v)) for k, v in keep.items() if k != "name")))


def check_same_model(cfg: Any) -> None:
    """The same model with the same settings under two labels."""
    if hasattr(cfg, "models"):
        sections = [(f"models.{i}", m) for i, m in enumerate(cfg.models)]
    else:
        sections = [("weak", cfg.weak), ("strong", cfg.strong)] + label_models(cfg)
    seen: dict[str, tuple[str, ModelConfig]] = {}
    for where, model in sections:
        key = identity(model)
        if key in seen and seen[key][1].short_name != model.short_name:
            first_where, first = seen[key]
            raise SameModelError(f"{where}: the same model as {first_where} ({shorten(model.name)}, "
                                 f"same settings) under another label ({first.short_name} / "
                                 f"{model.short_name}), so it would be trained twice and compared "
                                 f"with itself under two names; use one section, or change a setting")
        seen.setdefault(key, (where, model))


# --- stage 2: what the runs will open ---------------------------------------------------------------

def check_weights(where: str, model: ModelConfig) -> None:
    """A pretrained model from a local folder (or an offline asset): every weight file whole."""
    if model.init != "pretrained":
        return
    folder = Path(resolve_name(model.name))
    if folder.is_dir():
        check_folder(folder, where)


def check_sizes(plans: list[RunPlan], n_params: dict[str, int], allowed: bool,
                where: Callable[[ModelConfig], str]) -> None:
    """Each transfer run's weak model is no larger than its student (parameters by identity)."""
    if allowed:
        return
    for plan in (p for p in plans if p.kind == "transfer" and p.weak is not None):
        weak, strong = plan.weak.model, plan.model
        w, s = n_params.get(identity(weak)), n_params.get(identity(strong))
        if w is not None and s is not None and w > s:
            raise ModelSizeError(f"{where(weak)}: {weak.short_name} ({w / 1e6:,.1f}M parameters) "
                                 f"would teach the smaller {strong.short_name} ({s / 1e6:,.1f}M); "
                                 f"list models small -> large, or set allow_larger_weak: true if "
                                 f"that is meant")


def check_method_sizes(plans: list[RunPlan], data: DataConfig, data_where: str,
                       where: Callable[[ModelConfig], str]) -> None:
    """Every method's sizes against the planned sizes of A and B (over-long documents dropped
    later are _check_data's)."""
    n_a, n_b = data.a_b_sizes()
    for plan in plans:
        field = f"{where(plan.model)}.train"
        if plan.kind == "gt" and plan.train.gt_n_train and plan.train.gt_n_train < plan.train.batch_size:
            raise TooFewExamplesError(f"{field}.batch_size: {plan.train.batch_size} is larger than "
                                      f"the {plan.train.gt_n_train} documents of gt_n_train; lower "
                                      f"batch_size or raise gt_n_train")
        if plan.kind == "labels" and isinstance(plan.stage, ProbeConfig):
            _check_probe(plan.stage, n_b, data_where)
        if plan.kind != "transfer":
            continue
        n = n_b
        stage = plan.source.stage if plan.source is not None and plan.source.kind == "labels" else None
        if isinstance(stage, ProbeConfig) and stage.mode == "filter":
            n -= int(stage.contamination * n_b)
        if isinstance(stage, LabelsConfig) and stage.source == "confident" and stage.keep_fraction:
            n = max(1, int(stage.keep_fraction * n_b + 1e-9))  # labels.confident_keep
        n_val, n_curve = held_out_sizes(n, plan.train, field)
        left = n - n_val - n_curve
        if left < plan.train.batch_size:
            held = f", {n_val + n_curve} held out for early stopping / the gt curve" if n_val + n_curve else ""
            kept = f" after the {'confidence' if isinstance(stage, LabelsConfig) else 'probe'} filter" if n != n_b else ""
            raise TooFewExamplesError(f"{field}.batch_size: {plan.train.batch_size} is larger than "
                                      f"the {left} examples of B left to train {plan.name} on "
                                      f"({n} of {n_b}{kept}{held}); lower batch_size or use more data")


def _check_probe(probe: ProbeConfig, n_b: int, data_where: str) -> None:
    if probe.kind in ("knn", "topo") and probe.k >= n_b:
        raise ConfigError(f"labels.probe.k: {probe.k} neighbours, but B has {n_b} examples "
                          f"({data_where}), so every example's neighbours would be all of B; "
                          f"choose k below {n_b}")
    if probe.mode == "filter":
        dropped = int(probe.contamination * n_b)
        if dropped < 1:
            raise ConfigError(f"labels.probe.contamination: {probe.contamination:g} of B's {n_b} "
                              f"examples drops none, so the filter does nothing; raise it (or "
                              f"data.n_train)")


def count_parameters(backbone) -> Optional[int]:
    try:
        return sum(p.numel() for p in backbone.parameters())
    except Exception:  # noqa: BLE001 - a model built on meta that cannot count: no check
        return None
