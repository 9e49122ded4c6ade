"""Users repository (accounts; API tokens come with the API)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict
from certpilot.store.tables import UserRow


def add_user(session: Session, username: str, password_hash: str, role: str, now: dt.datetime) -> None:
    if session.scalar(select(exists().where(UserRow.username == username))):
        raise Conflict(f"user {username!r} exists already")
    session.add(UserRow(username=username, password_hash=password_hash, role=role, created_at=now))


def has_users(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(UserRow.id.is_not(None)))))
