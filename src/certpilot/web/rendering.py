"""Rendering pages: the template environment and what every page gets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from certpilot.domain.errors import Conflict
from certpilot.domain.model import Principal, Role
from certpilot.services.views import timestamp
from certpilot.web.session import csrf_token, session_principal

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _ago(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if abs(seconds) >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{seconds} s ago"


def flash(request: Request, kind: str, text: str) -> None:
    """A message shown once on the next page (kind: ok, error)."""
    request.session.setdefault("flashes", []).append([kind, text])


def render(request: Request, template: str, *, title: str, section: str = "", status_code: int = 200,
           user: Principal | None = None, **context: Any) -> HTMLResponse:
    app = request.app.state.certpilot
    now = app.clock.now()
    flashes = request.session.pop("flashes", []) if "session" in request.scope else []
    return templates.TemplateResponse(
        request,
        template,
        {
            "title": title, "section": section, "user": user or session_principal(request),
            "csrf": csrf_token(request), "flashes": flashes, "roles": Role, "now": now,
            "ts": timestamp, "ago": lambda value: _ago(value, now), "errors": {}, "form": {},
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", title=title, message=message, status_code=status)


def error_field(exc: Exception, default: str = "form") -> str:
    """Which form field an error belongs next to: the one it names, the name field for
    an 'exists already' conflict, else the form as a whole."""
    field = getattr(exc, "field", None)
    if field:
        return str(field)
    return "name" if isinstance(exc, Conflict) else default
