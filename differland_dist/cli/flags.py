"""The flags every command spells the same way (docs/cli.md's grammar).

- Lists: ``--flag A B C`` or ``--flag A,B,C`` (both, and mixtures, give ``[A, B, C]``). Put a
  list flag after the positional arguments, or use commas, so it does not take them.
- ``--executor ray|local``: Ray tasks/actors, or this process.
- ``--address ADDR``: the Ray cluster to join (``local``, ``auto``, ``ray://host:port``).
- ``--progress/--no-progress``: progress lines (and bars where the command has them).
- ``--json``: the command's result as one JSON object on stdout (logs stay on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

EXECUTORS = ("ray", "local")


def split_list(values: str | Sequence[str] | None) -> list[str]:
    """``["a,b", "c"]`` or ``"a, b,c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for v in values for item in str(v).split(",") if item.strip()]


class _ListAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        items = split_list(values)
        if not items:
            parser.error(f"{option_string}: expected at least one item")
        setattr(namespace, self.dest, items)


class _DeprecatedAlias(argparse.Action):
    """A flag kept for old command lines: sets ``dest`` to ``const`` and says what replaced it."""

    def __init__(self, option_strings, dest, const, replacement: str, **kw):
        super().__init__(option_strings, dest, nargs=0, const=const, **kw)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, self.const)


def add_list(p: argparse.ArgumentParser, flag: str, *, default, metavar: str, help: str,
             dest: str | None = None) -> None:
    """A list flag taking space- and/or comma-separated items."""
    kw = {"dest": dest} if dest else {}
    p.add_argument(flag, nargs="+", action=_ListAction, default=default, metavar=metavar,
                   help=f"{help}; space- or comma-separated", **kw)


def add_executor(p: argparse.ArgumentParser, *, default: str = "ray", what: str) -> None:
    p.add_argument("--executor", choices=EXECUTORS, default=default,
                   help=f"{what}: ray (tasks on a Ray cluster) or local (in this process); "
                        f"default {default}")


def add_deprecated(p: argparse.ArgumentParser, flag: str, *, dest: str, const, replacement: str) -> None:
    p.add_argument(flag, dest=dest, action=_DeprecatedAlias, const=const, replacement=replacement,
                   help=f"deprecated: {replacement}")


def add_address(p: argparse.ArgumentParser, *, default_text: str) -> None:
    p.add_argument("--address", default=None, metavar="ADDR",
                   help=f"Ray cluster to join: local, auto or ray://host:port (default: {default_text})")


def add_progress(p: argparse.ArgumentParser, *, what: str = "progress lines in the log",
                 aliases: Sequence[tuple[str, bool]] = ()) -> None:
    """``--progress/--no-progress`` (default on); ``aliases``: (old flag, value) pairs."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help=f"show {what} (default: --progress)")
    for flag, value in aliases:
        add_deprecated(p, flag, dest="progress", const=value,
                       replacement="--progress" if value else "--no-progress")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (logs stay on stderr)")
