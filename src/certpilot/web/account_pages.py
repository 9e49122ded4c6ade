"""Pages for accounts: one's own (password, log out everywhere) and, for admins, the
lifecycle of the others (disable, enable, remove, new password)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from certpilot.domain.errors import CertpilotError
from certpilot.services import users as user_service
from certpilot.web.common import redirect, request_source
from certpilot.web.rendering import flash, render
from certpilot.web.session import Csrf, PageAdmin, PageViewer

router = APIRouter(include_in_schema=False)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: PageViewer) -> HTMLResponse:
    return render(request, "account.html", title="Your account", user=user)


@router.post("/account/password", response_class=HTMLResponse)
def change_password(request: Request, user: PageViewer, _: Csrf, current_password: Annotated[str, Form()] = "",
                    new_password: Annotated[str, Form()] = "") -> Response:
    """Change one's own password (the current one first); every session ends, this one too."""
    app = request.app.state.certpilot
    try:
        user_service.change_own_password(app, user.username, current_password, new_password,
                                         source=request_source(request))
    except user_service.AuthenticationFailed:
        return render(request, "account.html", title="Your account", user=user, status_code=422,
                      errors={"current_password": "This is not your current password."})
    except user_service.TooManyAttempts as exc:  # throttled like the login page
        page = render(request, "account.html", title="Your account", user=user, status_code=429,
                      errors={"current_password": f"Too many attempts: try again in {exc.retry_after_s} s."})
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    except CertpilotError as exc:
        return render(request, "account.html", title="Your account", user=user, status_code=422,
                      errors={"new_password": str(exc)})
    request.session.clear()
    flash(request, "ok", "Password changed: every session ended. Log in with the new password.")
    return redirect("/login")


@router.post("/account/logout-everywhere")
def logout_everywhere(request: Request, user: PageViewer, _: Csrf) -> Response:
    """End every session and revoke every API token of the logged-in user."""
    user_service.log_out_everywhere(request.app.state.certpilot, user.username, actor=user.actor)
    request.session.clear()  # its server side ended with all the others
    flash(request, "ok", "Logged out everywhere: every session and API token of yours has ended.")
    return redirect("/login")


def _done(request: Request, text: str) -> Response:
    flash(request, "ok", text)
    return redirect("/users")


def _failed(request: Request, exc: CertpilotError) -> Response:
    flash(request, "error", str(exc))
    return redirect("/users")


@router.post("/users/{name}/disable")
def disable_user(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    try:
        user_service.set_disabled(request.app.state.certpilot, name, True, actor=user.actor)
    except CertpilotError as exc:
        return _failed(request, exc)
    return _done(request, f"User {name} disabled: their sessions and tokens ended.")


@router.post("/users/{name}/enable")
def enable_user(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    try:
        user_service.set_disabled(request.app.state.certpilot, name, False, actor=user.actor)
    except CertpilotError as exc:
        return _failed(request, exc)
    return _done(request, f"User {name} enabled.")


@router.post("/users/{name}/remove")
def remove_user(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    try:
        user_service.remove_user(request.app.state.certpilot, name, actor=user.actor)
    except CertpilotError as exc:
        return _failed(request, exc)
    return _done(request, f"User {name} removed.")


@router.post("/users/{name}/password")
def set_password(request: Request, name: str, user: PageAdmin, _: Csrf,
                 password: Annotated[str, Form()] = "") -> Response:
    try:
        user_service.set_password(request.app.state.certpilot, name, password, actor=user.actor)
    except CertpilotError as exc:
        return _failed(request, exc)
    return _done(request, f"Password of {name} changed: their sessions and tokens ended.")
