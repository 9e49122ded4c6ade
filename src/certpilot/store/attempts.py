"""The attempt protocol: the key for the next revision is stored before the script
runs; an attempt is started, then finished as a new revision (made current in the
same transaction) or as a failure that leaves the served revision alone.

The renewal loop runs these for every certificate it renews, so they are Core
statements on the tables (see `store.certificates`, "Core statements"): what an
attempt needs is read in a handful of queries (`load_inputs`), and each write is
one statement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Label

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import Certificate, Outcome, Phase, Profile, Script
from certpilot.keys.sealing import Sealer
from certpilot.pki.certificate import CertificateFacts
from certpilot.store.certificates import (
    RowParts,
    StoredKey,
    _id,
    certificate_from_parts,
    flush_orm,
    lock_certificate,
    remember_id,
    stored_key,
    update_status,
)
from certpilot.store.profiles import _to_profile
from certpilot.store.script_state import value_identity
from certpilot.store.tables import (
    AttemptRow,
    CertificateRow,
    CertificateStatusRow,
    DynamicParamRow,
    HsmGroupRow,
    KeyRow,
    ProfileParamRow,
    ProfileRow,
    ProfileStateRow,
    RevisionRow,
    ScriptRow,
)

_CERTS: Table = CertificateRow.__table__  # type: ignore[assignment]
_STATUS: Table = CertificateStatusRow.__table__  # type: ignore[assignment]
_REVISIONS: Table = RevisionRow.__table__  # type: ignore[assignment]
_PROFILES: Table = ProfileRow.__table__  # type: ignore[assignment]
_PROFILE_PARAMS: Table = ProfileParamRow.__table__  # type: ignore[assignment]
_SCRIPTS: Table = ScriptRow.__table__  # type: ignore[assignment]
_DYNAMIC: Table = DynamicParamRow.__table__  # type: ignore[assignment]
_KEYS: Table = KeyRow.__table__  # type: ignore[assignment]
_HSM: Table = HsmGroupRow.__table__  # type: ignore[assignment]
_ATTEMPTS: Table = AttemptRow.__table__  # type: ignore[assignment]


def _labelled(table: Table, prefix: str) -> list[Label[Any]]:
    return [c.label(f"{prefix}{c.name}") for c in table.c]


_INPUT_COLUMNS = [*_labelled(_CERTS, "c__"), *_labelled(_STATUS, "s__"), *_labelled(_REVISIONS, "r__"),
                  *_labelled(_PROFILES, "p__"), *_labelled(_SCRIPTS, "x__")]
_INPUT_FROM = (
    _CERTS.join(_STATUS, _STATUS.c.certificate_id == _CERTS.c.id)
    .join(_PROFILES, _PROFILES.c.id == _CERTS.c.profile_id)
    .join(_SCRIPTS, _SCRIPTS.c.id == _PROFILES.c.script_id)
    .outerjoin(_REVISIONS, _REVISIONS.c.id == _STATUS.c.current_revision_id)
)
# built once with bind parameters (see `store.certificates`)
_INPUTS = select(*_INPUT_COLUMNS).select_from(_INPUT_FROM).where(_CERTS.c.name == bindparam("name_"))
_INPUTS_LOCKED = _INPUTS.with_for_update(of=_STATUS)
_INPUT_PARTS = RowParts(_INPUTS)
_PROFILE_PARAMS_OF = (select(_PROFILE_PARAMS).where(_PROFILE_PARAMS.c.profile_id == bindparam("pid_"))
                      .order_by(_PROFILE_PARAMS.c.position))
_DYNAMIC_OF = select(_DYNAMIC).where(_DYNAMIC.c.certificate_id == bindparam("cid_"))
_KEY_BY_ID = (select(*_KEYS.c, _HSM.c.name.label("hsm_group"))
              .select_from(_KEYS.outerjoin(_HSM, _HSM.c.id == _KEYS.c.hsm_group_id))
              .where(_KEYS.c.id == bindparam("kid_")))
_PENDING_KEY_ID = select(_STATUS.c.pending_key_id).where(_STATUS.c.certificate_id == bindparam("cid_"))
_HSM_GROUP_ID = select(_HSM.c.id).where(_HSM.c.name == bindparam("name_"))
_INSERT_KEY = insert(_KEYS)
_INSERT_ATTEMPT = insert(_ATTEMPTS)
_UPDATE_ATTEMPT = update(_ATTEMPTS).where(_ATTEMPTS.c.id == bindparam("aid_"))
_OPEN_ATTEMPTS = (select(_ATTEMPTS.c.id, _ATTEMPTS.c.worker, _ATTEMPTS.c.started_at)
                  .where(_ATTEMPTS.c.certificate_id == bindparam("cid_")).where(_ATTEMPTS.c.finished_at.is_(None)))
_STARTED_AT = select(_ATTEMPTS.c.started_at).where(_ATTEMPTS.c.id == bindparam("aid_"))
_KEY_USED = select(exists().where(_REVISIONS.c.key_id == bindparam("kid_")))
_LAST_NUMBER = select(func.max(_REVISIONS.c.number)).where(_REVISIONS.c.certificate_id == bindparam("cid_"))
_INSERT_REVISION = insert(_REVISIONS)
_FAILURE_STATE = (
    select(_STATUS.c.failures, _STATUS.c.deferred_since, _STATUS.c.current_revision_id, _REVISIONS.c.not_after)
    .select_from(_STATUS.outerjoin(_REVISIONS, _REVISIONS.c.id == _STATUS.c.current_revision_id))
    .where(_STATUS.c.certificate_id == bindparam("cid_"))
)
_STATE_OF = (select(ProfileStateRow.__table__.c.key, ProfileStateRow.__table__.c.value_sealed)
             .where(ProfileStateRow.__table__.c.profile_id == bindparam("pid_")))
_SERVED_PEMS = (select(_REVISIONS.c.leaf_pem, _REVISIONS.c.chain_pem)
                .join(_STATUS, _STATUS.c.current_revision_id == _REVISIONS.c.id)
                .where(_STATUS.c.certificate_id == bindparam("cid_")))


@dataclass(frozen=True)
class AttemptInputs:
    """What an attempt needs, read in one go: the certificate (sensitive dynamic values
    opened), its profile (sensitive values opened), script, pending key, the served
    revision's PEM (a script's `previous_certificate`), the deferral's stored fields and
    the profile's script state."""

    cert_id: int
    profile_id: int
    certificate: Certificate
    profile: Profile
    script: Script
    key: StoredKey | None
    previous_pem: str | None
    renewal_requested: bool
    deferred_since: dt.datetime | None
    deferred_poll_at: dt.datetime | None
    deferred_polls: int
    deferred_cookie_sealed: bytes | None
    state: dict[str, str]  # the profile's script state (`context.state`), values opened


