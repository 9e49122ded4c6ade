"""Profiles repository; sensitive parameter values are sealed under the master key."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import (
    SENSITIVE_MASK,
    DeploySettings,
    KeySpec,
    NotifySettings,
    Profile,
    ProfileParam,
    RenewalSettings,
    SandboxSettings,
)
from certpilot.keys.sealing import Sealer
from certpilot.store.database import add_named
from certpilot.store.scripts import _row as _script_row
from certpilot.store.tables import CertificateRow, ProfileParamRow, ProfileRow


def param_identity(row_id: str) -> str:
    return f"profile_param:{row_id}:value"


def notify_url_identity(profile_name: str) -> str:
    return f"profile:{profile_name}:notify_url"


def deploy_of(row: ProfileRow) -> DeploySettings:
    return DeploySettings(root=row.deploy_root, command=row.deploy_command, owner=row.deploy_owner)


def notify_of(row: ProfileRow, sealer: Sealer | None) -> NotifySettings:
    """With `sealer` the webhook URL in clear; without, `***` when one is set."""
    url = None
    if row.notify_url_sealed is not None:
        url = sealer.open_text(row.notify_url_sealed, notify_url_identity(row.name)) if sealer else SENSITIVE_MASK
    return NotifySettings(url=url, email=row.notify_email)


def _set_deploy_notify(row: ProfileRow, sealer: Sealer, deploy: DeploySettings, notify: NotifySettings) -> None:
    row.deploy_root, row.deploy_command, row.deploy_owner = deploy.root, deploy.command, deploy.owner
    row.notify_url_sealed = (sealer.seal_text(notify.url, notify_url_identity(row.name))
                             if notify.url is not None else None)
    row.notify_email = notify.email


def renewal_of(row: ProfileRow) -> RenewalSettings:
    """The profile's renewal settings, from its own columns (its params are not loaded)."""
    return RenewalSettings(
        renew_before_days=row.renew_before_days,
        renew_before_percent=row.renew_before_percent,
        warning_days=tuple(row.warning_days),
        max_pending_days=row.max_pending_days,
    )


def _to_profile(row: ProfileRow, sealer: Sealer | None) -> Profile:
    """With `sealer`, sensitive values are opened; without, they are None."""
    params = []
    for p in row.params:
        value = p.value
        if p.sensitive and p.value_sealed is not None:
            value = sealer.open_text(p.value_sealed, param_identity(p.id)) if sealer else None
        params.append(ProfileParam(name=p.name, value=value, sensitive=p.sensitive, dynamic=p.dynamic))
    return Profile(
        name=row.name,
        script=row.script.name,
        params=tuple(params),
        renewal=renewal_of(row),
        default_key=KeySpec.parse(row.default_key),
        created_at=row.created_at,
        updated_at=row.updated_at,
        sandbox=SandboxSettings(
            concurrency=row.concurrency, allow_read=tuple(row.allow_read), allow_write=tuple(row.allow_write)
        ),
        deploy=deploy_of(row),
        notify=notify_of(row, sealer),
    )


def _row(session: Session, name: str) -> ProfileRow:
    row = session.scalar(select(ProfileRow).where(ProfileRow.name == name))
    if row is None:
        raise NotFound("profile", name)
    return row


def _param_rows(params: tuple[ProfileParam, ...], sealer: Sealer) -> list[ProfileParamRow]:
    rows = []
    for position, p in enumerate(params):
        row_id = uuid.uuid4().hex
        sealed = None
        value = p.value
        if p.sensitive and p.value is not None:
            sealed, value = sealer.seal_text(p.value, param_identity(row_id)), None
        rows.append(
            ProfileParamRow(
                id=row_id, position=position, name=p.name, value=value, value_sealed=sealed,
                sensitive=p.sensitive, dynamic=p.dynamic,
            )
        )
    return rows


