"""Pages: login, dashboard, scripts, profiles, events, users and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from certpilot.domain.errors import CertpilotError, InvalidInput
from certpilot.domain.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_PENDING_DAYS,
    DEFAULT_WARNING_DAYS,
    SENSITIVE_MASK,
    DeploySettings,
    EventKind,
    KeySpec,
    NotifySettings,
    ProfileParam,
    Role,
)
from certpilot.services import dashboard as dashboard_service
from certpilot.services import events as event_service
from certpilot.services import hsm as hsm_service
from certpilot.services import profiles as profile_service
from certpilot.services import scripts as script_service
from certpilot.services import users as user_service
from certpilot.web.common import redirect, request_source
from certpilot.web.rendering import error_field, flash, render
from certpilot.web.session import Csrf, PageAdmin, PageViewer, log_in, log_out

router = APIRouter(include_in_schema=False)
KEY_SPECS = ["ec:p256", "ec:p384", "ec:p521", "rsa:2048", "rsa:3072", "rsa:4096"]


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


# --- login -------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", title="Log in", next=_safe_next(next), username="", error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, _: Csrf, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/") -> Response:
    app = request.app.state.certpilot
    try:
        principal = user_service.authenticate_password(app, username, password, source=request_source(request))
    except user_service.AuthenticationFailed:
        return render(request, "login.html", title="Log in", next=_safe_next(next), username=username,
                      error="Wrong user name or password.", status_code=401)
    except user_service.TooManyAttempts as exc:
        page = render(request, "login.html", title="Log in", next=_safe_next(next), username=username,
                      error=f"Too many login attempts: try again in {exc.retry_after_s} s.", status_code=429)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    log_in(request, principal)
    return redirect(_safe_next(next))


@router.post("/logout")
def logout(request: Request, _: Csrf) -> Response:
    log_out(request)
    return redirect("/login")


# --- dashboard and events ------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, user: PageViewer) -> HTMLResponse:
    board = dashboard_service.dashboard(request.app.state.certpilot)
    return render(request, "dashboard.html", title="Dashboard", section="Dashboard", user=user, board=board)


@router.get("/events", response_class=HTMLResponse)
def events(request: Request, user: PageViewer, kind: str = "", object: str = "", before: int | None = None) -> HTMLResponse:
    page = event_service.list_events(request.app.state.certpilot, kind=kind or None, object_name=object or None,
                                     before_id=before, limit=100)
    next_url = None
    if len(page) == 100:
        next_url = str(request.url.include_query_params(before=page[-1].id))
    return render(request, "events.html", title="Events", section="Events", user=user, events=page,
                  kinds=[k.value for k in EventKind], kind=kind, object=object, next_url=next_url)


# --- scripts -----------------------------------------------------------------


@router.get("/scripts", response_class=HTMLResponse)
def scripts(request: Request, user: PageViewer) -> HTMLResponse:
    return render(request, "scripts.html", title="Scripts", section="Scripts", user=user,
                  scripts=script_service.list_scripts(request.app.state.certpilot))


@router.post("/scripts", response_class=HTMLResponse)
async def add_script(request: Request, user: PageAdmin, _: Csrf, name: Annotated[str, Form()] = "",
                     timeout_s: Annotated[str, Form()] = "60", source: Annotated[str, Form()] = "",
                     file: Annotated[UploadFile | None, File()] = None) -> Response:
    app = request.app.state.certpilot
    form = {"name": name, "timeout_s": timeout_s, "source": source}
    if file is not None and file.filename:
        data = await file.read(script_service.MAX_SOURCE_BYTES + 1)
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            source = ""
            return _scripts_error(request, user, form, "source", "the uploaded file is not UTF-8 text")
    try:
        timeout = _int(timeout_s, "timeout_s")
        script_service.add_script(app, name, source, timeout_s=timeout, actor=user.actor)
    except CertpilotError as exc:
        return _scripts_error(request, user, form, error_field(exc, "name"), str(exc))
    flash(request, "ok", f"Script {name} added.")
    return redirect(f"/scripts/{name}")


def _scripts_error(request: Request, user, form: dict, field: str, message: str) -> HTMLResponse:  # type: ignore[no-untyped-def]
    return render(request, "scripts.html", title="Scripts", section="Scripts", user=user, status_code=422,
                  scripts=script_service.list_scripts(request.app.state.certpilot), form=form,
                  errors={field: message})


def _int(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{field.replace('_', ' ')} must be a whole number", field=field) from None


@router.get("/scripts/{name}", response_class=HTMLResponse)
def script_page(request: Request, name: str, user: PageViewer) -> HTMLResponse:
    app = request.app.state.certpilot
    return render(request, "script.html", title=f"Script {name}", section="Scripts", user=user,
                  script=script_service.get_script(app, name), profiles=profile_service.list_profiles(app), trial=None)


@router.post("/scripts/{name}", response_class=HTMLResponse)
def update_script(request: Request, name: str, user: PageAdmin, _: Csrf, source: Annotated[str, Form()] = "",
                  timeout_s: Annotated[str, Form()] = "60") -> Response:
    app = request.app.state.certpilot
    try:
        script_service.update_script(app, name, source, timeout_s=_int(timeout_s, "timeout_s"), actor=user.actor)
    except InvalidInput as exc:
        return render(request, "script.html", title=f"Script {name}", section="Scripts", user=user, status_code=422,
                      script=script_service.get_script(app, name), profiles=profile_service.list_profiles(app),
                      trial=None, form={"source": source, "timeout_s": timeout_s},
                      errors={exc.field or "source": str(exc)})
    flash(request, "ok", f"Script {name} saved.")
    return redirect(f"/scripts/{name}")


@router.post("/scripts/{name}/test", response_class=HTMLResponse)
def trial_run(request: Request, name: str, user: PageAdmin, _: Csrf, profile: Annotated[str, Form()] = "",
              common_name: Annotated[str, Form()] = "test-run.certpilot.invalid") -> HTMLResponse:
    app = request.app.state.certpilot
    try:
        trial = script_service.trial_run(app, name, profile=profile or None, common_name=common_name)
    except InvalidInput as exc:
        trial = script_service.TrialRun(False, "invalid", str(exc), "", 0.0)
    return render(request, "script.html", title=f"Script {name}", section="Scripts", user=user,
                  script=script_service.get_script(app, name), profiles=profile_service.list_profiles(app), trial=trial)


@router.post("/scripts/{name}/delete")
def remove_script(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    try:
        script_service.remove_script(request.app.state.certpilot, name, actor=user.actor)
    except CertpilotError as exc:
        flash(request, "error", str(exc))
        return redirect(f"/scripts/{name}")
    flash(request, "ok", f"Script {name} removed.")
    return redirect("/scripts")


# --- profiles ----------------------------------------------------------------


@router.get("/profiles", response_class=HTMLResponse)
def profiles(request: Request, user: PageViewer) -> HTMLResponse:
    return render(request, "profiles.html", title="Profiles", section="Profiles", user=user,
                  profiles=profile_service.list_profiles(request.app.state.certpilot))


def _profile_form_page(request: Request, user, *, creating: bool, form: dict, errors: dict | None = None,  # type: ignore[no-untyped-def]
                       status_code: int = 200) -> HTMLResponse:
    app = request.app.state.certpilot
    action = "/profiles" if creating else f"/profiles/{form['name']}"
    # the script's context.state: key names only (values may be secrets, an ACME account key), admins only
    is_admin_view = not creating and user.role is Role.ADMIN
    state_keys = profile_service.script_state_keys(app, form["name"]) if is_admin_view else None
    return render(request, "profile_form.html", title="New profile" if creating else f"Profile {form['name']}",
                  section="Profiles", user=user, creating=creating, form=form, errors=errors or {},
                  scripts=script_service.list_scripts(app), key_specs=KEY_SPECS, action=action,
                  can_edit=user.role is Role.ADMIN, state_keys=state_keys, status_code=status_code)


def _blank_rows(count: int) -> list[dict]:
    return [{"name": "", "value": "", "sensitive": False, "dynamic": False, "stored": False} for _ in range(count)]


@router.get("/profiles/new", response_class=HTMLResponse)
def new_profile(request: Request, user: PageAdmin) -> HTMLResponse:
    form = {"name": "", "script": "", "params": _blank_rows(3), "renew_before_days": None,
            "renew_before_percent": None, "warning_days": ",".join(map(str, DEFAULT_WARNING_DAYS)),
            "max_pending_days": str(DEFAULT_MAX_PENDING_DAYS),
            "default_key": "ec:p256", "concurrency": str(DEFAULT_CONCURRENCY), "allow_read": "", "allow_write": "",
            **_blank_targets()}
    return _profile_form_page(request, user, creating=True, form=form)


@router.get("/profiles/{name}", response_class=HTMLResponse)
def profile_page(request: Request, name: str, user: PageViewer) -> HTMLResponse:
    p = profile_service.get_profile(request.app.state.certpilot, name)
    rows = [{"name": x.name, "value": None if x.sensitive else x.value, "sensitive": x.sensitive,
             "dynamic": x.dynamic, "stored": x.sensitive and not x.dynamic} for x in p.params]
    if user.role is Role.ADMIN:
        rows += _blank_rows(2)
    form = {"name": p.name, "script": p.script, "params": rows,
            "renew_before_days": p.renewal.renew_before_days, "renew_before_percent": p.renewal.renew_before_percent,
            "warning_days": ",".join(map(str, p.renewal.warning_days)), "default_key": str(p.default_key),
            "max_pending_days": str(p.renewal.max_pending_days), "concurrency": str(p.sandbox.concurrency), "allow_read": "\n".join(p.sandbox.allow_read),
            "allow_write": "\n".join(p.sandbox.allow_write),
            "deploy_root": p.deploy.root or "", "deploy_command": p.deploy.command or "",
            "deploy_owner": p.deploy.owner or "", "notify_url": "", "notify_url_stored": p.notify.url is not None,
            "notify_email": p.notify.email or ""}
    return _profile_form_page(request, user, creating=False, form=form)


async def _read_profile_form(request: Request, name: str) -> tuple[dict, list[ProfileParam]]:
    """The submitted form (to show again on error) and its parameter rows. An empty
    sensitive value of an existing row means: keep the stored value."""
    data = await request.form()
    count = min(_int(str(data.get("param_count", "0")), "params"), 64)
    rows, params = [], []
    for i in range(count):  # rows added in the browser raise param_count
        pname = str(data.get(f"param_name_{i}", "")).strip()
        if f"param_name_{i}" not in data:
            continue
        value = str(data.get(f"param_value_{i}", ""))
        sensitive, dynamic = f"param_sensitive_{i}" in data, f"param_dynamic_{i}" in data
        rows.append({"name": pname, "value": "" if sensitive else value, "sensitive": sensitive,
                     "dynamic": dynamic, "stored": False})
        if not pname:
            continue
        if dynamic:
            params.append(ProfileParam(pname, None, sensitive=sensitive, dynamic=True))
        elif sensitive and value == "":
            params.append(ProfileParam(pname, SENSITIVE_MASK, sensitive=True))  # keep what is stored
        else:
            params.append(ProfileParam(pname, value, sensitive=sensitive))
    form = {"name": name or str(data.get("name", "")), "script": str(data.get("script", "")), "params": rows,
            "renew_before_days": str(data.get("renew_before_days", "")),
            "renew_before_percent": str(data.get("renew_before_percent", "")),
            "warning_days": str(data.get("warning_days", "")), "default_key": str(data.get("default_key", "ec:p256")),
            "max_pending_days": str(data.get("max_pending_days", "")),
            "concurrency": str(data.get("concurrency", "")), "allow_read": str(data.get("allow_read", "")),
            "allow_write": str(data.get("allow_write", "")),
            **{k: str(data.get(k, "")) for k in _blank_targets()},
            "notify_url_stored": "notify_url_stored" in data, "notify_url_clear": "notify_url_clear" in data}
    return form, params


def _blank_targets() -> dict:
    return {"deploy_root": "", "deploy_command": "", "deploy_owner": "", "notify_url": "", "notify_email": ""}


def _targets(form: dict) -> dict:
    """Deploy settings and notification targets from the form; an empty webhook URL keeps the stored one."""
    url = form["notify_url"].strip() or None
    if url is None and form.get("notify_url_stored") and not form.get("notify_url_clear"):
        url = SENSITIVE_MASK
    return {"deploy": DeploySettings(form["deploy_root"], form["deploy_command"], form["deploy_owner"]),
            "notify": NotifySettings(url, form["notify_email"])}


def _settings_fields(form: dict) -> dict:
    def number(field: str, kind):  # type: ignore[no-untyped-def]
        text = str(form[field]).strip()
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            raise InvalidInput(f"{field.replace('_', ' ')} must be a number", field=field) from None

    try:
        warning = [int(d) for d in str(form["warning_days"]).replace(" ", "").split(",") if d]
    except ValueError:
        raise InvalidInput("warning days are whole numbers separated by commas", field="warning_days") from None
    concurrency = number("concurrency", int)

    def lines(field: str) -> list[str]:  # one path per line
        return [line.strip() for line in str(form[field]).splitlines() if line.strip()]

    return {"renew_before_days": number("renew_before_days", int),
            "renew_before_percent": number("renew_before_percent", float),
            "warning_days": warning, "default_key": KeySpec.parse(form["default_key"]),
            "max_pending_days": number("max_pending_days", int),  # empty: the default (create), kept (update)
            "concurrency": DEFAULT_CONCURRENCY if concurrency is None else concurrency,
            "allow_read": lines("allow_read"), "allow_write": lines("allow_write"), **_targets(form)}


@router.post("/profiles", response_class=HTMLResponse)
async def create_profile(request: Request, user: PageAdmin, _: Csrf) -> Response:
    form, params = await _read_profile_form(request, "")
    if any(p.value == SENSITIVE_MASK for p in params):
        return _profile_form_page(request, user, creating=True, form=form, status_code=422,
                                  errors={"params": "give a value for every sensitive parameter that is not dynamic"})
    try:
        profile_service.create_profile(request.app.state.certpilot, form["name"], script=form["script"],
                                       params=params, actor=user.actor, **_settings_fields(form))
    except CertpilotError as exc:
        return _profile_form_page(request, user, creating=True, form=form, status_code=422,
                                  errors={error_field(exc, "form"): str(exc)})
    flash(request, "ok", f"Profile {form['name']} created.")
    return redirect(f"/profiles/{form['name']}")


@router.post("/profiles/{name}", response_class=HTMLResponse)
async def update_profile(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    form, params = await _read_profile_form(request, name)
    try:
        profile_service.update_profile(request.app.state.certpilot, name, script=form["script"], params=params,
                                       actor=user.actor, **_settings_fields(form))
    except CertpilotError as exc:
        return _profile_form_page(request, user, creating=False, form=form, status_code=422,
                                  errors={error_field(exc, "form"): str(exc)})
    flash(request, "ok", f"Profile {name} saved.")
    return redirect(f"/profiles/{name}")


@router.post("/profiles/{name}/delete")
def remove_profile(request: Request, name: str, user: PageAdmin, _: Csrf) -> Response:
    try:
        profile_service.remove_profile(request.app.state.certpilot, name, actor=user.actor)
    except CertpilotError as exc:
        flash(request, "error", str(exc))
        return redirect(f"/profiles/{name}")
    flash(request, "ok", f"Profile {name} removed.")
    return redirect("/profiles")


# --- users and tokens ----------------------------------------------------------


def _users_page(request: Request, user, **context) -> HTMLResponse:  # type: ignore[no-untyped-def]
    app = request.app.state.certpilot
    return render(request, "users.html", title="Users and tokens", section="Users", user=user,
                  users=user_service.list_users(app), tokens=user_service.list_tokens(app), **context)


@router.get("/users", response_class=HTMLResponse)
def users(request: Request, user: PageAdmin) -> HTMLResponse:
    return _users_page(request, user)


@router.post("/users", response_class=HTMLResponse)
def add_user(request: Request, user: PageAdmin, _: Csrf, username: Annotated[str, Form()] = "",
             role: Annotated[str, Form()] = "viewer", password: Annotated[str, Form()] = "") -> Response:
    try:
        user_service.add_user(request.app.state.certpilot, username, user_service.parse_role(role), password,
                              actor=user.actor)
    except CertpilotError as exc:
        return _users_page(request, user, form={"username": username, "role": role}, status_code=422,
                           errors={error_field(exc, "name"): str(exc)})
    flash(request, "ok", f"User {username} added as {role}.")
    return redirect("/users")


@router.post("/tokens", response_class=HTMLResponse)
def create_token(request: Request, user: PageAdmin, _: Csrf, username: Annotated[str, Form()] = "",
                 label: Annotated[str, Form()] = "web", expires_in_days: Annotated[str, Form()] = "") -> Response:
    try:
        days = _int(expires_in_days, "expires_in_days") if expires_in_days.strip() else None
        token, _info = user_service.create_token(request.app.state.certpilot, username, name=label or "web",
                                                 expires_in_days=days, actor=user.actor)
    except CertpilotError as exc:
        return _users_page(request, user, status_code=422, errors={error_field(exc, "expires_in_days"): str(exc)})
    return _users_page(request, user, new_token=token, new_token_user=username)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int, user: PageAdmin, _: Csrf) -> Response:
    user_service.revoke_token(request.app.state.certpilot, token_id, actor=user.actor)
    flash(request, "ok", f"Token {token_id} revoked.")
    return redirect("/users")


# --- HSM groups ----------------------------------------------------------------


def _hsm_page(request: Request, user, **context) -> HTMLResponse:  # type: ignore[no-untyped-def]
    return render(request, "hsm.html", title="HSM groups", section="HSM", user=user,
                  groups=hsm_service.list_groups(request.app.state.certpilot), **context)


@router.get("/hsm", response_class=HTMLResponse)
def hsm_groups(request: Request, user: PageViewer) -> HTMLResponse:
    return _hsm_page(request, user, check=None)


@router.post("/hsm", response_class=HTMLResponse)
def add_hsm_group(request: Request, user: PageAdmin, _: Csrf, name: Annotated[str, Form()] = "",
                  module_path: Annotated[str, Form()] = "", token_label: Annotated[str, Form()] = "",
                  pin: Annotated[str, Form()] = "", module_env: Annotated[str, Form()] = "") -> Response:
    try:
        env: dict[str, str] = {}
        for line in filter(None, (line.strip() for line in module_env.splitlines())):
            key, sep, value = line.partition("=")
            if not sep or not key or key in env:
                raise InvalidInput(f"environment line {line!r}: give NAME=VALUE, each name once", field="module_env")
            env[key] = value
        hsm_service.add_group(request.app.state.certpilot, name, module_path=module_path, token_label=token_label,
                              pin=pin, actor=user.actor, module_env=env)
    except CertpilotError as exc:
        return _hsm_page(request, user, check=None, status_code=422,
                         form={"name": name, "module_path": module_path, "token_label": token_label,
                               "module_env": module_env},
                         errors={error_field(exc, "name"): str(exc)})
    flash(request, "ok", f"HSM group {name} added.")
    return redirect("/hsm")


@router.post("/hsm/{name}/check", response_class=HTMLResponse)
def check_hsm_group(request: Request, name: str, user: PageAdmin, _: Csrf) -> HTMLResponse:
    try:
        info = hsm_service.check_group(request.app.state.certpilot, name)
        check = {"ok": True, "message": f"{name}: logged in to token {info.label!r} "
                                        f"({info.manufacturer}, {info.model}, serial {info.serial})."}
    except CertpilotError as exc:
        check = {"ok": False, "message": f"{name}: {exc}"}
    return _hsm_page(request, user, check=check)
