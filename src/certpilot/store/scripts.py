"""Scripts repository."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import Script
from certpilot.store.database import add_named
from certpilot.store.tables import CertificateRow, ProfileRow, ScriptRow


def _to_script(row: ScriptRow) -> Script:
    return Script(
        name=row.name, kind=row.kind, source=row.source, sha256=row.sha256,
        timeout_s=row.timeout_s, created_at=row.created_at, updated_at=row.updated_at,
    )


def _row(session: Session, name: str) -> ScriptRow:
    row = session.scalar(select(ScriptRow).where(ScriptRow.name == name))
    if row is None:
        raise NotFound("script", name)
    return row


def add_script(session: Session, name: str, source: str, timeout_s: int, now: dt.datetime) -> Script:
    def is_taken() -> bool:
        return bool(session.scalar(select(exists().where(ScriptRow.name == name))))

    if is_taken():
        raise Conflict(f"script {name!r} exists already")
    row = ScriptRow(
        name=name, kind="python", source=source, sha256=hashlib.sha256(source.encode()).hexdigest(),
        timeout_s=timeout_s, created_at=now, updated_at=now,
    )
    add_named(session, row, is_taken, f"script {name!r} exists already")
    return _to_script(row)


def update_script(session: Session, name: str, source: str, timeout_s: int, now: dt.datetime) -> Script:
    row = _row(session, name)
    row.source, row.timeout_s, row.updated_at = source, timeout_s, now
    row.sha256 = hashlib.sha256(source.encode()).hexdigest()
    session.flush()
    return _to_script(row)


def get_script(session: Session, name: str) -> Script:
    return _to_script(_row(session, name))


def list_scripts(session: Session) -> list[Script]:
    return [_to_script(r) for r in session.scalars(select(ScriptRow).order_by(ScriptRow.name))]


def remove_script(session: Session, name: str) -> None:
    row = _row(session, name)
    users = session.scalars(select(ProfileRow.name).where(ProfileRow.script_id == row.id)).all()
    if users:
        raise Conflict(f"script {name!r} is used by profile(s) {', '.join(sorted(users))}; remove those first")
    session.delete(row)


def timeout_of_certificate_script(session: Session, certificate: str) -> int:
    """The timeout of the script that issues `certificate` (for the length of its lease)."""
    timeout_s = session.scalar(
        select(ScriptRow.timeout_s)
        .join(ProfileRow, ProfileRow.script_id == ScriptRow.id)
        .join(CertificateRow, CertificateRow.profile_id == ProfileRow.id)
        .where(CertificateRow.name == certificate)
    )
    if timeout_s is None:
        raise NotFound("certificate", certificate)
    return timeout_s