def add_profile(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    script: str,
    params: tuple[ProfileParam, ...],
    renewal: RenewalSettings,
    default_key: KeySpec,
    sandbox: SandboxSettings,
    now: dt.datetime,
    deploy: DeploySettings = DeploySettings(),
    notify: NotifySettings = NotifySettings(),
) -> Profile:
    def is_taken() -> bool:
        return bool(session.scalar(select(exists().where(ProfileRow.name == name))))

    if is_taken():
        raise Conflict(f"profile {name!r} exists already")
    row = ProfileRow(
        name=name,
        script=_script_row(session, script),
        renew_before_days=renewal.renew_before_days,
        renew_before_percent=renewal.renew_before_percent,
        warning_days=list(renewal.warning_days),
        max_pending_days=renewal.max_pending_days,
        default_key=str(default_key),
        concurrency=sandbox.concurrency,
        allow_read=list(sandbox.allow_read),
        allow_write=list(sandbox.allow_write),
        created_at=now,
        updated_at=now,
        params=_param_rows(params, sealer),
    )
    _set_deploy_notify(row, sealer, deploy, notify)
    add_named(session, row, is_taken, f"profile {name!r} exists already")
    return _to_profile(row, None)


def profile_id(session: Session, name: str) -> int:
    return _row(session, name).id


def get_profile(session: Session, name: str, sealer: Sealer | None = None) -> Profile:
    """The profile; sensitive values in clear only when `sealer` is given."""
    return _to_profile(_row(session, name), sealer)


def list_profiles(session: Session) -> list[Profile]:
    query = select(ProfileRow).order_by(ProfileRow.name).options(selectinload(ProfileRow.params))
    return [_to_profile(r, None) for r in session.scalars(query)]


def remove_profile(session: Session, name: str) -> None:
    row = _row(session, name)
    users = session.scalars(select(CertificateRow.name).where(CertificateRow.profile_id == row.id).limit(6)).all()
    if users:
        shown = ", ".join(sorted(users)[:5]) + (", ..." if len(users) > 5 else "")
        raise Conflict(f"profile {name!r} is used by certificate(s) {shown}; remove those first")
    session.delete(row)


def replace_profile(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    script: str,
    params: tuple[ProfileParam, ...],
    keep_sensitive: frozenset[str],
    renewal: RenewalSettings,
    default_key: KeySpec,
    sandbox: SandboxSettings,
    now: dt.datetime,
    deploy: DeploySettings = DeploySettings(),
    notify: NotifySettings = NotifySettings(),
) -> Profile:
    """Replace the profile's settings; sensitive params named in `keep_sensitive`
    keep their stored value (a client sent back the `***` it read)."""
    row = _row(session, name)
    stored = {p.name: p for p in _to_profile(row, sealer).params}
    resolved = []
    for p in params:
        if p.name in keep_sensitive:
            old = stored.get(p.name)
            if old is None or not old.sensitive or old.dynamic or old.value is None:
                raise InvalidInput(
                    f"parameter {p.name!r} has no stored sensitive value to keep: send its value", field="params"
                )
            p = ProfileParam(p.name, old.value, sensitive=True, dynamic=False)
        resolved.append(p)
    new_dynamic = {p.name for p in resolved if p.dynamic} - {p.name for p in stored.values() if p.dynamic}
    if new_dynamic:
        users = session.scalars(select(CertificateRow.name).where(CertificateRow.profile_id == row.id).limit(3)).all()
        if users:
            raise Conflict(
                f"profile {name!r} is used by certificate(s) {', '.join(users)}: a new dynamic parameter "
                f"({', '.join(sorted(new_dynamic))}) would leave them without a value"
            )
    current = _to_profile(row, sealer)
    if notify.url == SENSITIVE_MASK:  # sent back as read: keep the stored URL
        if current.notify.url is None:
            raise InvalidInput("there is no stored notify_url to keep: send the URL", field="notify_url")
        notify = NotifySettings(url=current.notify.url, email=notify.email)
    if (current.script, current.params, current.renewal, current.default_key, current.sandbox) == (
        script, tuple(resolved), renewal, default_key, sandbox
    ):
        if (current.deploy, current.notify) == (deploy, notify):
            return _to_profile(row, None)  # written back as read: nothing changes, not even updated_at
    row.script = _script_row(session, script)
    row.renew_before_days = renewal.renew_before_days
    row.renew_before_percent = renewal.renew_before_percent
    row.warning_days = list(renewal.warning_days)
    row.max_pending_days = renewal.max_pending_days
    row.default_key = str(default_key)
    row.concurrency = sandbox.concurrency
    row.allow_read = list(sandbox.allow_read)
    row.allow_write = list(sandbox.allow_write)
    if (current.deploy, current.notify) != (deploy, notify):
        _set_deploy_notify(row, sealer, deploy, notify)
    row.updated_at = now
    row.params.clear()
    session.flush()
    row.params.extend(_param_rows(tuple(resolved), sealer))
    session.flush()
    return _to_profile(row, None)
