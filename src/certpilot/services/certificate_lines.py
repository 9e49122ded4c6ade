"""The certificate list as `certpilot cert list` prints it, without opening an App.

On SQLite the lines come from `store.sqlite_listing` (the standard library's sqlite3,
read-only), so listing does not import SQLAlchemy, pydantic or the other services;
the expiry status and the `--expiring-within` filter are the policy's, as on the
ordinary path (`services.certificates.list_certificates`). None means: take that
ordinary path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from certpilot.policy.expiry import applicable_warning_days, expiry_status, is_expiring_within
from certpilot.store.sqlite_listing import read_lines


@dataclass(frozen=True)
class CertificateLine:
    name: str
    profile: str
    phase: str
    expiry_status: str | None
    not_after: dt.datetime | None
    revision: int | None
    failures: int


def certificate_lines(database: Path, now: dt.datetime, *,
                      expiring_within_days: int | None = None) -> list[CertificateLine] | None:
    """Ordered by name; only those whose served revision expires within the days given
    (expired ones included) when `expiring_within_days` is set (0 or more)."""
    if expiring_within_days is not None and expiring_within_days < 0:
        return None  # the ordinary path says why not
    lines = read_lines(database)
    if lines is None:
        return None
    result = []
    for line in lines:
        status = None
        if line.not_after is not None and line.not_before is not None:
            days = applicable_warning_days(line.warning_days, line.not_before, line.not_after)
            status = expiry_status(line.not_after, now, days).value
        if expiring_within_days is not None and (
            line.not_after is None or not is_expiring_within(line.not_after, now, expiring_within_days)
        ):
            continue
        result.append(CertificateLine(line.name, line.profile, line.phase, status, line.not_after, line.revision,
                                      line.failures))
    return result
