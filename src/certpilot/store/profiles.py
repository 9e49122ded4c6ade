"""Profiles repository; sensitive parameter values are sealed under the master key."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import KeySpec, Profile, ProfileParam, RenewalSettings, SandboxSettings
from certpilot.keys.sealing import Sealer
from certpilot.store.scripts import _row as _script_row
from certpilot.store.tables import CertificateRow, ProfileParamRow, ProfileRow


def param_identity(row_id: str) -> str:
    return f"profile_param:{row_id}:value"


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
) -> Profile:
    if session.scalar(select(exists().where(ProfileRow.name == name))):
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
    session.add(row)
    session.flush()
    return _to_profile(row, None)


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
    if (current.script, current.params, current.renewal, current.default_key, current.sandbox) == (
        script, tuple(resolved), renewal, default_key, sandbox
    ):
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
    row.updated_at = now
    row.params.clear()
    session.flush()
    row.params.extend(_param_rows(tuple(resolved), sealer))
    session.flush()
    return _to_profile(row, None)
