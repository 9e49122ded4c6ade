"""Certificate management profiles: create, list, show, remove."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_KEY_SPEC,
    DEFAULT_MAX_PENDING_DAYS,
    DEFAULT_WARNING_DAYS,
    PARAM_NAME_RE,
    SENSITIVE_MASK,
    EventKind,
    KeySpec,
    Profile,
    ProfileParam,
    RenewalSettings,
    SandboxSettings,
    DeploySettings,
    NotifySettings,
    check_name,
)
from certpilot.domain.paths import checked_path, guard
from certpilot.services.app import App
from certpilot.services.deployment import check_deploy
from certpilot.services.notifications import check_notify
from certpilot.store.deployments import forget_deployments
from certpilot.store import profiles as repo
from certpilot.store import script_state
from certpilot.store.events import record_event
from certpilot.store.wakeup import notify_wake

MAX_PARAMS = 64
MAX_VALUE_CHARS = 16 * 1024
MAX_CONCURRENCY = 256
MAX_GRANTED_PATHS = 64


def check_params(params: Sequence[ProfileParam]) -> tuple[ProfileParam, ...]:
    seen: set[str] = set()
    if len(params) > MAX_PARAMS:
        raise InvalidInput(f"a profile takes at most {MAX_PARAMS} parameters", field="params")
    for p in params:
        if not PARAM_NAME_RE.fullmatch(p.name):
            raise InvalidInput(
                f"parameter name {p.name!r} is not valid: use letters, digits, '_', '.' or '-', "
                "starting with a letter or '_'",
                field="params",
            )
        if p.name in seen:
            raise InvalidInput(f"parameter {p.name!r} is given twice", field="params")
        seen.add(p.name)
        if p.dynamic and p.value is not None:
            raise InvalidInput(
                f"parameter {p.name!r} is dynamic: it takes no value in the profile; "
                "each certificate gives its own",
                field="params",
            )
        if not p.dynamic and p.value is None:
            raise InvalidInput(f"parameter {p.name!r} needs a value (or mark it dynamic)", field="params")
        if p.value is not None and len(p.value) > MAX_VALUE_CHARS:
            raise InvalidInput(f"the value of parameter {p.name!r} is too long", field="params")
    return tuple(params)


MAX_PENDING_DAYS_LIMIT = 365


def check_renewal(
    renew_before_days: int | None, renew_before_percent: float | None, warning_days: Sequence[int] | None,
    max_pending_days: int | None = None,
) -> RenewalSettings:
    if renew_before_days is not None and renew_before_percent is not None:
        raise InvalidInput("give either renew_before_days or renew_before_percent, not both", field="renew_before_days")
    if renew_before_days is not None and not 0 < renew_before_days <= 3650:
        raise InvalidInput("renew_before_days must be between 1 and 3650", field="renew_before_days")
    if renew_before_percent is not None and not 0 < renew_before_percent < 100:
        raise InvalidInput("renew_before_percent must be greater than 0 and less than 100", field="renew_before_percent")
    days = tuple(warning_days) if warning_days is not None else DEFAULT_WARNING_DAYS
    if any(d < 0 or d > 3650 for d in days):
        raise InvalidInput("warning days must be between 0 and 3650", field="warning_days")
    if max_pending_days is not None and not 1 <= max_pending_days <= MAX_PENDING_DAYS_LIMIT:
        raise InvalidInput(f"max_pending_days must be between 1 and {MAX_PENDING_DAYS_LIMIT}", field="max_pending_days")
    return RenewalSettings(
        renew_before_days=renew_before_days,
        renew_before_percent=renew_before_percent,
        warning_days=tuple(sorted(set(days), reverse=True)),
        max_pending_days=max_pending_days if max_pending_days is not None else DEFAULT_MAX_PENDING_DAYS,
    )


def check_sandbox(
    concurrency: int,
    allow_read: Iterable[str],
    allow_write: Iterable[str],
    *,
    protected: Sequence[tuple[str, Path]] = (),
) -> SandboxSettings:
    """The sandbox settings, with each path normalised and given once.

    `protected` names what a grant may not be, lie inside or contain (certpilot's
    data dir, master key file, database), as (what, path) pairs.
    Raises InvalidInput (its `field` is `concurrency`, `allow_read` or `allow_write`).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {concurrency!r}",
                           field="concurrency")
    guarded = guard(protected)
    grants: dict[str, tuple[str, ...]] = {}
    for field, paths in (("allow_read", allow_read), ("allow_write", allow_write)):
        if isinstance(paths, str):
            raise InvalidInput(f"{field} takes a list of paths, not one text", field=field)
        checked = list(dict.fromkeys(
            checked_path(p, field=field, subject=f"{field} path", guarded=guarded,
                         because="a script may never reach certpilot's data dir, master key or database")
            for p in paths))
        if len(checked) > MAX_GRANTED_PATHS:
            raise InvalidInput(f"{field} takes at most {MAX_GRANTED_PATHS} paths", field=field)
        grants[field] = tuple(checked)
    return SandboxSettings(concurrency=concurrency, allow_read=grants["allow_read"],
                           allow_write=grants["allow_write"])


