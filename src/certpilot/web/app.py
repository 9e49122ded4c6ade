"""Mounting the web UI on the FastAPI application."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from certpilot.services.app import App
from certpilot.web import account_pages, certificate_pages, pages
from certpilot.web.session import SESSION_MAX_AGE_S, LoginRequired, SecurityHeaders, SessionForApi


def mount_web(api: FastAPI, app: App, *, https_only: bool) -> None:
    """Pages at `/`, static files at `/static`, a signed session cookie (key derived from
    the master key, so every server of an installation accepts it)."""
    api.add_middleware(SessionForApi)  # inside the session middleware: it reads the session
    api.add_middleware(
        SessionMiddleware,
        secret_key=app.sealer.derive_key("certpilot web session v1").hex(),
        session_cookie="certpilot_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=https_only,
    )
    api.add_middleware(SecurityHeaders, hsts=https_only)
    api.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    favicon = (Path(__file__).parent / "static" / "favicon.svg").read_bytes()

    @api.get("/favicon.ico", include_in_schema=False)
    def _favicon() -> Response:  # browsers ask for it whatever the page says: never a 404
        return Response(favicon, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    api.include_router(pages.router)
    api.include_router(certificate_pages.router)
    api.include_router(account_pages.router)

    @api.exception_handler(LoginRequired)
    async def _login_required(request: Request, _: LoginRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
