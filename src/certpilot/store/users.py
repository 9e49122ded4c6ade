"""Users and API tokens repository."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import ApiToken, Role, User
from certpilot.store.tables import ApiTokenRow, UserRow


def _to_user(row: UserRow) -> User:
    return User(username=row.username, role=Role(row.role), created_at=row.created_at, disabled=row.disabled)


def _to_token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id, username=row.user.username, name=row.name, prefix=row.prefix, created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at,
    )


def _user_row(session: Session, username: str) -> UserRow:
    row = session.scalar(select(UserRow).where(UserRow.username == username))
    if row is None:
        raise NotFound("user", username)
    return row


def add_user(session: Session, username: str, password_hash: str, role: str, now: dt.datetime) -> User:
    if session.scalar(select(exists().where(UserRow.username == username))):
        raise Conflict(f"user {username!r} exists already")
    row = UserRow(username=username, password_hash=password_hash, role=role, created_at=now, disabled=False)
    session.add(row)
    session.flush()
    return _to_user(row)


def has_users(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(UserRow.id.is_not(None)))))


def list_users(session: Session) -> list[User]:
    return [_to_user(r) for r in session.scalars(select(UserRow).order_by(UserRow.username))]


def password_hash(session: Session, username: str) -> tuple[User, str] | None:
    row = session.scalar(select(UserRow).where(UserRow.username == username))
    return (_to_user(row), row.password_hash) if row else None


def set_password_hash(session: Session, username: str, new_hash: str) -> None:
    _user_row(session, username).password_hash = new_hash


def add_token(
    session: Session, username: str, *, name: str, token_sha256: str, prefix: str,
    now: dt.datetime, expires_at: dt.datetime | None,
) -> ApiToken:
    row = ApiTokenRow(
        user=_user_row(session, username), name=name, token_sha256=token_sha256, prefix=prefix,
        created_at=now, expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return _to_token(row)


def find_token(session: Session, token_sha256: str) -> tuple[ApiToken, User] | None:
    row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_sha256 == token_sha256))
    return (_to_token(row), _to_user(row.user)) if row else None


def touch_token(session: Session, token_id: int, now: dt.datetime) -> None:
    row = session.get(ApiTokenRow, token_id)
    if row is not None:
        row.last_used_at = now


def list_tokens(session: Session, username: str | None = None) -> list[ApiToken]:
    query = select(ApiTokenRow).order_by(ApiTokenRow.id)
    if username is not None:
        query = query.where(ApiTokenRow.user_id == _user_row(session, username).id)
    return [_to_token(r) for r in session.scalars(query)]


def revoke_token(session: Session, token_id: int, now: dt.datetime) -> ApiToken:
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise NotFound("token", str(token_id))
    if row.revoked_at is None:
        row.revoked_at = now
    return _to_token(row)
