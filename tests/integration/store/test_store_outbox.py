"""store.outbox: an event people hear about gets one row per channel of its profile; due
rows are leased in order, up to a limit, never to two workers at once (two connections);
only the lease holder marks a row; a profile's removal keeps its rows; overdue deferrals
are listed until their event is recorded, and two workers record it once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, select

from certpilot.domain.model import EventKind, NotifySettings
from certpilot.store import outbox, profiles
from certpilot.store.events import list_events, record_event
from certpilot.store.session import Database
from certpilot.store.tables import CertificateRow, EventRow, NotificationRow
from tests.integration.store.conftest import T0, Seed

LEASE = dt.timedelta(minutes=5)


def _event(db: Database, name: str, kind: EventKind = EventKind.CERT_EXPIRED, at: dt.datetime = T0,
           details: dict[str, object] | None = None) -> None:
    with db.transaction() as session:
        record_event(session, at=at, actor="controller", kind=kind, object_type="certificate", object_name=name,
                     details={"not_after": "2026-03-01T12:00:00Z"} if details is None else details)


@pytest.fixture
def certs(db: Database, seed: Seed) -> None:
    """`both` notifies a webhook and a mail address, `hook` a webhook only, `quiet` nobody."""
    with db.transaction() as session:
        seed.profile(session, "both", notify=NotifySettings(url="https://hooks.example.test/secret-token",
                                                            email="ops@example.test"))
        seed.profile(session, "hook", notify=NotifySettings(url="https://hooks.example.test/other"))
        seed.profile(session, "quiet")
        for name, profile in (("web1", "both"), ("web2", "hook"), ("web3", "quiet")):
            seed.certificate(session, name, profile=profile)


def _rows(db: Database) -> list[NotificationRow]:
    with db.read() as session:
        rows = list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))
        session.expunge_all()
        return rows


def test_rows_per_channel_for_notified_events_only(db: Database, certs: None) -> None:
    _event(db, "web1", at=dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    _event(db, "web2")
    _event(db, "web3")  # its profile notifies nobody
    _event(db, "web1", EventKind.CERT_ISSUED, details={})  # not an event people hear about
    _event(db, "web1", EventKind.CERT_RENEW_FAILED, details={"failures": 3, "error": "x"})  # 3: not a power of two
    _event(db, "web2", EventKind.CERT_RENEW_FAILED, details={"failures": 4, "error": "CA down\nmore"})
    with db.transaction() as session:  # not a certificate's event
        record_event(session, at=T0, actor="a", kind=EventKind.CERT_EXPIRED, object_type="profile",
                     object_name="both")
    rows = _rows(db)
    assert [(r.payload["certificate"], r.payload["event"], r.channel) for r in rows] == [
        ("web1", "CERT_EXPIRED", "webhook"), ("web1", "CERT_EXPIRED", "email"),
        ("web2", "CERT_EXPIRED", "webhook"), ("web2", "CERT_RENEW_FAILED", "webhook")]
    first = rows[0]
    assert first.payload["at"] == "2026-03-01T12:00:00Z" and first.payload["profile"] == "both"
    assert first.payload["details"] == {"not_after": "2026-03-01T12:00:00Z"}
    assert first.created_at == first.next_attempt_at == T0 and first.attempts == 0
    assert "secret-token" not in str(first.payload), "the target stays on the profile"
    assert rows[3].payload["text"].startswith("certpilot could not renew certificate web2")


def _claim(session: object, owner: str, now: dt.datetime = T0, limit: int = 10) -> list[int]:
    return [p.id for p in outbox.claim_due(session, owner=owner, now=now, lease_until=now + LEASE,  # type: ignore[arg-type]
                                           limit=limit)]


def test_claims_take_due_rows_in_order_up_to_the_limit(db: Database, certs: None) -> None:
    for minutes in (3, 1, 2, 30):
        _event(db, "web2", at=T0 + dt.timedelta(minutes=minutes))
    ids = {r.payload["at"][11:16]: r.id for r in _rows(db)}
    now = T0 + dt.timedelta(minutes=10)
    with db.transaction() as session:
        claimed = outbox.claim_due(session, owner="w1", now=now, lease_until=now + LEASE, limit=2)
    assert [p.id for p in claimed] == sorted([ids["12:01"], ids["12:02"]])
    assert claimed[0].channel == "webhook" and claimed[0].attempts == 0 and claimed[0].created_at.tzinfo
    with db.transaction() as session:
        assert _claim(session, "w2", now) == [ids["12:03"]], "leased rows stay with their holder; 12:30 is not due"
        assert _claim(session, "w3", now) == []
    later = now + LEASE + dt.timedelta(seconds=1)  # the leases ran out: anyone may take them
    with db.transaction() as session:
        assert sorted(_claim(session, "w4", later)) == sorted([ids["12:01"], ids["12:02"], ids["12:03"]])


def test_only_the_lease_holder_marks_a_row(db: Database, certs: None) -> None:
    for minutes in (0, 1, 2):
        _event(db, "web2", at=T0 + dt.timedelta(minutes=minutes))
    now = T0 + dt.timedelta(minutes=5)
    with db.transaction() as session:
        a, b, c = _claim(session, "w1", now)
    retry = now + dt.timedelta(seconds=30)
    with db.transaction() as session:
        assert outbox.mark_delivered(session, a, owner="w2", now=now) is False
        assert outbox.mark_failed(session, b, owner="w2", error="x", next_attempt_at=retry) == 0
        assert outbox.mark_dropped(session, c, owner="w2", error="x", now=now) is False
    assert all(r.lease_owner == "w1" and r.attempts == 0 for r in _rows(db))
    with db.transaction() as session:
        assert outbox.mark_delivered(session, a, owner="w1", now=now) is True
        assert outbox.mark_failed(session, b, owner="w1", error="502 from receiver", next_attempt_at=retry) == 1
        assert outbox.mark_dropped(session, c, owner="w1", error="gave up", now=now) is True
    by_id = {r.id: r for r in _rows(db)}
    assert (by_id[a].delivered_at, by_id[a].attempts, by_id[a].lease_owner) == (now, 1, None)
    assert (by_id[b].last_error, by_id[b].next_attempt_at, by_id[b].lease_owner, by_id[b].delivered_at) == (
        "502 from receiver", retry, None, None)
    assert (by_id[c].dropped_at, by_id[c].last_error, by_id[c].attempts) == (now, "gave up", 1)
    with db.transaction() as session:
        assert outbox.is_any_due(session, now) is False, "b waits for its retry; a and c are done"
        assert _claim(session, "w2", now) == []
        assert outbox.is_any_due(session, retry) is True
        assert _claim(session, "w2", retry) == [b]
        assert outbox.is_any_due(session, retry) is True, "due, whoever holds it"
        assert outbox.mark_failed(session, b, owner="w2", error="again", next_attempt_at=retry) == 2


def test_two_workers_claiming_at_once_never_share_a_row(db: Database, certs: None) -> None:
    for minutes in range(6):
        _event(db, "web1", at=T0 + dt.timedelta(minutes=minutes))  # 12 rows: webhook and email
    now = T0 + dt.timedelta(hours=1)
    first_claimed = threading.Event()

    def worker(owner: str, wait_for: threading.Event | None) -> list[int]:
        if wait_for is not None:
            assert wait_for.wait(10)
        with db.transaction() as session:
            ids = _claim(session, owner, now, limit=5)
            if wait_for is None:
                first_claimed.set()
                time.sleep(0.3)  # still uncommitted while the other claims
            return ids

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(worker, "w1", None), pool.submit(worker, "w2", first_claimed)
        ids1, ids2 = one.result(timeout=30), two.result(timeout=30)
    assert len(ids1) == 5 and len(ids2) == 5
    assert not set(ids1) & set(ids2)
    owners = {r.id: r.lease_owner for r in _rows(db)}
    assert all(owners[i] == "w1" for i in ids1) and all(owners[i] == "w2" for i in ids2)


def test_a_removed_profile_leaves_its_rows_without_targets(db: Database, certs: None) -> None:
    _event(db, "web2")
    (row,) = _rows(db)
    with db.read() as session:
        targets = outbox.profile_targets(session, row.profile_id)  # type: ignore[arg-type]
    assert targets is not None
    name, sealed, email = targets
    assert name == "hook" and email is None
    assert sealed is not None and b"hooks.example.test" not in sealed, "the URL stays sealed until delivery"
    with db.transaction() as session:
        session.delete(session.scalar(select(CertificateRow).where(CertificateRow.name == "web2")))
        session.flush()
        profiles.remove_profile(session, "hook")
    (after,) = _rows(db)
    assert after.id == row.id and after.profile_id is None
    with db.read() as session:
        assert outbox.profile_targets(session, row.profile_id) is None  # type: ignore[arg-type]


def test_notifications_are_listed_newest_first_and_go_with_their_event(db: Database, certs: None) -> None:
    _event(db, "web1")
    _event(db, "web2", EventKind.CERT_DEFERRAL_OVERDUE, details={"deferred_since": "x"})
    with db.read() as session:
        facts = outbox.list_notifications(session)
        assert [(f.certificate, f.event, f.channel) for f in outbox.list_notifications(session, limit=2)] == [
            ("web2", "CERT_DEFERRAL_OVERDUE", "webhook"), ("web1", "CERT_EXPIRED", "email")]
    assert [f.id for f in facts] == sorted((f.id for f in facts), reverse=True) and len(facts) == 3
    assert all(f.attempts == 0 and f.delivered_at is None and f.dropped_at is None for f in facts)
    with db.transaction() as session:
        session.execute(delete(EventRow).where(EventRow.object_name == "web1"))
    assert [r.payload["certificate"] for r in _rows(db)] == ["web2"], "an event's rows are deleted with it"


def _defer(db: Database, name: str, since: dt.datetime) -> None:
    with db.transaction() as session:
        row = session.scalar(select(CertificateRow).where(CertificateRow.name == name))
        assert row is not None
        row.status.deferred_since, row.status.phase = since, "deferred"


def test_overdue_deferrals_are_listed_until_their_event_is_recorded(db: Database, certs: None) -> None:
    _defer(db, "web1", T0)
    _defer(db, "web2", T0 + dt.timedelta(hours=2))
    with db.transaction() as session:  # an overdue event of an earlier deferral of web1 does not count
        record_event(session, at=T0 - dt.timedelta(days=3), actor="c", kind=EventKind.CERT_DEFERRAL_OVERDUE,
                     object_type="certificate", object_name="web1")
    limit = T0 + dt.timedelta(hours=1)
    with db.read() as session:
        assert outbox.overdue_deferrals(session, older_than=limit, lock=False) == [("web1", T0)]
        assert outbox.overdue_deferrals(session, older_than=T0 - dt.timedelta(seconds=1), lock=False) == []
    _event(db, "web1", EventKind.CERT_DEFERRAL_OVERDUE, at=T0 + dt.timedelta(days=1), details={})
    with db.transaction() as session:
        assert outbox.overdue_deferrals(session, older_than=limit + dt.timedelta(days=1)) == [
            ("web2", T0 + dt.timedelta(hours=2))]


def test_two_workers_record_an_overdue_deferral_once(db: Database, certs: None) -> None:
    _defer(db, "web2", T0)
    now = T0 + dt.timedelta(days=2)
    first_listed = threading.Event()

    def worker(wait_for: threading.Event | None) -> int:
        if wait_for is not None:
            assert wait_for.wait(10)
        with db.transaction() as session:
            overdue = outbox.overdue_deferrals(session, older_than=now - dt.timedelta(days=1))
            if wait_for is None:
                first_listed.set()
                time.sleep(0.3)  # the other worker looks while these rows are held
            for name, _since in overdue:
                record_event(session, at=now, actor="c", kind=EventKind.CERT_DEFERRAL_OVERDUE,
                             object_type="certificate", object_name=name)
            return len(overdue)

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(worker, None), pool.submit(worker, first_listed)
        counts = sorted([one.result(timeout=30), two.result(timeout=30)])
    assert counts == [0, 1]
    with db.read() as session:
        assert len(list_events(session, kind="CERT_DEFERRAL_OVERDUE")) == 1
