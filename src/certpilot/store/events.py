"""The event log: append and read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from certpilot.domain.model import Event, EventKind
from certpilot.policy.notification import is_notified
from certpilot.store import outbox
from certpilot.store.tables import EventRow

_INSERT_EVENT = insert(EventRow.__table__)


def record_event(
    session: Session,
    *,
    at: dt.datetime,
    actor: str,
    kind: EventKind,
    object_type: str,
    object_name: str,
    details: Mapping[str, object] | None = None,
) -> None:
    values = {"at": at, "actor": actor, "kind": kind.value, "object_type": object_type,
              "object_name": object_name, "details": dict(details or {})}
    if object_type == "certificate" and is_notified(kind.value, values["details"]):  # type: ignore[arg-type]
        row = EventRow(**values)
        session.add(row)
        outbox.add_for_event(session, row)  # a notification exists exactly when its event does
        return
    # most events notify no one (an issued or renewed certificate): one Core INSERT, after
    # whatever the session holds, so that events keep their order
    if session.new:
        session.flush()
    session.connection().execute(_INSERT_EVENT, values)


def list_events(
    session: Session,
    *,
    kind: str | None = None,
    object_type: str | None = None,
    object_name: str | None = None,
    before_id: int | None = None,
    limit: int = 200,
) -> list[Event]:
    """Newest first."""
    query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
    if kind:
        query = query.where(EventRow.kind == kind)
    if before_id is not None:
        query = query.where(EventRow.id < before_id)
    if object_type:
        query = query.where(EventRow.object_type == object_type)
    if object_name:
        query = query.where(EventRow.object_name == object_name)
    return [
        Event(id=r.id, at=r.at, actor=r.actor, kind=r.kind, object_type=r.object_type,
              object_name=r.object_name, details=r.details)
        for r in session.scalars(query)
    ]
