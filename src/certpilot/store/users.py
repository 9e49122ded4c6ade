"""Users and API tokens repository."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, delete, exists, func, select, update
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import ApiToken, Role, User
from certpilot.store.database import add_named
from certpilot.store.tables import ApiTokenRow, UserRow, WebSessionRow


def _to_user(row: UserRow) -> User:
    return User(username=row.username, role=Role(row.role), created_at=row.created_at, disabled=row.disabled)


def _to_token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id, username=row.user.username, name=row.name, prefix=row.prefix, created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at,
        parent_id=row.parent_id, role=Role(row.role) if row.role else None,
    )


def _user_row(session: Session, username: str) -> UserRow:
    row = session.scalar(select(UserRow).where(UserRow.username == username))
    if row is None:
        raise NotFound("user", username)
    return row


def add_user(session: Session, username: str, password_hash: str, role: str, now: dt.datetime) -> User:
    def is_taken() -> bool:
        return bool(session.scalar(select(exists().where(UserRow.username == username))))

    if is_taken():
        raise Conflict(f"user {username!r} exists already")
    row = UserRow(username=username, password_hash=password_hash, role=role, created_at=now, disabled=False)
    add_named(session, row, is_taken, f"user {username!r} exists already")
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
    now: dt.datetime, expires_at: dt.datetime | None, parent_id: int | None = None, role: Role | None = None,
) -> ApiToken:
    row = ApiTokenRow(
        user=_user_row(session, username), name=name, token_sha256=token_sha256, prefix=prefix,
        created_at=now, expires_at=expires_at, parent_id=parent_id, role=role.value if role else None,
    )
    session.add(row)
    session.flush()
    return _to_token(row)


def find_token(session: Session, token_sha256: str) -> tuple[ApiToken, User] | None:
    """Every API request asks: one prebuilt Core statement on the unique digest, no ORM objects."""
    row = session.connection().execute(_FIND_TOKEN, {"digest": token_sha256}).first()
    if row is None:
        return None
    token = ApiToken(
        id=row.id, username=row.username, name=row.name, prefix=row.prefix, created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at,
        parent_id=row.parent_id, role=Role(row.role) if row.role else None,
    )
    return token, User(username=row.username, role=Role(row.user_role), created_at=row.user_created_at,
                       disabled=row.disabled)


_TOKENS, _USERS = ApiTokenRow.__table__, UserRow.__table__
_FIND_TOKEN = (
    select(_TOKENS.c.id, _TOKENS.c.name, _TOKENS.c.prefix, _TOKENS.c.created_at, _TOKENS.c.expires_at,
           _TOKENS.c.revoked_at, _TOKENS.c.last_used_at, _TOKENS.c.parent_id, _TOKENS.c.role, _USERS.c.username,
           _USERS.c.role.label("user_role"), _USERS.c.created_at.label("user_created_at"), _USERS.c.disabled)
    .join_from(_TOKENS, _USERS, _USERS.c.id == _TOKENS.c.user_id)
    .where(_TOKENS.c.token_sha256 == bindparam("digest"))
)


def ancestors(session: Session, parent_id: int | None) -> list[ApiToken]:
    """The token's parent, its parent's parent, … (a missing row ends the walk)."""
    found: list[ApiToken] = []
    seen: set[int] = set()
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        row = session.get(ApiTokenRow, parent_id)
        if row is None:
            break
        found.append(_to_token(row))
        parent_id = row.parent_id
    return found


def touch_token(session: Session, token_id: int, now: dt.datetime) -> None:
    row = session.get(ApiTokenRow, token_id)
    if row is not None:
        row.last_used_at = now


def list_tokens(session: Session, username: str | None = None) -> list[ApiToken]:
    query = select(ApiTokenRow).order_by(ApiTokenRow.id)
    if username is not None:
        query = query.where(ApiTokenRow.user_id == _user_row(session, username).id)
    return [_to_token(r) for r in session.scalars(query)]


def get_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise NotFound("token", str(token_id))
    return _to_token(row)


def revoke_token(session: Session, token_id: int, now: dt.datetime) -> ApiToken:
    """Revoke the token and every token made with it, and theirs (the lineage dies together)."""
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise NotFound("token", str(token_id))
    todo = [row]
    while todo:
        current = todo.pop()
        if current.revoked_at is None:
            current.revoked_at = now
        todo.extend(session.scalars(select(ApiTokenRow).where(ApiTokenRow.parent_id == current.id)))
    return _to_token(row)


def revoke_user_tokens(session: Session, username: str, now: dt.datetime) -> int:
    user = _user_row(session, username)
    result = session.execute(update(ApiTokenRow).where(ApiTokenRow.user_id == user.id, ApiTokenRow.revoked_at.is_(None))
                             .values(revoked_at=now))
    return int(result.rowcount or 0)


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    row = _user_row(session, username)
    row.disabled = disabled
    return _to_user(row)


def remove_user(session: Session, username: str) -> None:
    row = _user_row(session, username)
    session.execute(delete(WebSessionRow).where(WebSessionRow.user_id == row.id))
    session.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == row.id))
    session.delete(row)
    session.flush()


def count_enabled_admins(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(UserRow).where(
        UserRow.role == Role.ADMIN.value, UserRow.disabled.is_(False))) or 0)


# --- web sessions ------------------------------------------------------------------


def add_session(session: Session, username: str, session_sha256: str, now: dt.datetime,
                expires_at: dt.datetime) -> None:
    session.add(WebSessionRow(user=_user_row(session, username), session_sha256=session_sha256, created_at=now,
                              expires_at=expires_at))
    session.flush()


def find_session(session: Session, session_sha256: str, now: dt.datetime) -> User | None:
    """The user of a live session (not revoked, not expired, user enabled), else None."""
    row = session.scalar(select(WebSessionRow).where(WebSessionRow.session_sha256 == session_sha256))
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.user.disabled:
        return None
    return _to_user(row.user)


def revoke_session(session: Session, session_sha256: str, now: dt.datetime) -> None:
    session.execute(update(WebSessionRow).where(WebSessionRow.session_sha256 == session_sha256,
                                                WebSessionRow.revoked_at.is_(None)).values(revoked_at=now))


def revoke_user_sessions(session: Session, username: str, now: dt.datetime) -> int:
    user = _user_row(session, username)
    result = session.execute(update(WebSessionRow).where(WebSessionRow.user_id == user.id,
                                                         WebSessionRow.revoked_at.is_(None)).values(revoked_at=now))
    return int(result.rowcount or 0)


def purge_sessions(session: Session, before: dt.datetime) -> None:
    """Forget sessions that expired or were revoked before `before`."""
    session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < before))
    session.execute(delete(WebSessionRow).where(WebSessionRow.revoked_at < before))
