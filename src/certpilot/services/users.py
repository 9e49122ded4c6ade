"""Users, passwords, API tokens, web sessions and authentication.

Rules kept here (README "Security"):
- a token made with a token is its child: it expires no later than its parent,
  carries no more than its parent's role, and dies when its parent is revoked
  or expires;
- logging out ends that web session on the server; a password change, disable,
  remove and "log out everywhere" end every session and token of the user;
- password checks are bounded (see `services.passwords`), and repeated failures
  from one place for one name are answered 429 with Retry-After, not slept on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets

from certpilot.domain.errors import CertpilotError, Conflict, InvalidInput, NotFound
from certpilot.domain.model import NAME_RE, ApiToken, EventKind, Principal, Role, User, check_name
from certpilot.services.app import App
from certpilot.services.passwords import TooManyAttempts
from certpilot.store import users as repo
from certpilot.store.events import record_event

# Where an edge leaves the principal of a web session for the API's authentication to find.
SESSION_PRINCIPAL_KEY = "certpilot.principal"

TOKEN_PREFIX = "cpt_"
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
SESSION_LIFETIME = dt.timedelta(hours=8)

__all__ = ["TooManyAttempts"]  # re-exported for the edges


class AuthenticationFailed(CertpilotError):
    """Wrong credentials, or a revoked or expired token. Says nothing more on purpose."""


def hash_password(app: App, password: str) -> str:
    return app.passwords.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput(f"role {text!r} is not one of admin, operator, viewer", field="role") from None


def lesser_role(a: Role, b: Role) -> Role:
    return a if b.allows(a) else b


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"the password must have at most {MAX_PASSWORD_CHARS} characters", field="password")


def add_user(app: App, username: str, role: Role, password: str, *, actor: str) -> User:
    check_name(username, "user")
    _check_password(password)
    password_hash = hash_password(app, password)
    now = app.clock.now()
    with app.db.transaction() as session:
        user = repo.add_user(session, username, password_hash, role.value, now)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "created", "role": role.value})
    return user


def list_users(app: App) -> list[User]:
    with app.db.read() as session:
        return repo.list_users(session)


def _end_everything(session, username: str, now: dt.datetime) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {"sessions_ended": repo.revoke_user_sessions(session, username, now),
            "tokens_revoked": repo.revoke_user_tokens(session, username, now)}


def _keep_an_admin(session, username: str) -> None:  # type: ignore[no-untyped-def]
    found = repo.password_hash(session, username)
    if found is not None and found[0].role is Role.ADMIN and not found[0].disabled \
            and repo.count_enabled_admins(session) <= 1:
        raise Conflict(f"{username} is the last enabled administrator: add or enable another admin first")


def set_password(app: App, username: str, password: str, *, actor: str) -> User:
    """A new password for `username`; every session and token of the user ends."""
    _check_password(password)
    password_hash = hash_password(app, password)
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.set_password_hash(session, username, password_hash)
        ended = _end_everything(session, username, now)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "password changed", **ended})
        return repo.password_hash(session, username)[0]  # type: ignore[index]


def change_own_password(app: App, username: str, current: str, new: str, *, source: str) -> User:
    """A user changes their own password, proving the current one first."""
    authenticate_password(app, username, current, source=source)
    return set_password(app, username, new, actor=f"{username} (self)")


def set_disabled(app: App, username: str, disabled: bool, *, actor: str) -> User:
    """Disable (every session and token ends at once) or enable a user."""
    now = app.clock.now()
    with app.db.transaction() as session:
        ended: dict[str, int] = {}
        if disabled:
            _keep_an_admin(session, username)
            ended = _end_everything(session, username, now)
        user = repo.set_disabled(session, username, disabled)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "disabled" if disabled else "enabled", **ended})
    return user


def remove_user(app: App, username: str, *, actor: str) -> None:
    """Remove a user with their tokens and sessions (the events they caused stay)."""
    now = app.clock.now()
    with app.db.transaction() as session:
        _keep_an_admin(session, username)
        repo.remove_user(session, username)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "removed"})


def log_out_everywhere(app: App, username: str, *, actor: str) -> dict[str, int]:
    """End every web session and revoke every API token of `username`."""
    now = app.clock.now()
    with app.db.transaction() as session:
        ended = _end_everything(session, username, now)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "logged out everywhere", **ended})
    return ended


# --- API tokens ------------------------------------------------------------------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(app: App, username: str, *, name: str = "api", expires_in_days: int | None = None,
                 role: Role | None = None, parent_token_id: int | None = None, actor: str) -> tuple[str, ApiToken]:
    """A new random token for `username`: returned once, stored only as its SHA-256.

    With `parent_token_id` (a token made with a token) the new token expires no later
    than its parent, carries at most its parent's role, and dies with it. `role` may
    narrow the token below its user's role, never widen it."""
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise InvalidInput("--expires-in must be between 1 and 3650 days", field="expires_in_days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = app.clock.now()
    expires_at = now + dt.timedelta(days=expires_in_days) if expires_in_days else None
    with app.db.transaction() as session:
        found = repo.password_hash(session, username)
        if found is None:
            raise NotFound("user", username)
        ceiling = found[0].role
        if parent_token_id is not None:
            parent = repo.get_token(session, parent_token_id)
            if parent.username != username:
                raise InvalidInput("a token can only make tokens for its own user", field="username")
            if parent.role is not None:
                ceiling = lesser_role(ceiling, parent.role)
            if parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
                expires_at = parent.expires_at  # never outlives its parent
        if role is not None and not ceiling.allows(role):
            raise InvalidInput(f"a token for {username} can carry at most the {ceiling.value} role", field="role")
        if role is None and parent_token_id is not None and ceiling is not found[0].role:
            role = ceiling  # the parent's narrower role is inherited
        info = repo.add_token(session, username, name=name, token_sha256=token_digest(token),
                              prefix=token[: len(TOKEN_PREFIX) + 6], now=now, expires_at=expires_at,
                              parent_id=parent_token_id, role=role)
        record_event(session, at=now, actor=actor, kind=EventKind.TOKEN_CREATED, object_type="user",
                     object_name=username, details={
                         "token_id": info.id, "name": name, "parent_token_id": parent_token_id,
                         "role": role.value if role else None,
                         "expires_at": expires_at.isoformat() if expires_at else None})
    return token, info


def list_tokens(app: App, username: str | None = None) -> list[ApiToken]:
    with app.db.read() as session:
        return repo.list_tokens(session, username)


def revoke_token(app: App, token_id: int, *, actor: str) -> ApiToken:
    """Revoke a token and every token made with it (and theirs)."""
    now = app.clock.now()
    with app.db.transaction() as session:
        info = repo.revoke_token(session, token_id, now)
        record_event(session, at=now, actor=actor, kind=EventKind.TOKEN_REVOKED, object_type="user",
                     object_name=info.username, details={"token_id": token_id})
    return info


def _is_live(token: ApiToken, now: dt.datetime) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > now)


