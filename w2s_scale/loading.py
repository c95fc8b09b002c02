"""Loading a configuration: a YAML file, `--set key=value` overrides, then every check that needs
more than the config's own fields (the loss and dataset registries, preflight's settings checks).

Every entry point that reads a user's config goes through `load_config` (an experiment) or
`load_sweep` (a sweep, or an experiment read as the sweep of its two models), so `w2s experiment`,
`run`, `sweep`, `summary`, `status`, `report` and `plan` refuse the same mistakes with the same
one line. The typed sections themselves are w2s_scale/config.py.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from w2s_scale.config import (DataConfig, ExperimentConfig, LossConfig, MethodConfig, SweepConfig,
                              experiment_for, from_experiment, method_field, one_line)
from w2s_scale.data.images import IMAGE_DATASETS
from w2s_scale.ccs import contrast_spec
from w2s_scale.data.sources import DATASETS
from w2s_scale.errors import ConfigError, ConfigFileError, OverrideError, shorten
from w2s_scale.integrity import text_hash
from w2s_scale.losses import LOSSES, check_params
from w2s_scale.methods.registry import check_options, find_method
from w2s_scale.preflight import check_settings


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 1e-4); values are read as YAML."""
    shown = shorten(text)
    if "=" not in text:
        raise OverrideError(f"override {shown}: write it as key.path=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise OverrideError(f"override {shown}: the key before '=' has an empty part; write "
                            f"key.path=value, e.g. train.lr=1e-4")
    if not raw.strip():
        return path, ""
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise OverrideError(f"override {shown}: the value is not valid YAML "
                            f"({str(err).splitlines()[0]}); quote it as YAML text, e.g. --set '{key}=\"...\"'") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node: Any = raw
        for depth, part in enumerate(path):
            where = ".".join(path[:depth + 1])
            last = depth == len(path) - 1
            if isinstance(node, list):  # losses.0.params.radius=0.2
                if not part.isdigit() or int(part) >= len(node):
                    raise OverrideError(f"override {shorten(text)}: {where} is not an index of "
                                        f"the {len(node)}-entry list {'.'.join(path[:depth])}")
                part = int(part)
            elif not isinstance(node, dict):
                raise OverrideError(f"override {shorten(text)}: {'.'.join(path[:depth])} is a "
                                    f"value, not a section; set it directly")
            if last:
                current = node[part] if isinstance(node, list) else node.get(part)
                if isinstance(current, dict) and not isinstance(value, dict):
                    raise OverrideError(f"override {shorten(text)} would replace the whole section "
                                        f"{where} with {shorten(value)}; set a field inside it, "
                                        f"e.g. {where}.FIELD=VALUE")
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


# executors.snapshot: results/<name>/sweep/config.<first 12 hex of its SHA-256>.yaml
SNAPSHOT_NAME = re.compile(r"config\.([0-9a-f]{12})\.yaml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping of sections; every way it can fail is one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigFileError(f"config file {path} does not exist; pass an existing YAML file")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:3]
        hint = f", e.g. {path / inside[0]}" if inside else ""
        raise ConfigFileError(f"config file {path} is a folder; pass the YAML file itself{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"config file {path} is not a text file (not UTF-8); pass the "
                              f"experiment's YAML file") from None
    except OSError as err:
        raise ConfigFileError(f"config file {path} cannot be read ({err.strerror}); check the "
                              f"path and its permissions") from None
    snapshot = SNAPSHOT_NAME.fullmatch(path.name)
    if snapshot and path.parent.name == "sweep" and text_hash(text) != snapshot.group(1):
        raise ConfigFileError(f"config file {path} is a sweep's snapshot that changed since it was "
                              f"written (its name is the hash of its content); run `w2s sweep -c "
                              f"YOUR_CONFIG.yaml` again to write it afresh")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config file {path} is not valid YAML: "
                              f"{str(err).splitlines()[0]}") from None
    if raw is None:
        raise ConfigFileError(f"config file {path} is empty; write the experiment's sections "
                              f"(name, data, weak, strong, ...)")
    if not isinstance(raw, dict):
        raise ConfigFileError(f"config file {path}: the top level is a {type(raw).__name__}, not a "
                              f"mapping of sections (name:, data:, weak:, ...)")
    return raw