def load_inputs(session: Session, name: str, now: dt.datetime, sealer: Sealer, *,
                lock: bool = False) -> AttemptInputs:
    """What an attempt on `name` needs. With `lock`, the status row stays locked until the
    transaction ends (PostgreSQL). Raises `NotFound`."""
    flush_orm(session)
    query = _INPUTS_LOCKED if lock and session.get_bind().dialect.name == "postgresql" else _INPUTS
    row = session.connection().execute(query, {"name_": name}).first()
    if row is None:
        raise NotFound("certificate", name)
    parts = _INPUT_PARTS.split(row)
    cert, st, rev = parts["c"], parts["s"], parts["r"]
    remember_id(session, name, cert.id)
    profile_row, script_row = parts["p"], parts["x"]
    profile_row.script = script_row
    profile_row.params = [SimpleNamespace(**p._mapping)
                          for p in session.connection().execute(_PROFILE_PARAMS_OF, {"pid_": profile_row.id})]
    dynamic = [SimpleNamespace(**p._mapping) for p in session.connection().execute(_DYNAMIC_OF, {"cid_": cert.id})]
    revision = rev if st.current_revision_id is not None else None
    certificate = certificate_from_parts(cert, st, revision, profile_row, dynamic, now, sealer)
    key = None
    if st.pending_key_id is not None:
        key_row = session.connection().execute(_KEY_BY_ID, {"kid_": st.pending_key_id}).first()
        key = stored_key(key_row) if key_row is not None else None
    script = Script(name=script_row.name, kind=script_row.kind, source=script_row.source, sha256=script_row.sha256,
                    timeout_s=script_row.timeout_s, created_at=script_row.created_at,
                    updated_at=script_row.updated_at)
    return AttemptInputs(
        cert_id=cert.id, profile_id=profile_row.id, certificate=certificate,
        profile=_to_profile(profile_row, sealer), script=script, key=key,  # type: ignore[arg-type]
        previous_pem=rev.leaf_pem + rev.chain_pem if revision is not None else None,
        renewal_requested=bool(st.renewal_requested), deferred_since=st.deferred_since,
        deferred_poll_at=st.deferred_poll_at, deferred_polls=st.deferred_polls or 0,
        deferred_cookie_sealed=st.deferred_cookie_sealed,
        # as `script_state.load` reads it, by the profile's id already at hand
        state={key: sealer.open_text(sealed, value_identity(profile_row.id, key))
               for key, sealed in session.connection().execute(_STATE_OF, {"pid_": profile_row.id})},
    )


