"""Small helpers every page module shares: the redirect after a form, and who sent a request."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse


def redirect(url: str) -> RedirectResponse:
    """See other (303): a form's answer, so that reloading the page does not post it again."""
    return RedirectResponse(url, status_code=303)


def request_source(request: Request) -> str:
    """Where a request came from, as events and the login throttle name it."""
    return f"web from {request.client.host if request.client else 'unknown'}"