def create_profile(
    app: App,
    name: str,
    *,
    script: str,
    params: Sequence[ProfileParam] = (),
    renew_before_days: int | None = None,
    renew_before_percent: float | None = None,
    warning_days: Sequence[int] | None = None,
    default_key: KeySpec = DEFAULT_KEY_SPEC,
    concurrency: int = DEFAULT_CONCURRENCY,
    allow_read: Sequence[str] = (),
    allow_write: Sequence[str] = (),
    max_pending_days: int | None = None,
    deploy: DeploySettings | None = None,
    notify: NotifySettings | None = None,
    actor: str,
) -> Profile:
    check_name(name, "profile")
    checked = check_params(params)
    renewal = check_renewal(renew_before_days, renew_before_percent, warning_days, max_pending_days)
    sandbox = check_sandbox(concurrency, allow_read, allow_write, protected=app.settings.protected_paths)
    deploy, notify = _checked_targets(app, deploy, notify)
    now = app.clock.now()
    with app.db.transaction() as session:
        profile = repo.add_profile(
            session, app.sealer, name=name, script=script, params=checked,
            renewal=renewal, default_key=default_key, sandbox=sandbox, now=now,
            deploy=deploy or DeploySettings(), notify=notify or NotifySettings(),
        )
        record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                     object_name=name, details={"action": "created", "script": script,
                                                "params": [p.name for p in checked],
                                                "concurrency": sandbox.concurrency,
                                                "allow_read": list(sandbox.allow_read),
                                                "allow_write": list(sandbox.allow_write)})
    return profile


def update_profile(
    app: App,
    name: str,
    *,
    script: str,
    params: Sequence[ProfileParam] = (),
    renew_before_days: int | None = None,
    renew_before_percent: float | None = None,
    warning_days: Sequence[int] | None = None,
    default_key: KeySpec = DEFAULT_KEY_SPEC,
    concurrency: int = DEFAULT_CONCURRENCY,
    allow_read: Sequence[str] = (),
    allow_write: Sequence[str] = (),
    max_pending_days: int | None = None,
    deploy: DeploySettings | None = None,
    notify: NotifySettings | None = None,
    actor: str,
) -> Profile:
    """Replace a profile's settings (the sandbox too: what is not given is back to its default;
    `max_pending_days` None keeps the stored one). A sensitive param whose value is `***` keeps
    its stored value."""
    keep = frozenset(p.name for p in params if p.sensitive and not p.dynamic and p.value == SENSITIVE_MASK)
    checked = check_params(params)
    renewal = check_renewal(renew_before_days, renew_before_percent, warning_days, max_pending_days)
    sandbox = check_sandbox(concurrency, allow_read, allow_write, protected=app.settings.protected_paths)
    deploy, notify = _checked_targets(app, deploy, notify)
    now = app.clock.now()
    with app.db.transaction() as session:
        before = repo.get_profile(session, name)
        if max_pending_days is None:
            renewal = dataclasses.replace(renewal, max_pending_days=before.renewal.max_pending_days)
        profile = repo.replace_profile(
            session, app.sealer, name=name, script=script, params=checked, keep_sensitive=keep,
            renewal=renewal, default_key=default_key, sandbox=sandbox, now=now,
            deploy=before.deploy if deploy is None else deploy,
            notify=NotifySettings(SENSITIVE_MASK if before.notify.url else None, before.notify.email)
            if notify is None else notify,
        )
        if profile.deploy != before.deploy:  # deploy again, to the new place (or for the first time)
            if forget_deployments(session, repo.profile_id(session, name), now):
                notify_wake(session)
        changed = _changed_fields(before, profile, set(p.name for p in checked if p.sensitive) - keep)
        if changed:
            record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                         object_name=name, details={"action": "updated", "changed": changed})
    if profile.deploy != before.deploy:
        app.work_is_due()
    return profile


def _changed_fields(before: Profile, after: Profile, new_secrets: set[str]) -> list[str]:
    """Names of what changed (never values: some are secrets)."""
    changed = [f for f in ("script", "renewal", "default_key", "sandbox", "deploy", "notify") if getattr(before, f) != getattr(after, f)]
    if before.params != after.params or new_secrets:
        changed.append("params")
    return changed


def _checked_targets(app: App, deploy: DeploySettings | None,
                     notify: NotifySettings | None) -> tuple[DeploySettings | None, NotifySettings | None]:
    """Deploy settings and notification targets validated (None: keep what is stored)."""
    if deploy is not None:
        deploy = check_deploy(deploy.root, deploy.command, deploy.owner, protected=app.settings.protected_paths)
    if notify is not None:
        notify = check_notify(notify.url, notify.email)
    return deploy, notify


def get_profile(app: App, name: str) -> Profile:
    """The profile with sensitive values absent (None)."""
    with app.db.read() as session:
        return repo.get_profile(session, name)


def list_profiles(app: App) -> list[Profile]:
    with app.db.read() as session:
        return repo.list_profiles(session)


def remove_profile(app: App, name: str, *, actor: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_profile(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                     object_name=name, details={"action": "removed"})


def script_state_keys(app: App, name: str) -> list[str]:
    """The keys of the profile's script state (`context.state`), sorted; never the values,
    which may be secrets (an ACME account key). Raises `NotFound`."""
    with app.db.read() as session:
        return script_state.key_names(session, name)
