"""How options and arguments read in `--help` and usage lines, and how their
values are converted.

Typer shows a value's Python type (`--san <list[str]>`, `--wait <bool>`) and a
required argument as `{name}`. People read the conventions of other command-line
tools better: `--san TEXT`, a flag with no value after it, `NAME`. The root group
rewrites every parameter of the tree once, when Typer builds it.

Typer converts every value through a pydantic TypeAdapter, which costs a command
the import of pydantic (a third of what `certpilot cert list` needs in all). The
values certpilot's commands take are text, paths and numbers: those are
converted here (`PlainValue`), the same way, and anything else stays Typer's.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from typer._coercion import RuntimeParam
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer._click.exceptions import BadParameter

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


_TRUTH = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _boolean(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in _TRUTH:
        return _TRUTH[value.strip().lower()]
    raise ValueError(value)


_CONVERSIONS: dict[Any, tuple[Any, str]] = {
    str: (str, "text"), Path: (Path, "path"), int: (int, "integer"), float: (float, "number"),
    bool: (_boolean, "boolean"),
}


def plain_type(annotation: Any) -> Any | None:
    """`str`, `Path`, `int` or `float` when `annotation` is one of them, `X | None` or
    `list[X]` (`X | None` inside too), else None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return plain_type(args[0]) if len(args) == 1 else None
    if origin is list:
        args = typing.get_args(annotation)
        return plain_type(args[0]) if len(args) == 1 else None
    return annotation if annotation in _CONVERSIONS else None


class PlainValue(RuntimeParam):
    """Converts text from the command line to `str`, `Path`, `int` or `float` (one value
    or each of a repeated option's), as Typer's adapter would, without pydantic."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = plain_type(self.annotation)
        convert, label = _CONVERSIONS[kind]
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        try:
            if kind is int and isinstance(value, str):
                return int(value.strip(), 10)
            return convert(value)
        except (TypeError, ValueError):
            raise BadParameter(f"{value!r} is not a valid {label}", ctx=ctx, param=param) from None


def _tidy(command: Any) -> None:
    _tidy_help_option(command)
    for param in getattr(command, "params", ()):
        if isinstance(param, TyperOption):
            _tidy_option(param)
        elif isinstance(param, TyperArgument):
            _tidy_argument(param)
        _convert_plainly(param)
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def _convert_plainly(param: Any) -> None:
    if isinstance(param, (TyperOption, TyperArgument)) and getattr(param, "_runtime_param", True) is None:
        descriptor = param.type_descriptor
        if not descriptor.is_choice and descriptor.file_annotation is None and plain_type(descriptor.annotation):
            param._runtime_param = PlainValue(parameter_info=descriptor.parameter_info,
                                              annotation=descriptor.annotation)


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
            _convert_plainly(option)
        return option

    command.get_help_option = get_help_option
