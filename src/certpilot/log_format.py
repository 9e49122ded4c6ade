"""One log record, one line: what a message carries from outside (a script's error, a
name) cannot start a line of its own that looks like another record."""

from __future__ import annotations

import logging


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters shown escaped (`\\n`, `\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


class OneLineFormatter(logging.Formatter):
    """Escapes the message; a traceback, added after it, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = one_line(record.message)
        return super().formatMessage(record)
