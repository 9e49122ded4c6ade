"""Whole-inventory reads for metrics and dashboards, without loading full objects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certpilot.domain.model import Outcome, Phase, RenewalSettings
from certpilot.store.tables import AttemptRow, CertificateRow, CertificateStatusRow, ProfileRow, RevisionRow


@dataclass(frozen=True)
class InventoryLine:
    name: str
    profile: str
    phase: Phase
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    renewal: RenewalSettings
    failures: int


def inventory(session: Session, batch: int = 5000) -> Iterator[InventoryLine]:
    query = (
        select(CertificateRow.name, ProfileRow.name, CertificateStatusRow.phase, RevisionRow.not_before,
               RevisionRow.not_after, ProfileRow.renew_before_days, ProfileRow.renew_before_percent,
               ProfileRow.warning_days, CertificateStatusRow.failures)
        .join(ProfileRow, ProfileRow.id == CertificateRow.profile_id)
        .join(CertificateStatusRow, CertificateStatusRow.certificate_id == CertificateRow.id)
        .outerjoin(RevisionRow, RevisionRow.id == CertificateStatusRow.current_revision_id)
        .order_by(CertificateRow.name)
        .execution_options(yield_per=batch)
    )
    for name, profile, phase, nb, na, days, percent, warning_days, failures in session.execute(query):
        yield InventoryLine(
            name=name, profile=profile, phase=Phase(phase), not_before=nb, not_after=na,
            renewal=RenewalSettings(days, percent, tuple(warning_days)), failures=failures,
        )


def attempts_by_outcome(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(AttemptRow.outcome, func.count()).where(AttemptRow.outcome.is_not(None)).group_by(AttemptRow.outcome)
    )
    return {outcome: count for outcome, count in rows}


def phase_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(CertificateStatusRow.phase, func.count()).group_by(CertificateStatusRow.phase))
    return {phase: count for phase, count in rows}


@dataclass(frozen=True)
class FailedAttempt:
    certificate: str
    finished_at: dt.datetime
    outcome: str
    error: str | None


FAILED_OUTCOMES = (Outcome.FAILED.value, Outcome.TIMEOUT.value, Outcome.INVALID.value)  # not issued, not deferred


def recent_failed_attempts(session: Session, limit: int = 10) -> list[FailedAttempt]:
    """Newest first; a deferred attempt (the CA will answer later) is no failure."""
    rows = session.execute(
        select(CertificateRow.name, AttemptRow.finished_at, AttemptRow.outcome, AttemptRow.error)
        .join(CertificateRow, CertificateRow.id == AttemptRow.certificate_id)
        .where(AttemptRow.outcome.in_(FAILED_OUTCOMES))
        .order_by(AttemptRow.id.desc())
        .limit(limit)
    )
    return [FailedAttempt(name, at, outcome, error) for name, at, outcome, error in rows]
