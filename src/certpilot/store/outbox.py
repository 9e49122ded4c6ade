"""The notification outbox: rows written in the transaction of their event, leased by
the renewal loops for delivery (as certificates are leased), then marked delivered or
dropped. Which events become rows is the policy's (`policy.notification`); the
targets (webhook URL, mail address) stay on the profile and are read at delivery.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from certpilot.policy.notification import is_notified, summary_text
from certpilot.store.tables import CertificateRow, CertificateStatusRow, EventRow, NotificationRow, ProfileRow

WEBHOOK = "webhook"
EMAIL = "email"


def add_for_event(session: Session, event: EventRow) -> None:
    """Queue `event` for the receivers of its certificate's profile, when it is one people
    hear about. In the caller's transaction: the row exists exactly when the event does."""
    if event.object_type != "certificate" or not is_notified(event.kind, event.details or {}):
        return
    found = session.execute(
        select(ProfileRow.id, ProfileRow.name, ProfileRow.notify_url_sealed.is_not(None), ProfileRow.notify_email)
        .join(CertificateRow, CertificateRow.profile_id == ProfileRow.id)
        .where(CertificateRow.name == event.object_name)
    ).first()
    if found is None:
        return
    profile_id, profile, has_url, email = found
    channels = [c for c, on in ((WEBHOOK, has_url), (EMAIL, email is not None)) if on]
    if not channels:
        return
    payload = {
        "event": event.kind,
        "certificate": event.object_name,
        "profile": profile,
        "at": event.at.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "details": dict(event.details or {}),
        "text": summary_text(event.kind, event.object_name, profile, event.details or {}),
    }
    for channel in channels:
        session.add(NotificationRow(event=event, profile_id=profile_id, channel=channel, payload=payload,
                                    created_at=event.at, next_attempt_at=event.at, attempts=0))


@dataclass(frozen=True)
class Pending:
    """A notification leased for delivery."""

    id: int
    channel: str
    profile_id: int | None
    payload: dict[str, object]
    created_at: dt.datetime
    attempts: int


def claim_due(session: Session, *, owner: str, now: dt.datetime, lease_until: dt.datetime,
              limit: int) -> list[Pending]:
    """Lease up to `limit` notifications that are due and that no live worker holds;
    other workers skip the rows this one locks (PostgreSQL; SQLite writes one at a time)."""
    n = NotificationRow
    due = (
        select(n.id)
        .where(n.delivered_at.is_(None), n.dropped_at.is_(None), n.next_attempt_at <= now)
        .where(or_(n.lease_owner.is_(None), n.lease_expires_at < now))
        .order_by(n.next_attempt_at, n.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    session.execute(update(n).where(n.id.in_(ids)).values(lease_owner=owner, lease_expires_at=lease_until)
                    .execution_options(synchronize_session=False))
    rows = session.execute(select(n.id, n.channel, n.profile_id, n.payload, n.created_at, n.attempts)
                           .where(n.id.in_(ids)).order_by(n.id))
    return [Pending(*row) for row in rows]


def _held(session: Session, notification_id: int, owner: str) -> NotificationRow | None:
    row = session.get(NotificationRow, notification_id)
    return row if row is not None and row.lease_owner == owner else None


def mark_delivered(session: Session, notification_id: int, *, owner: str, now: dt.datetime) -> bool:
    """False when this holder lost the lease meanwhile (the row is left as it is)."""
    row = _held(session, notification_id, owner)
    if row is None:
        return False
    row.delivered_at, row.attempts, row.last_error = now, row.attempts + 1, None
    row.lease_owner = row.lease_expires_at = None
    return True


def mark_failed(session: Session, notification_id: int, *, owner: str, error: str,
                next_attempt_at: dt.datetime) -> int:
    """Record a failed delivery; returns the attempts made so far (0: lease lost)."""
    row = _held(session, notification_id, owner)
    if row is None:
        return 0
    row.attempts, row.last_error, row.next_attempt_at = row.attempts + 1, error, next_attempt_at
    row.lease_owner = row.lease_expires_at = None
    return row.attempts


def mark_dropped(session: Session, notification_id: int, *, owner: str, error: str, now: dt.datetime) -> bool:
    row = _held(session, notification_id, owner)
    if row is None:
        return False
    row.attempts, row.last_error, row.dropped_at = row.attempts + 1, error, now
    row.lease_owner = row.lease_expires_at = None
    return True


def is_any_due(session: Session, now: dt.datetime) -> bool:
    """Whether some notification waits for delivery now (whoever holds it)."""
    n = NotificationRow
    return session.scalar(
        select(n.id).where(n.delivered_at.is_(None), n.dropped_at.is_(None), n.next_attempt_at <= now).limit(1)
    ) is not None


def profile_targets(session: Session, profile_id: int) -> tuple[str, bytes | None, str | None] | None:
    """(profile name, sealed webhook URL, mail address) of the profile, or None when it is gone."""
    row = session.get(ProfileRow, profile_id)
    return None if row is None else (row.name, row.notify_url_sealed, row.notify_email)


@dataclass(frozen=True)
class NotificationFact:
    id: int
    event_id: int
    event: str
    certificate: str
    channel: str
    attempts: int
    delivered_at: dt.datetime | None
    dropped_at: dt.datetime | None
    last_error: str | None


def list_notifications(session: Session, limit: int = 200) -> list[NotificationFact]:
    """Newest first."""
    n = NotificationRow
    rows = session.execute(
        select(n.id, n.event_id, EventRow.kind, EventRow.object_name, n.channel, n.attempts, n.delivered_at,
               n.dropped_at, n.last_error)
        .join(EventRow, EventRow.id == n.event_id).order_by(n.id.desc()).limit(limit))
    return [NotificationFact(*row) for row in rows]


def overdue_deferrals(session: Session, *, older_than: dt.datetime, lock: bool = True) -> list[tuple[str, dt.datetime]]:
    """(certificate, deferred_since) of deferrals waiting since before `older_than` with no
    CERT_DEFERRAL_OVERDUE recorded since they began; their status rows stay locked until
    the caller commits (PostgreSQL: other workers skip them), so one event is recorded."""
    st = CertificateStatusRow
    recorded = (select(EventRow.id)
                .where(EventRow.kind == "CERT_DEFERRAL_OVERDUE", EventRow.object_type == "certificate",
                       EventRow.object_name == CertificateRow.name, EventRow.at >= st.deferred_since)
                .exists())
    query = (select(CertificateRow.name, st.deferred_since)
             .join(st, st.certificate_id == CertificateRow.id)
             .where(st.deferred_since.is_not(None), st.deferred_since <= older_than, ~recorded)
             .limit(100))
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=st)
    return [(name, since) for name, since in session.execute(query)]
