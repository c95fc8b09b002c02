"""docs/configuration.md, generated from the pydantic models of the config.

The comments in config.py are the one description of each field: this module reads them, with
each field's type, default and bounds, and prints one markdown table per section, so the page
cannot drift from the code (tests/test_docs.py compares them). Regenerate with `make docs`.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from w2s_scale import config

Model = type[BaseModel]

HEADER = """# Configuration reference

Generated from the pydantic models in `w2s_scale/config.py` by `make docs`; do not edit by hand
(tests/test_docs.py fails when this page and the code differ). An experiment YAML is an
`ExperimentConfig`, a sweep YAML a `SweepConfig`. Unknown keys are an error. Any field can be set
on the command line with `--set key.path=value`, e.g. `--set train.lr=1e-4`.
"""

# a field's own line at the class body's indent: `name: type = ...  # comment`
FIELD_LINE = re.compile(r"^(?P<name>\w+)\s*:[^#]*(?:#\s?(?P<comment>.*))?$")
BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def sections() -> list[Model]:
    """Every documented model, in the order a config file reads."""
    c = config
    return [c.ExperimentConfig, c.DataConfig, c.ModelConfig, c.LoraConfig, c.LabelTokensConfig,
            c.TrainConfig,
            c.EarlyStoppingConfig, c.GtCurveConfig, c.LossConfig, c.LabelsConfig,
            c.EnsembleMember, c.ProbeConfig, c.ElicitationConfig, c.MethodConfig, c.IsolationConfig, c.TrackingConfig, c.LaunchConfig,
            c.SweepConfig,
            c.SweepModel, c.Resources]


def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines right above its line, then the comment at its end."""
    lines = inspect.getsource(cls).splitlines()[1:]
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    found: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        text = line.strip()
        if not text or len(line) - len(line.lstrip()) != indent:
            above = []  # a blank line, a method body or a continuation ends a comment block
        elif text.startswith("#"):
            above.append(text.lstrip("#").strip())
        else:
            match = FIELD_LINE.match(text)
            if match:
                found[match["name"]] = " ".join(above + [match["comment"] or ""]).strip()
            above = []
    return found


def describe(cls: Model, name: str) -> str:
    if cls.model_fields[name].description:
        return cls.model_fields[name].description
    # an inherited field is described where it is declared
    owner = next(o for o in cls.__mro__ if name in o.__dict__.get("__annotations__", {}))
    return source_comments(owner).get(name, "")


def type_text(tp: Any) -> str:
    # plain text, not a code span, so that a section's name inside it can link to its table
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is Union:
        return " | ".join("None" if a is type(None) else type_text(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def plain(value: Any) -> Any:
    # a list of sections as default shows the keys that say something (no None, [], {})
    if isinstance(value, BaseModel):
        return {k: v for k, v in value.model_dump(mode="json").items() if v not in (None, [], {})}
    return [plain(v) for v in value] if isinstance(value, list) else value


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "section defaults"
    # written as YAML, the way a config file says it (null, true, 5.0e-05, 'off')
    text = yaml.safe_dump(plain(value), default_flow_style=True, sort_keys=False, width=10_000)
    return "`" + text.removesuffix("\n").removesuffix("\n...").strip() + "`"


def bounds_text(info: FieldInfo) -> str:
    return ", ".join(f"{sign} {getattr(m, attr)}" for m in info.metadata
                     for kind, attr, sign in BOUNDS if isinstance(m, kind))


def parent_of(cls: Model, models: list[Model]) -> Model | None:
    # a model built on another documented one (SweepModel on ModelConfig) lists only what it adds
    return next((b for b in cls.__bases__ if b in models), None)


def own_fields(cls: Model, models: list[Model]) -> dict[str, FieldInfo]:
    inherited = getattr(parent_of(cls, models), "model_fields", {})
    return {n: f for n, f in cls.model_fields.items() if n not in inherited}


def used_in(target: Model, models: list[Model]) -> list[str]:
    """`Owner field` for each documented field whose type mentions `target`."""
    def mentions(tp: Any) -> bool:
        return tp is target or any(mentions(a) for a in get_args(tp))
    return [f"[{m.__name__}](#{m.__name__.lower()}) `{name}`" for m in models
            for name, info in own_fields(m, models).items() if mentions(info.annotation)]


def cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def render() -> str:
    models = sections()
    out = [HEADER]
    for cls in models:
        out.append(f"## {cls.__name__}\n")
        if cls.__dict__.get("__doc__"):
            out.append(" ".join(inspect.cleandoc(cls.__doc__).split()) + "\n")
        if used_in(cls, models):
            out.append("Used as: " + ", ".join(used_in(cls, models)) + ".\n")
        parent = parent_of(cls, models)
        if parent is not None:
            out.append(f"Every field of [{parent.__name__}](#{parent.__name__.lower()}), and:\n")
        out.append("| field | type | default | bounds | description |\n|---|---|---|---|---|")
        for name, info in own_fields(cls, models).items():
            row = [f"`{name}`", cell(type_text(info.annotation)), default_text(info),
                   bounds_text(info), cell(describe(cls, name))]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