def check_registries(cfg: ExperimentConfig) -> None:
    """The loss names and parameters, and the dataset, against their registries."""
    for i, loss in enumerate(cfg.losses):
        check_loss(loss, f"losses.{i}")
    if cfg.data.dataset not in DATASETS and cfg.data.dataset not in IMAGE_DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {shorten(cfg.data.dataset)}; "
                          f"choose one of {sorted(DATASETS) + sorted(IMAGE_DATASETS)}")
    for i, entry in enumerate(cfg.labels):  # CCS needs two answers to contrast (w2s_scale/ccs.py)
        if entry.source == "probe" and entry.probe_or_default.kind == "ccs":
            contrast_spec(cfg.strong, cfg.data, where=f"labels.{i}.probe.kind")


def check_loss(loss: LossConfig, where: str) -> None:
    if loss.name not in LOSSES:
        raise ConfigError(f"{where}.name: unknown loss {shorten(loss.name)}; "
                          f"choose one of {sorted(LOSSES)}")
    unknown = set(loss.params) - set(LOSSES[loss.name].defaults)
    if unknown:
        raise ConfigError(f"{where}.params: {sorted(unknown)} not accepted by "
                          f"{loss.name}; accepted: {sorted(LOSSES[loss.name].defaults)}")
    try:
        check_params(loss.name, loss.params)
    except ValueError as err:
        raise ConfigError(f"{where}.params: {err}") from None


def check_methods(methods: list[MethodConfig], datasets: list[DataConfig], nproc: int = 1) -> None:
    """Each method can be found (built-in, module path or entry point) and accepts its
    options, its loss is a known one, and the data are texts (w2s_scale/methods/); an isolated
    one runs on Linux, as one rank (docs/isolation.md#the-isolated-mode)."""
    for i, method in enumerate(methods):
        check_options(find_method(method.name, method_field(methods, i, "name")), method.options,
                      method_field(methods, i, "options"))
        check_loss(method.loss, method_field(methods, i, "loss"))
        if method.isolated is not None and nproc > 1:
            raise ConfigError(f"{method_field(methods, i, 'isolated')}: an isolated method runs as "
                              f"one process, and launch.nproc is {nproc}; set launch.nproc: 1, or "
                              f"remove `isolated`")
        if method.isolated is not None and not sys.platform.startswith("linux"):
            raise ConfigError(f"{method_field(methods, i, 'isolated')}: isolated methods need Linux "
                              f"namespaces, and this is {sys.platform}; run on Linux, or remove "
                              f"`isolated`")
    for data in datasets if methods else []:
        if data.dataset in IMAGE_DATASETS:
            raise ConfigError(f"method: methods take text datasets, and {data.dataset} is images; "
                              f"remove `method` or run it on a text dataset")


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                raw: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a YAML file (or a dict), apply `key=value` overrides, validate."""
    if raw is None:
        raw = read_config_file(path)
    if not isinstance(raw, dict):
        raise ConfigFileError(f"config file {path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, list(overrides))
    try:
        cfg = ExperimentConfig(**raw)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None
    check_registries(cfg)
    check_methods(cfg.method, [cfg.data], cfg.launch.nproc)
    check_settings(cfg)
    return cfg


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """A sweep YAML (or an experiment YAML, read as the sweep of its two models)."""
    raw = read_config_file(path)
    raw = apply_overrides(raw, list(overrides))
    if "models" not in raw and ("weak" in raw or "strong" in raw):
        return from_experiment(load_config(raw=raw))
    try:
        cfg = SweepConfig(**raw)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None
    for i in range(len(cfg.datasets)):
        check_registries(experiment_for(cfg, i))
    check_methods(cfg.method, cfg.datasets, cfg.launch.nproc)
    check_settings(cfg)
    return cfg
