"""The certificate list read straight through the standard library's `sqlite3`.

`certpilot cert list` is the command people type most, and on SQLite most of its
time went into importing SQLAlchemy, pydantic and the services it does not need
for one SELECT. This module reads the same columns the store's `list_certificates`
gives a table (name, profile, phase, served revision, its validity, failures, the
profile's warning days) read-only, with nothing imported beyond the standard
library and the pure policy.

It answers None whenever it cannot be sure to say what the store would: no such
file, or a schema it does not know (an old or newer database). The caller then
takes the ordinary path, which also gives the ordinary errors.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from certpilot.domain.model import DEFAULT_WARNING_DAYS

_QUERY = """
SELECT c.name, p.name, s.phase, r.number, r.not_before, r.not_after, s.failures, p.warning_days
FROM certificates AS c
JOIN profiles AS p ON p.id = c.profile_id
JOIN certificate_status AS s ON s.certificate_id = c.id
LEFT JOIN revisions AS r ON r.id = s.current_revision_id
ORDER BY c.name
"""


@dataclass(frozen=True)
class ListedLine:
    name: str
    profile: str
    phase: str
    revision: int | None
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    failures: int
    warning_days: tuple[int, ...]


def _utc(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def read_lines(database: Path) -> list[ListedLine] | None:
    """Every certificate of the SQLite database at `database`, ordered by name, or None
    when this reader cannot answer for it (see the module docstring)."""
    if not database.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{quote(str(database.resolve()))}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN DEFERRED")  # one snapshot, like the store's read-only transactions
        rows = conn.execute(_QUERY).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    try:
        return [
            ListedLine(name, profile, phase, number, _utc(nb), _utc(na), int(failures),
                       tuple(json.loads(warning) if warning is not None else DEFAULT_WARNING_DAYS))
            for name, profile, phase, number, nb, na, failures, warning in rows
        ]
    except (TypeError, ValueError):
        return None
