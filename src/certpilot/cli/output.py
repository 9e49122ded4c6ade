"""Printing: JSON for --json, Rich tables for people, one-line errors on stderr.

Rich is imported on the first print, not with the command tree (`--help` needs none of it).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def _out() -> Console:
    from rich.console import Console

    # Piped output is read by programs or kept in logs: never cut a value to fit 80 columns.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 400)


@functools.cache
def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)

def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing here yet") -> None:
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    if not rows:
        _out().print(empty)
        return
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        # Text, not markup: a value (a script's output, an error) may hold `[...]`
        table.add_row(*[Text("-" if v is None else str(v)) for v in row])
    _out().print(table)

def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    from rich.markup import escape

    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        shown = "-" if value is None else escape(str(value))
        _out().print(f"[bold]{key.ljust(width)}[/bold]  {shown}", markup=True)

def say(message: str) -> None:
    _out().print(message, markup=False)

def error(message: str) -> None:
    _err().print(f"error: {message}", markup=False)
