"""Printing: JSON for --json, Rich tables for people, one-line errors on stderr."""

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Piped output is read by programs or kept in logs: never cut a value to fit 80 columns.
_console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 400)
_errors = Console(stderr=True, highlight=False, soft_wrap=True)

def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing here yet") -> None:
    rows = list(rows)
    if not rows:
        _console.print(empty)
        return
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        # Text, not markup: a value (a script's output, an error) may hold `[...]`
        table.add_row(*[Text("-" if v is None else str(v)) for v in row])
    _console.print(table)

def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        shown = "-" if value is None else escape(str(value))
        _console.print(f"[bold]{key.ljust(width)}[/bold]  {shown}", markup=True)

def say(message: str) -> None:
    _console.print(message, markup=False)

def error(message: str) -> None:
    _errors.print(f"error: {message}", markup=False)
