"""Errors as `application/problem+json` (RFC 9457), mapped from the domain in one place."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from certpilot.domain.errors import (
    CertpilotError,
    ConfigurationError,
    Conflict,
    DeployFailed,
    InvalidInput,
    IssuerFailed,
    KeyBackendError,
    NotFound,
)
from certpilot.services.users import AuthenticationFailed, TooManyAttempts

log = logging.getLogger("certpilot.api")

_STATUS: list[tuple[type[CertpilotError], int, str]] = [
    (NotFound, 404, "Not Found"),
    (Conflict, 409, "Conflict"),
    (InvalidInput, 422, "Invalid input"),
    (AuthenticationFailed, 401, "Unauthorized"),
    (TooManyAttempts, 429, "Too Many Requests"),
    (IssuerFailed, 502, "Issuer failed"),
    (KeyBackendError, 502, "Key backend error"),
    (DeployFailed, 502, "Deployment failed"),
    (ConfigurationError, 503, "Service unavailable"),
]


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/metrics", "/healthz", "/readyz")) or not hasattr(
        request.app.state, "html_errors"
    )


def _html(request: Request, status: int, title: str, detail: str) -> Response:
    return request.app.state.html_errors(request, status, title, detail)  # type: ignore[no-any-return]


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install(api: FastAPI) -> None:
    @api.exception_handler(CertpilotError)
    async def _domain(request: Request, exc: CertpilotError) -> Response:
        for kind, status, title in _STATUS:
            if isinstance(exc, kind):
                if not _is_api(request):
                    return _html(request, status, title, str(exc))
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                if isinstance(exc, TooManyAttempts):
                    headers = {"Retry-After": str(exc.retry_after_s)}
                field = getattr(exc, "field", None)
                return problem(status, title, str(exc), headers, **({"field": field} if field else {}))
        return problem(500, "Internal error", str(exc))

    @api.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return problem(422, "Invalid input", detail, errors=[
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))} for e in errors[:20]
        ])

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        detail = "an unexpected error occurred; the server log has the details"
        if not _is_api(request):
            return _html(request, 500, "Internal error", detail)
        return problem(500, "Internal error", detail)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not _is_api(request):
            return _html(request, exc.status_code, _title(exc.status_code), str(exc.detail))
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), dict(exc.headers or {}))


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class RejectControlCharacters:
    """400 for a path or query string carrying control characters (NUL above all: no
    database stores it, and no name of certpilot's contains one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("path", "") + unquote(scope.get("query_string", b"").decode("latin-1"))
            if any(ord(c) < 32 or ord(c) == 127 for c in raw):
                response = problem(400, "Bad Request", "the path or query holds control characters")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
