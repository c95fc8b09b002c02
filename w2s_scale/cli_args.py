"""The argparse pieces every `w2s` command shares: the parser's one-line errors, the config and
launch options, and the types of counted values."""
from __future__ import annotations

import argparse
import math
import sys

from w2s_scale.errors import shorten

EXIT_USER_ERROR = 2  # a user's mistake: one `w2s: error:` line, nothing started
LAUNCHERS = ("none", "torchrun", "deepspeed")


class Parser(argparse.ArgumentParser):
    """argparse with the project's error line: usage, then one `w2s: error:` line, exit 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"w2s: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: a count (ranks, nodes, GPUs, tokens); 0 is not read as "the default"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {shorten(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a share in (0, 1] (model-FLOPs utilisation)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shorten(text)}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


def positive_float(text: str) -> float:
    """argparse type: an amount (GB of memory) that must be above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shorten(text)}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {shorten(text)}")
    return value


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def add_launch_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--nproc and --launcher: how the ranks of a run start (w2s_scale/launching.py); `prefix`
    says where they apply ("local executor: ")."""
    p.add_argument("--nproc", type=positive_int,
                   help=f"{prefix}ranks {'per run' if prefix else 'on this machine'} (default: launch.nproc)")
    p.add_argument("--launcher", choices=list(LAUNCHERS),
                   help=f"{prefix}how to start the ranks (default: launch.launcher)")
