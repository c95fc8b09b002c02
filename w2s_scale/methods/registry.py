"""Methods found by name: a built-in one, "package.module:attr" (imported from sys.path, so a
method can live in any folder on PYTHONPATH), or the name of an entry point of the group
`w2s_scale.methods`, which an installed package declares in its metadata:

    [project.entry-points."w2s_scale.methods"]
    my_method = "my_package.methods:my_method"

Each name is looked up the same way on the submitting machine and in every rank of every job,
so a name that cannot be found stops `w2s` before anything trains, in one line naming
`method.name` and the names it knows.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Mapping

from w2s_scale.errors import MethodNotFoundError, MethodOptionsError, shorten
from w2s_scale.methods.builtin import BUILTIN
from w2s_scale.methods.contract import Method

ENTRY_POINT_GROUP = "w2s_scale.methods"


def known_names() -> list[str]:
    """The built-in names, then the entry points' names (sorted), each once."""
    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN))
    return [*BUILTIN, *installed]


def find_method(name: str, where: str = "method.name") -> Method:
    """The method a config names (MethodNotFoundError in one line when there is none)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        method = _import(name, where)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise MethodNotFoundError(
                f"{where}: unknown method {shorten(name)}; known: {', '.join(known_names())}; or "
                f"name one as 'package.module:function' (its folder on PYTHONPATH), or install a "
                f"package with an entry point of the group {ENTRY_POINT_GROUP}")
        try:
            method = found[0].load()
        except Exception as err:  # noqa: BLE001 - the user's code may raise anything on import
            raise MethodNotFoundError(f"{where}: the entry point {name} = {found[0].value} cannot "
                                      f"be loaded ({_why(err)})") from None
    if not callable(method):
        raise MethodNotFoundError(f"{where}: {shorten(name)} is a {type(method).__name__}, not a "
                                  f"function taking a MethodContext; name the function itself")
    return method


def check_options(method: Method, options: Mapping[str, Any], where: str = "method.options") -> None:
    """The method's own check of its options, if it has one (`check_options(options)` raising
    ValueError), as a one-line MethodOptionsError."""
    check = getattr(method, "check_options", None)
    if check is None:
        return
    try:
        check(dict(options))
    except ValueError as err:
        raise MethodOptionsError(f"{where}: {err}") from None


def _import(name: str, where: str) -> Any:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise MethodNotFoundError(f"{where}: {shorten(name)} is not 'package.module:function'; "
                                  f"write both parts, e.g. my_methods.blend:blend")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - ImportError, or whatever the module raises
        raise MethodNotFoundError(f"{where}: cannot import {module_name} ({_why(err)}); put the "
                                  f"folder that holds it on PYTHONPATH, or install its package") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MethodNotFoundError(f"{where}: {module_name} has no attribute {attr!r}; name "
                                      f"the method function as {module_name}:FUNCTION")
        obj = getattr(obj, part)
    return obj


def _why(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__
