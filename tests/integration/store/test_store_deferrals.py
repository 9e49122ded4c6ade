"""store.deferrals: a recorded deferral loads back (cookie opened, times aware UTC); the
cookie is sealed, bound to its certificate; a later Pending without a cookie keeps it and
counts a poll; abandoning forgets it; unknown certificates are not found."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from certpilot.domain.errors import KeyBackendError, NotFound
from certpilot.keys.sealing import Sealer
from certpilot.store import deferrals
from certpilot.store.certificates import get_certificate
from certpilot.store.session import Database
from certpilot.store.tables import AttemptRow, CertificateRow
from tests.integration.store.conftest import T0, Seed

PLUS_2 = dt.timezone(dt.timedelta(hours=2))
COOKIE = "order-url:https://ca.example.test/order/77?sig=SECRET-SIG"


@pytest.fixture
def certs(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.certificate(session, "web1")
        seed.certificate(session, "web2")


def _record(db: Database, seed: Seed, name: str, cookie: str | None, now: dt.datetime,
            poll_at: dt.datetime) -> tuple[deferrals.Deferral, int]:
    with db.transaction() as session:
        attempt_id = seed.attempt(session, name, started_at=now - dt.timedelta(seconds=2))
        return deferrals.record(session, name, seed.sealer, attempt_id=attempt_id, cookie=cookie, now=now,
                                poll_at=poll_at, output="CA: pending"), attempt_id


def test_a_deferral_loads_back_as_recorded(db: Database, seed: Seed, sealer: Sealer, certs: None) -> None:
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) is None
    since = dt.datetime(2026, 3, 1, 14, 0, tzinfo=PLUS_2)  # 12:00Z
    poll_at = since + dt.timedelta(minutes=10)
    returned, attempt_id = _record(db, seed, "web1", COOKIE, since, poll_at)
    with db.read() as session:
        loaded = deferrals.load(session, "web1", sealer)
        cert = get_certificate(session, "web1", since)
        attempt = session.get(AttemptRow, attempt_id)
        assert attempt is not None
        assert (attempt.outcome, attempt.finished_at, attempt.output, attempt.duration_ms) == (
            "deferred", since, "CA: pending", 2000)
        assert deferrals.load(session, "web2", sealer) is None
    assert loaded == returned == deferrals.Deferral(COOKIE, T0, poll_at, 0)
    assert loaded is not None and loaded.since.utcoffset() == dt.timedelta(0)
    assert cert.status.phase.value == "deferred" and cert.status.deferred_since == T0


def test_the_cookie_is_sealed_and_bound_to_its_certificate(db: Database, seed: Seed, sealer: Sealer,
                                                           certs: None) -> None:
    _record(db, seed, "web1", COOKIE, T0, T0 + dt.timedelta(minutes=1))
    _record(db, seed, "web2", "other cookie", T0, T0 + dt.timedelta(minutes=1))
    with db.transaction() as session:
        rows = {r.name: r.status for r in session.scalars(select(CertificateRow))}
        sealed = rows["web1"].deferred_cookie_sealed
        assert sealed is not None and b"SECRET-SIG" not in sealed
        rows["web2"].deferred_cookie_sealed = sealed
        session.flush()
        with pytest.raises(KeyBackendError, match="does not open"):
            deferrals.load(session, "web2", sealer)
        session.rollback()


def test_later_answers_keep_the_cookie_and_count_polls(db: Database, seed: Seed, sealer: Sealer,
                                                       certs: None) -> None:
    _record(db, seed, "web1", COOKIE, T0, T0 + dt.timedelta(minutes=1))
    second, _ = _record(db, seed, "web1", None, T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=5))
    assert (second.since, second.poll_at, second.polls) == (T0, T0 + dt.timedelta(minutes=5), 1)
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) == deferrals.Deferral(
            COOKIE, T0, T0 + dt.timedelta(minutes=5), 1)
    _record(db, seed, "web1", "new cookie", T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=30))
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) == deferrals.Deferral(
            "new cookie", T0, T0 + dt.timedelta(minutes=30), 2)


def test_a_deferral_without_a_cookie(db: Database, seed: Seed, sealer: Sealer, certs: None) -> None:
    _record(db, seed, "web1", None, T0, T0 + dt.timedelta(minutes=1))
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) == deferrals.Deferral("", T0, T0 + dt.timedelta(minutes=1), 0)


def test_abandoning_forgets_the_request(db: Database, seed: Seed, sealer: Sealer, certs: None) -> None:
    _record(db, seed, "web1", COOKIE, T0, T0 + dt.timedelta(minutes=1))
    with db.transaction() as session:
        assert deferrals.abandon(session, "web1") is True
        assert deferrals.abandon(session, "web2") is False
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) is None
        status = session.scalar(select(CertificateRow).where(CertificateRow.name == "web1")).status  # type: ignore[union-attr]
        assert (status.deferred_cookie_sealed, status.deferred_poll_at, status.deferred_polls) == (None, None, 0)
    _record(db, seed, "web1", None, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))
    with db.read() as session:
        assert deferrals.load(session, "web1", sealer) == deferrals.Deferral(
            "", T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2), 0), "a new deferral starts afresh"


def test_unknown_certificates_are_not_found(db: Database, seed: Seed, sealer: Sealer, certs: None) -> None:
    with db.transaction() as session:
        with pytest.raises(NotFound, match="certificate"):
            deferrals.load(session, "nope", sealer)
        with pytest.raises(NotFound, match="certificate"):
            deferrals.abandon(session, "nope")
        with pytest.raises(NotFound, match="certificate"):
            deferrals.record(session, "nope", sealer, attempt_id=1, cookie="c", now=T0, poll_at=T0, output=None)
