"""Renewal-loop heartbeats: when each loop last finished a pass."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certpilot.store.tables import LoopHeartbeatRow


def beat(session: Session, owner: str, *, started_at: dt.datetime, now: dt.datetime) -> None:
    row = session.get(LoopHeartbeatRow, owner)
    if row is None:
        session.add(LoopHeartbeatRow(owner=owner, started_at=started_at, last_pass_at=now))
    else:
        row.last_pass_at = now


def last_pass_at(session: Session) -> dt.datetime | None:
    """The latest pass of any loop sharing this database."""
    return session.scalar(select(func.max(LoopHeartbeatRow.last_pass_at)))
