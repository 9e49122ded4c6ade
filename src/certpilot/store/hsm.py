"""HSM groups repository; the PIN is sealed under the master key."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import HsmGroup
from certpilot.keys.pkcs11_backend import TokenRef
from certpilot.keys.sealing import Sealer
from certpilot.store.certificates import StoredKey, _id, get_key
from certpilot.store.database import add_named
from certpilot.store.tables import CertificateRow, CertificateStatusRow, HsmGroupRow, KeyRow, RevisionRow


def pin_identity(row_id: str) -> str:
    return f"hsm_group:{row_id}:pin"


def _to_group(row: HsmGroupRow) -> HsmGroup:
    return HsmGroup(name=row.name, module_path=row.module_path, token_label=row.token_label,
                    created_at=row.created_at, updated_at=row.updated_at, module_env=dict(row.module_env or {}))


def _row(session: Session, name: str) -> HsmGroupRow:
    row = session.scalar(select(HsmGroupRow).where(HsmGroupRow.name == name))
    if row is None:
        raise NotFound("HSM group", name)
    return row


def add_group(session: Session, sealer: Sealer, *, name: str, module_path: str, token_label: str, pin: str,
              now: dt.datetime, module_env: dict[str, str] | None = None) -> HsmGroup:
    def is_taken() -> bool:
        return bool(session.scalar(select(exists().where(HsmGroupRow.name == name))))

    if is_taken():
        raise Conflict(f"HSM group {name!r} exists already")
    module_env = dict(module_env or {})
    # a process loads a module once, with one environment: the groups on it must agree
    for other in session.scalars(select(HsmGroupRow).where(HsmGroupRow.module_path == module_path)):
        if dict(other.module_env or {}) != module_env:
            raise Conflict(
                f"HSM group {other.name!r} uses {module_path} with the environment {_describe(other.module_env)}: "
                "groups on one PKCS#11 module must give it the same environment"
            )
    row_id = uuid.uuid4().hex
    row = HsmGroupRow(id=row_id, name=name, module_path=module_path, token_label=token_label,
                      pin_sealed=sealer.seal_text(pin, pin_identity(row_id)), created_at=now, updated_at=now,
                      module_env=module_env)
    add_named(session, row, is_taken, f"HSM group {name!r} exists already")
    return _to_group(row)


def _describe(env: dict[str, str] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((env or {}).items())) or "(none)"


def get_group(session: Session, name: str) -> HsmGroup:
    return _to_group(_row(session, name))


def list_groups(session: Session) -> list[HsmGroup]:
    return [_to_group(r) for r in session.scalars(select(HsmGroupRow).order_by(HsmGroupRow.name))]


def token_ref(session: Session, sealer: Sealer, name: str) -> TokenRef:
    row = _row(session, name)
    return TokenRef(row.module_path, row.token_label, sealer.open_text(row.pin_sealed, pin_identity(row.id)),
                    env=tuple(sorted((row.module_env or {}).items())))


def group_id(session: Session, name: str) -> str:
    return _row(session, name).id


def remove_group(session: Session, name: str) -> None:
    row = _row(session, name)
    users = session.scalars(select(CertificateRow.name).where(CertificateRow.hsm_group == name).limit(3)).all()
    if users:
        raise Conflict(f"HSM group {name!r} is used by certificate(s) {', '.join(users)}; remove those first")
    live = session.scalar(select(exists().where(KeyRow.hsm_group_id == row.id, KeyRow.destroyed_at.is_(None))))
    if live:
        raise Conflict(f"HSM group {name!r} still holds keys of certpilot; remove their certificates first")
    session.execute(KeyRow.__table__.update().where(KeyRow.hsm_group_id == row.id).values(hsm_group_id=None))
    session.delete(row)


# --- the keys certpilot keeps in tokens -------------------------------------


def hsm_keys_to_retire(session: Session, *, older_than: dt.datetime | None, name: str | None = None) -> list[StoredKey]:
    """HSM keys not destroyed yet that nothing needs any more: all of a certificate's keys
    when `name` is given (it is being removed), else keys neither served nor pending
    whose successor revision was issued at or before `older_than` (None: any time)."""
    query = select(KeyRow).where(KeyRow.backend == "pkcs11", KeyRow.destroyed_at.is_(None))
    if name is not None:
        return [get_key(session, k.id) for k in session.scalars(query.where(KeyRow.certificate_id == _id(session, name)))]
    current = select(CertificateStatusRow.pending_key_id).where(CertificateStatusRow.pending_key_id.is_not(None))
    served = (
        select(RevisionRow.key_id)
        .join(CertificateStatusRow, CertificateStatusRow.current_revision_id == RevisionRow.id)
    )
    rows = session.scalars(query.where(KeyRow.id.not_in(current), KeyRow.id.not_in(served))).all()
    result = []
    for k in rows:
        superseded_at = _superseded_at(session, k)
        if superseded_at is not None and (older_than is None or superseded_at <= older_than):
            result.append(get_key(session, k.id))
    return result


def _superseded_at(session: Session, key: KeyRow) -> dt.datetime | None:
    """When the key stopped being needed: its successor revision's issue time (for a key
    that never got a revision, the first revision issued after the key was made)."""
    own = session.scalar(select(RevisionRow.number).where(RevisionRow.key_id == key.id))
    successor = select(func.min(RevisionRow.issued_at)).where(RevisionRow.certificate_id == key.certificate_id)
    if own is not None:
        return session.scalar(successor.where(RevisionRow.number > own))
    return session.scalar(successor.where(RevisionRow.issued_at > key.created_at))


def mark_key_destroyed(session: Session, key_id: str, now: dt.datetime) -> None:
    row = session.get(KeyRow, key_id)
    if row is not None:
        row.destroyed_at = now