def pending_key(session: Session, name: str) -> StoredKey | None:
    """The key made for the next revision and not used yet, if any."""
    cert_id = _id(session, name)
    flush_orm(session)
    key_id = session.connection().execute(_PENDING_KEY_ID, {"cid_": cert_id}).scalar()
    if key_id is None:
        return None
    row = session.connection().execute(_KEY_BY_ID, {"kid_": key_id}).first()
    return stored_key(row) if row is not None else None


def _insert_key(session: Session, cert_id: int, key: StoredKey, now: dt.datetime) -> None:
    hsm_group_id = None
    if key.hsm_group:
        hsm_group_id = session.connection().execute(_HSM_GROUP_ID, {"name_": key.hsm_group}).scalar()
    session.connection().execute(_INSERT_KEY, {
        "id": key.key_id, "certificate_id": cert_id, "backend": key.backend, "key_spec": str(key.key_spec),
        "private_key_sealed": key.private_key_sealed, "public_key_sha256": key.public_key_sha256,
        "csr_pem": key.csr_pem, "created_at": now, "hsm_group_id": hsm_group_id,
        "pkcs11_label": key.pkcs11_label, "pkcs11_id": key.pkcs11_id, "destroyed_at": None,
    })


def store_pending_key(session: Session, name: str, key: StoredKey, *, attempt_id: int, now: dt.datetime) -> None:
    """Keep the key made for the next revision (before any CA sees its CSR)."""
    cert_id = _id(session, name)
    flush_orm(session)
    _insert_key(session, cert_id, key, now)
    session.connection().execute(_UPDATE_ATTEMPT, {"aid_": attempt_id, "key_id": key.key_id})
    update_status(session, cert_id, {"pending_key_id": key.key_id})


def start_attempt(session: Session, cert_id: int, *, key_id: str | None, kind: str, worker: str, now: dt.datetime,
                  renewing: bool, new_key: StoredKey | None = None) -> int:
    """Open an attempt (and close those a dead worker left open). `renewing`: a revision
    is served (the phase becomes `renewing`, unless this is a poll, which stays
    `deferred`). `new_key`: a key made for this attempt, stored with it as the pending
    key (then `key_id` is ignored). Returns the attempt's id."""
    flush_orm(session)
    # an attempt still open here belonged to a worker that died: its lease ran out
    for attempt_id, worker_was, started_at in session.connection().execute(_OPEN_ATTEMPTS, {"cid_": cert_id}).all():
        _finish(session, attempt_id, started_at, Outcome.FAILED, now,
                f"the worker {worker_was} stopped during this attempt", None)
    status: dict[str, object] = {"last_attempt_at": now}
    if new_key is not None:
        _insert_key(session, cert_id, new_key, now)
        key_id = status["pending_key_id"] = new_key.key_id
    if renewing and kind != "poll":  # a poll stays `deferred`
        status["phase"] = Phase.RENEWING.value
    attempt_id = session.connection().execute(_INSERT_ATTEMPT, {
        "certificate_id": cert_id, "key_id": key_id, "kind": kind, "worker": worker, "started_at": now,
        "finished_at": None, "outcome": None, "duration_ms": None, "error": None, "output": None,
        "revision_number": None}).inserted_primary_key[0]
    update_status(session, cert_id, status)
    return int(attempt_id)


# what `clear_deferral` sets: the request the CA held is forgotten (its cookie too)
CLEARED_DEFERRAL: dict[str, object] = {"deferred_cookie_sealed": None, "deferred_since": None,
                                       "deferred_poll_at": None, "deferred_polls": 0}


def clear_deferral(st: CertificateStatusRow) -> None:
    """Forget the request the CA held (its cookie too)."""
    for column, value in CLEARED_DEFERRAL.items():
        setattr(st, column, value)


