"""What the dashboard shows: counts by phase, what expires soon, recent failures, the loop."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from certpilot.domain.model import Certificate
from certpilot.services.app import App
from certpilot.store import certificates as cert_repo
from certpilot.store.heartbeats import last_pass_at
from certpilot.store.inventory import FailedAttempt, phase_counts, recent_failed_attempts

EXPIRING_SOON_DAYS = 30


@dataclass(frozen=True)
class Dashboard:
    phase_counts: dict[str, int]
    expiring_soon: list[Certificate]
    recent_failures: list[FailedAttempt]
    loop_last_pass_at: dt.datetime | None
    now: dt.datetime


def dashboard(app: App) -> Dashboard:
    now = app.clock.now()
    with app.db.read() as session:
        return Dashboard(
            phase_counts=phase_counts(session),
            expiring_soon=cert_repo.list_certificates(session, now, expiring_within_days=EXPIRING_SOON_DAYS, limit=50),
            recent_failures=recent_failed_attempts(session),
            loop_last_pass_at=last_pass_at(session),
            now=now,
        )
