"""How options and arguments read in `--help` and usage lines.

Typer shows a value's Python type (`--san <list[str]>`, `--wait <bool>`) and a
required argument as `{name}`. People read the conventions of other command-line
tools better: `--san TEXT`, a flag with no value after it, `NAME`. The root group
rewrites every parameter of the tree once, when Typer builds it.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

_TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "BOOLEAN"}


class CertpilotGroup(TyperGroup):
    """The root command: Typer's group with conventional metavars throughout."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _tidy(self)


def value_name(annotation: Any) -> str:
    """The metavar for a value of this annotation: `TEXT`, `INTEGER`, `PATH`, ...
    (a list's element type, `X | None`'s X)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), str)
        origin = typing.get_origin(annotation)
    if origin is list:
        (annotation,) = typing.get_args(annotation) or (str,)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return _TYPE_NAMES.get(annotation, "TEXT")


def _tidy(command: Any) -> None:
    _tidy_help_option(command)
    for param in getattr(command, "params", ()):
        if isinstance(param, TyperOption):
            _tidy_option(param)
        elif isinstance(param, TyperArgument):
            _tidy_argument(param)
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def _tidy_option(option: TyperOption) -> None:
    if option.metavar is not None:
        return
    if option.is_flag:
        option.metavar = ""  # `--wait`, `--wait / --no-wait`: no value follows
        return
    descriptor = option.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        option.metavar = "|".join(str(getattr(c, "value", c)) for c in descriptor.choices)
    else:
        option.metavar = value_name(descriptor.annotation)


def _tidy_argument(argument: TyperArgument) -> None:
    if argument.metavar is None:
        argument.metavar = (argument.name or "value").upper()
    shown = argument.metavar + ("..." if argument.nargs != 1 else "")
    usage = shown if argument.required else f"[{shown}]"
    # Typer wraps a required argument in braces in the usage line and repeats its Python
    # type beside its name; the conventional usage is the bare name
    argument._usage_display_name = lambda: usage  # type: ignore[method-assign]
    argument.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


def _tidy_help_option(command: Any) -> None:
    """`--help` is made per invocation: tidy it as it is made."""
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if isinstance(option, TyperOption):
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