def _finish(session: Session, attempt_id: int, started_at: dt.datetime | None, outcome: Outcome, now: dt.datetime,
            error: str | None, output: str | None, **extra: object) -> None:
    if started_at is None:
        started_at = session.connection().execute(_STARTED_AT, {"aid_": attempt_id}).scalar()
        if started_at is None:
            raise NotFound("attempt", str(attempt_id))
    session.connection().execute(_UPDATE_ATTEMPT, {
        "aid_": attempt_id, "finished_at": now, "outcome": outcome.value,
        "duration_ms": int((now - started_at).total_seconds() * 1000), "error": error, "output": output, **extra})


def finish_attempt_issued(
    session: Session,
    name: str,
    *,
    attempt_id: int,
    key: StoredKey,
    leaf_pem: str,
    chain_pem: str,
    facts: CertificateFacts,
    output: str | None,
    now: dt.datetime,
    started_at: dt.datetime | None = None,
) -> int:
    """Store the new revision and make it current, in the caller's transaction. Returns its
    number. `started_at`: the attempt's start, when the caller knows it (else read)."""
    cert_id = lock_certificate(session, name)
    if session.connection().execute(_KEY_USED, {"kid_": key.key_id}).scalar():
        raise Conflict(f"a revision with key {key.key_id} is stored already")
    number = (session.connection().execute(_LAST_NUMBER, {"cid_": cert_id}).scalar() or 0) + 1
    revision_id = session.connection().execute(_INSERT_REVISION, {
        "certificate_id": cert_id, "number": number, "key_id": key.key_id, "leaf_pem": leaf_pem,
        "chain_pem": chain_pem, "csr_pem": key.csr_pem, "serial": facts.serial, "not_before": facts.not_before,
        "not_after": facts.not_after, "fingerprint_sha256": facts.fingerprint_sha256,
        "public_key_sha256": facts.public_key_sha256, "issued_at": now,
    }).inserted_primary_key[0]
    _finish(session, attempt_id, started_at, Outcome.ISSUED, now, None, output, revision_number=number)
    update_status(session, cert_id, {
        "current_revision_id": revision_id, "pending_key_id": None, "phase": Phase.ISSUED.value, "failures": 0,
        "last_error": None, "renewal_requested": False, "warned_days": [], "expired_event_recorded": False,
        "retry_at": None, **CLEARED_DEFERRAL,
    })
    return number


def finish_attempt_failed(
    session: Session,
    name: str,
    *,
    attempt_id: int,
    outcome: Outcome,
    error: str,
    output: str | None,
    now: dt.datetime,
    retry_at: dt.datetime,
    keep_deferral: bool = False,
    started_at: dt.datetime | None = None,
) -> int:
    """Record a failed attempt; the served revision is left as it is. With `keep_deferral`
    the request the CA holds is kept and polled again at `retry_at`. Returns the failure count."""
    failures = _mark_failed(session, name, error=error, now=now, retry_at=retry_at, keep_deferral=keep_deferral)
    _finish(session, attempt_id, started_at, outcome, now, error, output)
    return failures


def _mark_failed(session: Session, name: str, *, error: str, now: dt.datetime,
                 retry_at: dt.datetime, keep_deferral: bool = False) -> int:
    cert_id = lock_certificate(session, name)
    st = session.connection().execute(_FAILURE_STATE, {"cid_": cert_id}).one()
    failures = (st.failures or 0) + 1
    values: dict[str, object] = {"failures": failures, "last_error": error, "renewal_requested": False,
                                 "retry_at": retry_at}
    if keep_deferral and st.deferred_since is not None:
        values |= {"deferred_poll_at": retry_at, "phase": Phase.DEFERRED.value}
    else:
        values |= CLEARED_DEFERRAL  # a failed poll or submission ends the deferral: the next try submits afresh
        if st.current_revision_id is None:
            values["phase"] = Phase.FAILED.value
        else:
            expired = st.not_after is not None and st.not_after <= now
            values["phase"] = (Phase.EXPIRED if expired else Phase.ISSUED).value
    update_status(session, cert_id, values)
    return failures


def fail_deferral(session: Session, name: str, *, error: str, now: dt.datetime, retry_at: dt.datetime) -> int:
    """A deferral that waited too long ends as a failure (no attempt runs for it).
    Returns the failure count."""
    return _mark_failed(session, name, error=error, now=now, retry_at=retry_at)


def spec_context(session: Session, name: str) -> dict[str, object]:
    """What a script's optional `context` sees about the served certificate."""
    cert_id = _id(session, name)
    flush_orm(session)
    rev = session.connection().execute(_SERVED_PEMS, {"cid_": cert_id}).first()
    return {"previous_certificate": rev.leaf_pem + rev.chain_pem if rev else None}
