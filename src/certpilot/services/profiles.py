"""Certificate management profiles: create, list, show, remove."""

from __future__ import annotations

from collections.abc import Sequence

from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import (
    DEFAULT_KEY_SPEC,
    DEFAULT_WARNING_DAYS,
    PARAM_NAME_RE,
    SENSITIVE_MASK,
    EventKind,
    KeySpec,
    Profile,
    ProfileParam,
    RenewalSettings,
    check_name,
)
from certpilot.services.app import App
from certpilot.store import profiles as repo
from certpilot.store.events import record_event

MAX_PARAMS = 64
MAX_VALUE_CHARS = 16 * 1024


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


def check_renewal(
    renew_before_days: int | None, renew_before_percent: float | None, warning_days: Sequence[int] | None
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
    return RenewalSettings(
        renew_before_days=renew_before_days,
        renew_before_percent=renew_before_percent,
        warning_days=tuple(sorted(set(days), reverse=True)),
    )


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
    actor: str,
) -> Profile:
    check_name(name, "profile")
    checked = check_params(params)
    renewal = check_renewal(renew_before_days, renew_before_percent, warning_days)
    now = app.clock.now()
    with app.db.transaction() as session:
        profile = repo.add_profile(
            session, app.sealer, name=name, script=script, params=checked,
            renewal=renewal, default_key=default_key, now=now,
        )
        record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                     object_name=name, details={"action": "created", "script": script,
                                                "params": [p.name for p in checked]})
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
    actor: str,
) -> Profile:
    """Replace a profile's settings. A sensitive param whose value is `***` keeps its stored value."""
    keep = frozenset(p.name for p in params if p.sensitive and not p.dynamic and p.value == SENSITIVE_MASK)
    checked = check_params(params)
    renewal = check_renewal(renew_before_days, renew_before_percent, warning_days)
    now = app.clock.now()
    with app.db.transaction() as session:
        before = repo.get_profile(session, name)
        profile = repo.replace_profile(
            session, app.sealer, name=name, script=script, params=checked, keep_sensitive=keep,
            renewal=renewal, default_key=default_key, now=now,
        )
        changed = _changed_fields(before, profile, set(p.name for p in checked if p.sensitive) - keep)
        if changed:
            record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                         object_name=name, details={"action": "updated", "changed": changed})
    return profile


def _changed_fields(before: Profile, after: Profile, new_secrets: set[str]) -> list[str]:
    """Names of what changed (never values: some are secrets)."""
    changed = [f for f in ("script", "renewal", "default_key") if getattr(before, f) != getattr(after, f)]
    if before.params != after.params or new_secrets:
        changed.append("params")
    return changed


def get_profile(app: App, name: str) -> Profile:
    """The profile with sensitive values absent (None)."""
    with app.db.transaction() as session:
        return repo.get_profile(session, name)


def list_profiles(app: App) -> list[Profile]:
    with app.db.transaction() as session:
        return repo.list_profiles(session)


def remove_profile(app: App, name: str, *, actor: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_profile(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.PROFILE_CHANGED, object_type="profile",
                     object_name=name, details={"action": "removed"})
