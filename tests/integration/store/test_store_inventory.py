"""store.inventory: one line per certificate, by name, with its served revision's dates
(aware UTC) and its profile's renewal settings, whatever the batch size; attempts counted
by outcome; phases counted; the latest failed attempts, newest first."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from certpilot.domain.model import Phase, RenewalSettings
from certpilot.store import inventory
from certpilot.store.session import Database
from certpilot.store.tables import CertificateRow
from tests.integration.store.conftest import T0, Seed

RENEWAL = RenewalSettings(renew_before_days=20, warning_days=(10, 2))


@pytest.fixture
def certs(db: Database, seed: Seed) -> None:
    """a0 pending; b1 issued (revision 2 served); c2 failed three times; d3 in profile `q`."""
    with db.transaction() as session:
        seed.profile(session, "p", renewal=RENEWAL)
        seed.profile(session, "q", renewal=RenewalSettings(renew_before_percent=25.0))
        for name in ("d3", "b1", "c2", "a0"):
            seed.certificate(session, name, profile="q" if name == "d3" else "p")
        seed.revision(session, "b1", 1, not_before=T0 - dt.timedelta(days=90))
        seed.revision(session, "b1", 2, not_before=T0, days=30)
        status = session.scalar(select(CertificateRow).where(CertificateRow.name == "c2")).status  # type: ignore[union-attr]
        status.phase, status.failures = "failed", 3


@pytest.mark.parametrize("batch", [1, 2, 5000])
def test_one_line_per_certificate_by_name(db: Database, certs: None, batch: int) -> None:
    with db.read() as session:
        lines = list(inventory.inventory(session, batch=batch))
    assert [(x.name, x.profile, x.phase, x.failures) for x in lines] == [
        ("a0", "p", Phase.PENDING, 0), ("b1", "p", Phase.ISSUED, 0), ("c2", "p", Phase.FAILED, 3),
        ("d3", "q", Phase.PENDING, 0)]
    b1 = lines[1]
    assert (b1.not_before, b1.not_after) == (T0, T0 + dt.timedelta(days=30))
    assert b1.not_after is not None and b1.not_after.utcoffset() == dt.timedelta(0)
    assert lines[0].not_before is None and lines[0].not_after is None
    assert b1.renewal == RENEWAL
    assert lines[3].renewal.renew_before_percent == 25.0 and lines[3].renewal.renew_before_days is None


def test_an_empty_inventory(db: Database) -> None:
    with db.read() as session:
        assert list(inventory.inventory(session)) == []
        assert inventory.phase_counts(session) == {} and inventory.attempts_by_outcome(session) == {}
        assert inventory.recent_failed_attempts(session) == []


def test_phases_and_attempt_outcomes_are_counted(db: Database, seed: Seed, certs: None) -> None:
    with db.transaction() as session:
        for outcome in ("issued", "issued", "failed", "timeout", None):
            seed.attempt(session, "b1", outcome=outcome)
    with db.read() as session:
        assert inventory.phase_counts(session) == {"pending": 2, "issued": 1, "failed": 1}
        assert inventory.attempts_by_outcome(session) == {"issued": 2, "failed": 1, "timeout": 1}


def test_recent_failed_attempts_newest_first(db: Database, seed: Seed, certs: None) -> None:
    with db.transaction() as session:
        seed.attempt(session, "c2", started_at=T0, outcome="failed", error="first")
        seed.attempt(session, "b1", started_at=T0 + dt.timedelta(minutes=1), outcome="issued")
        seed.attempt(session, "a0", started_at=T0 + dt.timedelta(minutes=2), outcome="timeout", error="slow")
        seed.attempt(session, "d3", started_at=T0 + dt.timedelta(minutes=3), outcome="invalid", error="not a PEM")
        seed.attempt(session, "c2", started_at=T0 + dt.timedelta(minutes=4))  # still running
    with db.read() as session:
        failed = inventory.recent_failed_attempts(session)
        assert inventory.recent_failed_attempts(session, limit=2) == failed[:2]
    assert [(f.certificate, f.outcome, f.error) for f in failed] == [
        ("d3", "invalid", "not a PEM"), ("a0", "timeout", "slow"), ("c2", "failed", "first")]
    assert failed[1].finished_at == T0 + dt.timedelta(minutes=2)
    assert failed[1].finished_at.utcoffset() == dt.timedelta(0)


def test_a_deferral_is_no_failed_attempt(db: Database, seed: Seed, certs: None) -> None:
    """A CA that answers "pending" is polled every few minutes: its deferred attempts must
    not push the real failures off the dashboard's short list."""
    with db.transaction() as session:
        seed.attempt(session, "c2", started_at=T0, outcome="failed", error="the CA said no")
        for minutes in range(1, 11):
            seed.attempt(session, "a0", started_at=T0 + dt.timedelta(minutes=minutes), outcome="deferred")
    with db.read() as session:
        failed = inventory.recent_failed_attempts(session, limit=10)
    assert [(f.certificate, f.outcome) for f in failed] == [("c2", "failed")]