def authenticate_token(app: App, token: str) -> Principal:
    now = app.clock.now()
    with app.db.read() as session:  # every API request passes here: no write lock for it
        found = repo.find_token(session, token_digest(token))
        lineage = repo.ancestors(session, found[0].parent_id) if found is not None else []
    if found is None:
        raise AuthenticationFailed("invalid token")
    info, user = found
    if user.disabled or not all(_is_live(t, now) for t in (info, *lineage)):
        raise AuthenticationFailed("invalid token")
    if info.last_used_at is None or now - info.last_used_at > dt.timedelta(minutes=1):
        with app.db.transaction() as session:
            repo.touch_token(session, info.id, now)  # at most one write a minute per token
    role = user.role
    for t in (info, *lineage):
        if t.role is not None:
            role = lesser_role(role, t.role)
    return Principal(username=user.username, role=role, via=f"token:{info.name}", token_id=info.id)


# --- web sessions ----------------------------------------------------------------


def start_session(app: App, principal: Principal) -> str:
    """A new server-side session for a user who just logged in: the random id for the
    cookie (only its SHA-256 is stored)."""
    session_id = secrets.token_urlsafe(32)
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.purge_sessions(session, now - dt.timedelta(days=1))
        repo.add_session(session, principal.username, token_digest(session_id), now, now + SESSION_LIFETIME)
    return session_id


def session_principal(app: App, session_id: str) -> Principal | None:
    """The user of a live session, with the role the database gives them now; None when
    the session was ended, expired, or its user disabled or removed."""
    with app.db.read() as session:
        user = repo.find_session(session, token_digest(session_id), app.clock.now())
    return None if user is None else Principal(username=user.username, role=user.role, via="web session")


def end_session(app: App, session_id: str) -> None:
    with app.db.transaction() as session:
        repo.revoke_session(session, token_digest(session_id), app.clock.now())


# --- passwords ---------------------------------------------------------------------


def _shown_username(username: str, exists: bool) -> str:
    """The name a LOGIN_FAILED event shows: an existing user's name, else only a hash of
    what was typed (it may be a password typed into the wrong box; viewers see events)."""
    if exists:
        return username
    return f"unknown user (sha256:{hashlib.sha256(username.encode('utf-8', 'replace')).hexdigest()[:12]})"


def authenticate_password(app: App, username: str, password: str, *, source: str) -> Principal:
    """Check a password; a failure is recorded as LOGIN_FAILED and says nothing more.
    Raises TooManyAttempts (429) when this name failed here moments ago, or when too
    many password checks are in flight."""
    throttle_key = f"{username}\x1f{source}"  # per name and origin: nobody locks another out
    wait_s = app.passwords.throttle.retry_after_s(throttle_key)
    if wait_s > 0:
        raise TooManyAttempts(max(1, math.ceil(wait_s)))
    found = None
    if NAME_RE.fullmatch(username):  # a name no user can have is not looked up
        with app.db.read() as session:
            found = repo.password_hash(session, username)
    usable = found is not None and not found[0].disabled
    ok = app.passwords.verify(found[1] if usable else None, password)  # type: ignore[index]
    if not ok:
        app.passwords.throttle.failed(throttle_key)
        now = app.clock.now()
        with app.db.transaction() as session:
            record_event(session, at=now, actor=f"anonymous ({source})", kind=EventKind.LOGIN_FAILED,
                         object_type="user", object_name=_shown_username(username, found is not None),
                         details={"source": source})
        raise AuthenticationFailed("wrong user name or password")
    app.passwords.throttle.succeeded(throttle_key)
    user = found[0]  # type: ignore[index]
    return Principal(username=user.username, role=user.role, via="password")
