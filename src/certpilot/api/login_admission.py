"""At most a few password logins in the server at once, decided on the event loop.

A password check holds a worker thread while it waits for a hashing slot (see
`services.passwords`); without this, a flood of logins could hold every thread of
the pool and leave none for authorised requests. Requests that carry a password
(HTTP Basic, the login and password forms) beyond `MAX_LOGINS_IN_FLIGHT` are
answered 429 with Retry-After at once, without a thread and without reading
their body.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LOGINS_IN_FLIGHT = 8
RETRY_AFTER_S = 1
_PASSWORD_FORMS = ("/login", "/account/password")


def carries_password(scope: Any) -> bool:
    if scope.get("method") == "POST" and scope.get("path") in _PASSWORD_FORMS:
        return True
    for name, value in scope.get("headers") or []:
        if name == b"authorization" and value[:6].lower() == b"basic ":
            return True
    return False


class LoginAdmission:
    """ASGI middleware; the event loop is one thread, so a plain counter is enough."""

    def __init__(self, app: Any, max_in_flight: int = MAX_LOGINS_IN_FLIGHT) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not carries_password(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await _too_many(scope, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _too_many(scope: Any, send: Any) -> None:
    detail = f"too many login attempts in progress; try again in {RETRY_AFTER_S} s"
    if scope.get("path", "").startswith("/api/"):
        body = json.dumps({"type": "about:blank", "title": "Too Many Requests", "status": 429,
                           "detail": detail}).encode()
        content_type = b"application/problem+json"
    else:
        body = f"Too many login attempts: {detail}\n".encode()
        content_type = b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
