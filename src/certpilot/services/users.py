"""Users, passwords, API tokens and authentication."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from certpilot.domain.errors import CertpilotError, InvalidInput
from certpilot.domain.model import NAME_RE, ApiToken, EventKind, Principal, Role, User, check_name
from certpilot.services.app import App
from certpilot.store import users as repo
from certpilot.store.events import record_event

# Where an edge leaves the principal of a web session for the API's authentication to find.
SESSION_PRINCIPAL_KEY = "certpilot.principal"

TOKEN_PREFIX = "cpt_"
MIN_PASSWORD_CHARS = 12
_hasher = PasswordHasher()


class AuthenticationFailed(CertpilotError):
    """Wrong credentials, or a revoked or expired token. Says nothing more on purpose."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput(f"role {text!r} is not one of admin, operator, viewer", field="role") from None


def add_user(app: App, username: str, role: Role, password: str, *, actor: str) -> User:
    check_name(username, "user")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD_CHARS} characters", field="password")
    now = app.clock.now()
    with app.db.transaction() as session:
        user = repo.add_user(session, username, hash_password(password), role.value, now)
        record_event(session, at=now, actor=actor, kind=EventKind.USER_CHANGED, object_type="user",
                     object_name=username, details={"action": "created", "role": role.value})
    return user


def current_role(app: App, username: str) -> Role | None:
    """The user's role now, or None for an unknown or disabled user (sessions use this,
    so a demotion applies at once)."""
    with app.db.read() as session:
        found = repo.password_hash(session, username)
    if found is None or found[0].disabled:
        return None
    return found[0].role


def list_users(app: App) -> list[User]:
    with app.db.read() as session:
        return repo.list_users(session)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(app: App, username: str, *, name: str = "api", expires_in_days: int | None = None,
                 actor: str) -> tuple[str, ApiToken]:
    """A new random token for `username`: returned once, stored only as its SHA-256."""
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise InvalidInput("--expires-in must be between 1 and 3650 days", field="expires_in_days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = app.clock.now()
    expires_at = now + dt.timedelta(days=expires_in_days) if expires_in_days else None
    with app.db.transaction() as session:
        info = repo.add_token(session, username, name=name, token_sha256=token_digest(token),
                              prefix=token[: len(TOKEN_PREFIX) + 6], now=now, expires_at=expires_at)
        record_event(session, at=now, actor=actor, kind=EventKind.TOKEN_CREATED, object_type="user",
                     object_name=username, details={"token_id": info.id, "name": name,
                                                    "expires_at": expires_at.isoformat() if expires_at else None})
    return token, info


def list_tokens(app: App, username: str | None = None) -> list[ApiToken]:
    with app.db.read() as session:
        return repo.list_tokens(session, username)


def revoke_token(app: App, token_id: int, *, actor: str) -> ApiToken:
    now = app.clock.now()
    with app.db.transaction() as session:
        info = repo.revoke_token(session, token_id, now)
        record_event(session, at=now, actor=actor, kind=EventKind.TOKEN_REVOKED, object_type="user",
                     object_name=info.username, details={"token_id": token_id})
    return info


def authenticate_token(app: App, token: str) -> Principal:
    now = app.clock.now()
    with app.db.read() as session:  # every API request passes here: no write lock for it
        found = repo.find_token(session, token_digest(token))
    if found is None:
        raise AuthenticationFailed("invalid token")
    info, user = found
    if info.revoked_at is not None or (info.expires_at is not None and info.expires_at <= now) or user.disabled:
        raise AuthenticationFailed("invalid token")
    if info.last_used_at is None or now - info.last_used_at > dt.timedelta(minutes=1):
        with app.db.transaction() as session:
            repo.touch_token(session, info.id, now)  # at most one write a minute per token
    return Principal(username=user.username, role=user.role, via=f"token:{info.name}")


class LoginThrottle:
    """Slows down repeated failed logins per user name: 0.5 s doubling to 8 s."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def delay_s(self, username: str) -> float:
        with self._lock:
            n = self._failures.get(username, 0)
        return 0.0 if n == 0 else min(0.5 * 2 ** (n - 1), 8.0)

    def failed(self, username: str) -> None:
        with self._lock:
            self._failures[username] = min(self._failures.get(username, 0) + 1, 16)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)


_throttle = LoginThrottle()


def authenticate_password(app: App, username: str, password: str, *, source: str) -> Principal:
    """Check a password; a failure is slowed down, recorded as LOGIN_FAILED, and says nothing more."""
    throttle_key = f"{username}\x1f{source}"  # per name and origin: nobody slows another's logins
    time.sleep(_throttle.delay_s(throttle_key))
    found = None
    if NAME_RE.fullmatch(username):  # a name no user can have is not looked up
        with app.db.transaction() as session:
            found = repo.password_hash(session, username)
    ok = False
    if found is not None and not found[0].disabled:
        try:
            ok = _hasher.verify(found[1], password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        _hasher.hash(password)  # the same work either way: no user enumeration by timing
    if not ok:
        _throttle.failed(throttle_key)
        now = app.clock.now()
        shown = "".join(c if c.isprintable() else "?" for c in username[:128])
        with app.db.transaction() as session:
            record_event(session, at=now, actor=f"anonymous ({source})", kind=EventKind.LOGIN_FAILED,
                         object_type="user", object_name=shown, details={"source": source})
        raise AuthenticationFailed("wrong user name or password")
    _throttle.succeeded(throttle_key)
    user = found[0]  # type: ignore[index]
    return Principal(username=user.username, role=user.role, via="password")
