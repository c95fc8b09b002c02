"""The settings a sweep (or experiment) will actually run with, resolved: catalogue defaults,
the experiment's `train` section and each model's overrides merged, loss parameters with their
defaults. `w2s experiment --dry-run` and `w2s sweep --dry-run` print them; tests check them field
by field (configs/reference/ claims the reference's settings, so this is where that is visible).
Nothing here loads a model or touches the hub.
"""
from __future__ import annotations

from typing import Any

from w2s_scale.catalogue import lookup
from w2s_scale.config import ModelConfig, TrainConfig, experiment_for
from w2s_scale.losses import LOSSES
from w2s_scale.models import CAUSAL_TYPES
from w2s_scale.planning import plan_gt

# the settings printed per model, in this order (TrainConfig and ModelConfig field names)
MODEL_FIELDS = ("dtype", "head", "dropout", "linear_probe", "lora", "gradient_checkpointing")
TRAIN_FIELDS = ("optimizer", "lr", "weight_decay", "batch_size", "micro_batch_size", "epochs",
                "schedule", "warmup_frac", "max_grad_norm", "length_grouping", "zero_stage")
DATA_FIELDS = ("n_train", "n_test", "max_length", "overlong", "balance")


def head_of(model: ModelConfig) -> str:
    """`auto` resolved from the catalogue's architecture where the model is in it (no download);
    else left as `auto` (resolved from the model's own config when a run starts)."""
    if model.head != "auto":
        return model.head
    entry = lookup(model.name)
    if entry is None:
        return "auto"
    return "last_token" if entry.arch.model_type in CAUSAL_TYPES else "pooled"


def optimizer_of(train: TrainConfig, offload: bool = False) -> str:
    # the engine's optimizer (engine.build_engine); decoupled decay 0 is Adam exactly
    name = "CPUAdam(adamw)" if offload else "AdamW"
    return f"{name} wd {train.weight_decay:g}" + (" (= Adam)" if not train.weight_decay else "")


def model_settings(experiment, model: ModelConfig) -> dict[str, Any]:
    train = plan_gt(experiment, model, experiment.seeds[0]).train  # as its runs resolve it
    row: dict[str, Any] = {"model": model.short_name, "name": model.name}
    row.update(dtype=model.dtype, head=head_of(model), dropout=model.dropout,
               linear_probe=model.linear_probe, lora=model.lora.enabled,
               gradient_checkpointing=model.gradient_checkpointing)
    entry = lookup(model.name)  # what the model is, where the catalogue knows it (else None)
    row.update(family=entry.family if entry else None, chat=entry.chat if entry else None)
    row["optimizer"] = optimizer_of(train, train.offload)
    row.update({k: getattr(train, k) for k in TRAIN_FIELDS if k != "optimizer"})
    return row


def loss_settings(losses) -> list[dict[str, Any]]:
    return [{"loss": loss.tag, "name": loss.name,
             "params": {**LOSSES[loss.name].defaults, **loss.params}} for loss in losses]


def resolved_settings(sweep) -> dict[str, Any]:
    """{"datasets": [...], "models": {dataset: [row per model]}, "losses": [...],
    "seeds": [...], "self_transfer": bool} of a SweepConfig (an experiment is read as one)."""
    out: dict[str, Any] = {"seeds": list(sweep.seeds), "self_transfer": sweep.self_transfer,
                           "datasets": [], "models": {}, "losses": loss_settings(sweep.losses),
                           "labels": [entry.model_dump(mode="json", exclude_unset=True) or {"source": "weak"}
                                      for entry in sweep.labels]}
    for i, data in enumerate(sweep.datasets):
        exp = experiment_for(sweep, i)
        out["datasets"].append({"dataset": data.dataset, **{k: getattr(data, k) for k in DATA_FIELDS}})
        out["models"][data.dataset] = [{**model_settings(exp, m.model_config_only()), "role": m.role}
                                       for m in sweep.models]
    return out


def format_settings(settings: dict[str, Any]) -> str:
    """The resolved settings as text: data per dataset, a settings x models table, the losses."""
    lines = ["resolved settings:"]
    lines.append(f"  seeds {settings['seeds']}; transfer pairs: every weak "
                 f"{'<=' if settings['self_transfer'] else '<'} strong")
    for data in settings["datasets"]:
        lines.append("  data " + ", ".join(f"{k} {v}" for k, v in data.items() if k != "dataset")
                     + f"  [{data['dataset']}]")
    # models are resolved per dataset, identically unless a dataset changes train settings
    rows = next(iter(settings["models"].values()))
    header = ["setting"] + [r["model"] for r in rows]
    table = [header] + [[key] + [_text(r[key]) for r in rows]
                        for key in ("name",) + MODEL_FIELDS + TRAIN_FIELDS]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    lines += ["  " + line for line in confounds(rows)]
    for loss in settings["losses"]:
        params = ", ".join(f"{k} {_text(v)}" for k, v in loss["params"].items())
        lines.append(f"  loss {loss['loss']}: {loss['name']}({params})")
    for entry in settings.get("labels", []):  # where transfer runs' labels come from (labels.py)
        lines.append(f"  labels: {entry}")
    return "\n".join(lines)


# how a model is trained; a ladder whose models differ in one of these no longer varies size alone
METHOD_FIELDS = ("lora", "linear_probe", "dtype", "head")
# what a model is (catalogue family, instruct/chat weights): a change is a confound of its own
MODEL_KIND_FIELDS = ("family", "chat")


def confounds(rows: list[dict[str, Any]]) -> list[str]:
    """One line per place where the ladder (models small -> large) changes its training method,
    or, between students, the kind of model (family, chat weights), so that PGR against model
    size also measures that change."""
    out = []
    rows = [r for r in rows if r.get("role") != "weak"]  # a supervisor alone is no rung of PGR vs size
    # the students, small -> large: the first model of a ladder only teaches (unless role: strong)
    students = {id(r) for i, r in enumerate(rows) if i or r.get("role") == "strong"}
    for prev, row in zip(rows, rows[1:]):
        for key in METHOD_FIELDS:
            if prev[key] != row[key]:
                lr = (f" (lr {_text(prev['lr'])} -> {_text(row['lr'])})"
                      if prev["lr"] != row["lr"] else "")
                out.append(f"confound: {key} {_text(prev[key])} -> {_text(row[key])} from "
                           f"{prev['model']} to {row['model']}{lr}: PGR against size mixes model "
                           f"size with the training method there")
        for key in MODEL_KIND_FIELDS:
            # only between catalogue models: an unknown one has no family to compare
            if (id(prev) in students and None not in (prev.get(key), row.get(key))
                    and prev[key] != row[key]):
                out.append(f"confound: {key} {_text(prev[key])} -> {_text(row[key])} from "
                           f"{prev['model']} to {row['model']}: PGR against size mixes model "
                           f"size with a change of model there")
    return out


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
