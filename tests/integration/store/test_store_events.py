"""store.events: what is recorded is what is listed (details as JSON, time aware UTC),
newest first, filtered, paged by id; an event and its notifications are written or
rolled back together."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from certpilot.domain.model import Event, EventKind, NotifySettings
from certpilot.store.events import list_events, record_event
from certpilot.store.session import Database
from certpilot.store.tables import NotificationRow
from tests.integration.store.conftest import T0, Seed

PLUS_2 = dt.timezone(dt.timedelta(hours=2))


def _record(db: Database, kind: EventKind, object_type: str, name: str, at: dt.datetime,
            details: dict[str, object] | None = None) -> None:
    with db.transaction() as session:
        record_event(session, at=at, actor="alice", kind=kind, object_type=object_type, object_name=name,
                     details=details)


@pytest.fixture
def logged(db: Database) -> list[Event]:
    """Six events, oldest first as recorded."""
    _record(db, EventKind.CERT_REQUESTED, "certificate", "web1", T0, {"sans": ["DNS:a", "IP:192.0.2.1"], "n": 3})
    _record(db, EventKind.CERT_ISSUED, "certificate", "web1", T0 + dt.timedelta(minutes=1), {"revision": 1})
    _record(db, EventKind.PROFILE_CHANGED, "profile", "web1", T0 + dt.timedelta(minutes=2))
    _record(db, EventKind.CERT_REQUESTED, "certificate", "web2", T0 + dt.timedelta(minutes=3))
    _record(db, EventKind.USER_CHANGED, "user", "bob", dt.datetime(2026, 3, 1, 14, 4, tzinfo=PLUS_2),
            {"nested": {"role": "admin", "flags": [True, None]}})
    _record(db, EventKind.CERT_ISSUED, "certificate", "web2", T0 + dt.timedelta(minutes=5), {"revision": 1})
    with db.read() as session:
        return list(reversed(list_events(session)))


def test_an_event_reads_back_as_recorded(logged: list[Event]) -> None:
    first, user = logged[0], logged[4]
    assert (first.actor, first.kind, first.object_type, first.object_name) == (
        "alice", "CERT_REQUESTED", "certificate", "web1")
    assert first.details == {"sans": ["DNS:a", "IP:192.0.2.1"], "n": 3}
    assert first.at == T0 and first.at.utcoffset() == dt.timedelta(0)
    assert user.at == T0 + dt.timedelta(minutes=4) and user.at.utcoffset() == dt.timedelta(0)
    assert user.details == {"nested": {"role": "admin", "flags": [True, None]}}
    assert logged[2].details == {}, "no details: an empty mapping"


def test_newest_first_with_a_limit_and_paging_by_id(db: Database, logged: list[Event]) -> None:
    ids = [e.id for e in logged]
    assert ids == sorted(ids) and len(set(ids)) == 6
    with db.read() as session:
        assert [e.id for e in list_events(session, limit=2)] == ids[:-3:-1]
        page2 = list_events(session, before_id=ids[4], limit=3)
        assert [e.id for e in page2] == [ids[3], ids[2], ids[1]]
        assert list_events(session, before_id=ids[0]) == []


def test_filters_combine(db: Database, logged: list[Event]) -> None:
    with db.read() as session:
        by_kind = list_events(session, kind="CERT_ISSUED")
        by_name = list_events(session, object_name="web1")
        by_type_and_name = list_events(session, object_type="certificate", object_name="web1")
        by_all = list_events(session, kind="CERT_REQUESTED", object_type="certificate", object_name="web2")
        paged = list_events(session, object_type="certificate", before_id=logged[3].id)
    assert [(e.kind, e.object_name) for e in by_kind] == [("CERT_ISSUED", "web2"), ("CERT_ISSUED", "web1")]
    assert [e.object_type for e in by_name] == ["profile", "certificate", "certificate"]
    assert [e.kind for e in by_type_and_name] == ["CERT_ISSUED", "CERT_REQUESTED"]
    assert [e.id for e in by_all] == [logged[3].id]
    assert [e.id for e in paged] == [logged[1].id, logged[0].id]


def test_an_event_and_its_notification_are_rolled_back_together(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.profile(session, "loud", notify=NotifySettings(url="https://hooks.example.test/x"))
        seed.certificate(session, "web1", profile="loud")
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            record_event(session, at=T0, actor="controller", kind=EventKind.CERT_EXPIRED,
                         object_type="certificate", object_name="web1", details={"not_after": "x"})
            session.flush()
            raise RuntimeError("the transaction fails after the event")
    with db.transaction() as session:
        record_event(session, at=T0, actor="controller", kind=EventKind.CERT_EXPIRED,
                     object_type="certificate", object_name="web1", details={"not_after": "x"})
    with db.read() as session:
        events = list_events(session)
        notifications = session.scalar(select(func.count()).select_from(NotificationRow))
    assert len(events) == 1 and notifications == 1


def test_events_of_one_transaction_keep_their_order(db: Database, seed: Seed) -> None:
    """Whether or not an event is notified (and so written with its notification rows),
    the log lists the events of one transaction in the order they were recorded."""
    with db.transaction() as session:
        seed.profile(session, "loud", notify=NotifySettings(email="ops@example.test"))
        seed.certificate(session, "web1", profile="loud")
    kinds = [EventKind.CERT_EXPIRING, EventKind.CERT_RENEWED, EventKind.CERT_EXPIRED, EventKind.CERT_UPDATED,
             EventKind.CERT_RENEW_FAILED, EventKind.CERT_EXPIRING]
    with db.transaction() as session:
        for kind in kinds:
            record_event(session, at=T0, actor="controller", kind=kind, object_type="certificate",
                         object_name="web1", details={"failures": 1, "days_left": 3})
    with db.read() as session:
        listed = [e.kind for e in reversed(list_events(session))]
        notified = session.scalar(select(func.count()).select_from(NotificationRow))
    assert listed == [k.value for k in kinds]
    assert notified == 4
