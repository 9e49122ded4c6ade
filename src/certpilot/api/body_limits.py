"""Request bodies are judged before they are read.

A body larger than its route's limit is refused with 413: at once when
`Content-Length` says so (nothing of it is read), else as soon as the bytes
counted so far pass the limit (chunked bodies). The limits:

    scripts (API and web forms)   2 MiB  (a 1 MiB source in its JSON or form encoding)
    web profile forms             1 MiB  (parameters hold PEMs)
    the rest of the API (JSON)    1 MiB
    other web forms (login, …)   64 KiB
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException

KIB = 1024
MIB = 1024 * KIB
SCRIPT_BODY_BYTES = 2 * MIB
PROFILE_FORM_BYTES = 1 * MIB
API_BODY_BYTES = 1 * MIB
FORM_BODY_BYTES = 64 * KIB


def body_limit(path: str) -> int:
    """The most bytes a request body to `path` may have."""
    if path.startswith(("/api/v1/scripts", "/scripts")):
        return SCRIPT_BODY_BYTES
    if path.startswith("/api/"):
        return API_BODY_BYTES
    if path.startswith("/profiles"):
        return PROFILE_FORM_BYTES
    return FORM_BODY_BYTES


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n // KIB} KiB"


class BodyTooLarge(HTTPException):
    """413, with the limit in its detail."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {_size(limit)}, the most this route takes")


class LimitBodySize:
    """ASGI middleware; outermost, so nothing reads a body before it is judged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope.get("path", ""))
        declared = None
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(scope, send, 400, "Content-Length is not a number")
                    return
        if declared is not None and declared > limit:
            await _refuse(scope, send, 413, BodyTooLarge(limit).detail)
            return

        received = 0
        exceeded = False
        answered = False

        async def counted_receive() -> Any:
            # past the limit the app is told the client left: whatever it does with that,
            # what goes out is the 413 below (an exception raised here could reach the
            # client as some other error, wrapped by the middlewares in between)
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Any) -> None:
            nonlocal answered
            if exceeded:
                if not answered:
                    answered = True
                    await _refuse(scope, send, 413, BodyTooLarge(limit).detail)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not answered:
            await _refuse(scope, send, 413, BodyTooLarge(limit).detail)


async def _refuse(scope: Any, send: Any, status: int, detail: str) -> None:
    """A problem+json answer for the API, plain text for pages; the connection closes."""
    title = "Content Too Large" if status == 413 else "Bad Request"
    if scope.get("path", "").startswith("/api/"):
        body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
        content_type = b"application/problem+json"
    else:
        body = f"{title}: {detail}\n".encode()
        content_type = b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
