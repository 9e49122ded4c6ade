"""Web sessions: a signed cookie (HttpOnly, SameSite=Strict, Secure over TLS) carrying a
random session id that the server checks on every request (so logging out, a password
change, disabling or removing the user ends it at once), CSRF tokens, security
headers, and the logged-in user as a `Principal`."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from certpilot.domain.model import Principal, Role
from certpilot.services.users import SESSION_LIFETIME, SESSION_PRINCIPAL_KEY, end_session, session_principal as live_session, start_session

SESSION_MAX_AGE_S = int(SESSION_LIFETIME.total_seconds())  # the cookie lives as long as the server's session
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to /login."""


HSTS = "max-age=31536000"


class SecurityHeaders(BaseHTTPMiddleware):
    """CSP (every page, /api/docs too), nosniff, no framing, same-origin referrers, no
    caching of pages; with `hsts` (served over TLS) Strict-Transport-Security."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        super().__init__(app)
        self.hsts = hsts

    async def dispatch(self, request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        if self.hsts:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(("/static/", "/healthz", "/readyz")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def log_in(request: Request, principal: Principal) -> None:
    """A new server-side session for `principal`; the one this browser had before ends."""
    previous = request.session.get("sid")
    if isinstance(previous, str) and previous:
        end_session(request.app.state.certpilot, previous)
    session_id = start_session(request.app.state.certpilot, principal)
    request.session.clear()
    request.session.update({"sid": session_id, "csrf": secrets.token_urlsafe(32)})


def log_out(request: Request) -> None:
    """End the session on the server, then forget the cookie."""
    session_id = request.session.get("sid")
    if isinstance(session_id, str) and session_id:
        end_session(request.app.state.certpilot, session_id)
    request.session.clear()


def session_principal(request: Request) -> Principal | None:
    """The user of this browser's session while the server holds it live, else None."""
    return _principal_from(request.app.state.certpilot, request.session)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """Every form POST carries the session's CSRF token."""
    expected = request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(expected), csrf):
        raise HTTPException(403, "the form has expired or did not come from this site: reload the page and try again")


def page_user(request: Request) -> Principal:
    """The logged-in user, with the role the database gives them now."""
    principal = session_principal(request)
    if principal is None:
        request.session.clear()
        raise LoginRequired()
    return principal


def page_role(role: Role):  # type: ignore[no-untyped-def]
    def dependency(principal: Annotated[Principal, Depends(page_user)]) -> Principal:
        if not principal.role.allows(role):
            raise HTTPException(403, f"this needs the {role.value} role; you are {principal.role.value}")
        return principal

    return dependency


PageViewer = Annotated[Principal, Depends(page_user)]
PageOperator = Annotated[Principal, Depends(page_role(Role.OPERATOR))]
PageAdmin = Annotated[Principal, Depends(page_role(Role.ADMIN))]
Csrf = Annotated[None, Depends(check_csrf)]


CSRF_HEADER = "x-csrf-token"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class SessionForApi:
    """Lets a logged-in browser call the API with its session (DESIGN §5), when the request
    carries no Authorization header. A state-changing call must also send the session's
    CSRF token in an `X-CSRF-Token` header, which a cross-site form cannot do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope.get("path", "").startswith("/api/"):
            headers = dict(scope.get("headers") or [])
            session = scope.get("session") or {}
            if b"authorization" not in headers and session.get("sid"):
                expected = str(session.get("csrf", ""))
                sent = headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")
                if scope.get("method") not in _UNSAFE or (expected and hmac.compare_digest(expected, sent)):
                    principal = _principal_from(scope["app"].state.certpilot, session)
                    if principal is not None:
                        scope[SESSION_PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def _principal_from(app, data) -> Principal | None:  # type: ignore[no-untyped-def]
    session_id = data.get("sid")
    if not isinstance(session_id, str) or not session_id:
        return None
    return live_session(app, session_id)
