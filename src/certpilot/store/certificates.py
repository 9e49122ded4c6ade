"""Certificates repository: spec, status, keys, revisions and attempts.

The status is written only through the `*_attempt` functions and `request_renewal`;
they are what the issuance service and the reconciler use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import (
    Attempt,
    Certificate,
    CertificateSpec,
    CertificateStatus,
    KeySpec,
    Outcome,
    Phase,
    Revision,
    Subject,
    SubjectAltName,
)
from certpilot.keys.sealing import Sealer
from certpilot.pki.certificate import CertificateFacts
from certpilot.policy import Action, applicable_warning_days, CertificateSnapshot, Decision, decide, expiry_status, is_expiring_within, renewal_time
from certpilot.store.profiles import _row as _profile_row
from certpilot.store.profiles import _to_profile
from certpilot.store.tables import (
    AttemptRow,
    CertificateRow,
    CertificateStatusRow,
    DynamicParamRow,
    HsmGroupRow,
    KeyRow,
    RevisionRow,
)


def dynamic_param_identity(row_id: str) -> str:
    return f"certificate_param:{row_id}:value"


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    backend: str
    key_spec: KeySpec
    private_key_sealed: bytes | None
    public_key_sha256: str
    csr_pem: str
    hsm_group: str | None = None
    pkcs11_label: str | None = None
    pkcs11_id: str | None = None


def _row(session: Session, name: str, *, for_update: bool = False) -> CertificateRow:
    query = select(CertificateRow).where(CertificateRow.name == name)
    if for_update:
        query = query.with_for_update(of=CertificateRow)
    row = session.scalar(query)
    if row is None:
        raise NotFound("certificate", name)
    return row


def _status(row: CertificateRow, now: dt.datetime) -> CertificateStatus:
    st = row.status
    rev = st.current_revision
    if rev is None:
        return CertificateStatus(
            phase=Phase(st.phase), next_action_at=st.next_action_at, failures=st.failures,
            last_error=st.last_error, last_attempt_at=st.last_attempt_at,
        )
    renewal = _to_profile(row.profile, None).renewal
    return CertificateStatus(
        phase=Phase(st.phase),
        revision=rev.number,
        serial=rev.serial,
        not_before=rev.not_before,
        not_after=rev.not_after,
        fingerprint_sha256=rev.fingerprint_sha256,
        expiry_status=expiry_status(
            rev.not_after, now, applicable_warning_days(renewal.warning_days, rev.not_before, rev.not_after)
        ),
        renew_at=renewal_time(rev.not_before, rev.not_after, renewal),
        next_action_at=st.next_action_at,
        failures=st.failures,
        last_error=st.last_error,
        last_attempt_at=st.last_attempt_at,
    )


def _to_certificate(row: CertificateRow, now: dt.datetime, sealer: Sealer | None = None) -> Certificate:
    dynamic: dict[str, str] = {}
    for p in row.dynamic_params:
        if p.sensitive:
            dynamic[p.name] = (
                sealer.open_text(p.value_sealed, dynamic_param_identity(p.id)) if sealer and p.value_sealed else "***"
            )
        else:
            dynamic[p.name] = p.value or ""
    spec = CertificateSpec(
        profile=row.profile.name,
        subject=Subject(**row.subject),  # type: ignore[arg-type]
        subject_alt_names=tuple(SubjectAltName.parse(s) for s in row.subject_alt_names),
        key=KeySpec.parse(row.key_spec),
        hsm_group=row.hsm_group,
        dynamic_params=dynamic,
    )
    return Certificate(
        name=row.name,
        spec=spec,
        status=_status(row, now),
        sensitive_params=frozenset(p.name for p in row.dynamic_params if p.sensitive),
    )


def _dynamic_rows(sealer: Sealer, values: Mapping[str, str], sensitive_params: frozenset[str]) -> list[DynamicParamRow]:
    rows = []
    for param_name, value in values.items():
        row_id = uuid.uuid4().hex
        sensitive = param_name in sensitive_params
        rows.append(
            DynamicParamRow(
                id=row_id, name=param_name, sensitive=sensitive,
                value=None if sensitive else value,
                value_sealed=sealer.seal_text(value, dynamic_param_identity(row_id)) if sensitive else None,
            )
        )
    return rows


def add_certificate(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    spec: CertificateSpec,
    sensitive_params: frozenset[str],
    now: dt.datetime,
) -> Certificate:
    if session.scalar(select(exists().where(CertificateRow.name == name))):
        raise Conflict(f"certificate {name!r} exists already")
    row = CertificateRow(
        name=name,
        profile=_profile_row(session, spec.profile),
        subject=spec.subject.as_dict(),
        subject_alt_names=[str(s) for s in spec.subject_alt_names],
        key_spec=str(spec.key),
        hsm_group=spec.hsm_group,
        created_at=now,
        updated_at=now,
        dynamic_params=_dynamic_rows(sealer, spec.dynamic_params, sensitive_params),
        status=CertificateStatusRow(phase=Phase.PENDING.value, failures=0, next_action_at=now, warned_days=[]),
    )
    session.add(row)
    session.flush()
    return _to_certificate(row, now)


def get_certificate(session: Session, name: str, now: dt.datetime, sealer: Sealer | None = None) -> Certificate:
    """The certificate; sensitive dynamic values in clear only when `sealer` is given."""
    return _to_certificate(_row(session, name), now, sealer)


def list_certificates(
    session: Session,
    now: dt.datetime,
    *,
    expiring_within_days: int | None = None,
    phase: Phase | None = None,
    profile: str | None = None,
    after_name: str | None = None,
    limit: int | None = None,
) -> list[Certificate]:
    """Ordered by name; `after_name` and `limit` page through the list."""
    query = select(CertificateRow).join(CertificateStatusRow).order_by(CertificateRow.name)
    if expiring_within_days is not None:
        # narrow in SQL on the served revision's expiry; the policy's own test decides below
        horizon = now + dt.timedelta(days=expiring_within_days)
        query = query.join(RevisionRow, RevisionRow.id == CertificateStatusRow.current_revision_id).where(
            RevisionRow.not_after <= horizon
        )
    if phase is not None:
        query = query.where(CertificateStatusRow.phase == phase.value)
    if profile is not None:
        query = query.where(CertificateRow.profile_id == _profile_row(session, profile).id)
    if after_name is not None:
        query = query.where(CertificateRow.name > after_name)
    if limit is not None:
        query = query.limit(limit)
    certs = [_to_certificate(r, now) for r in session.scalars(query)]
    if expiring_within_days is not None:
        certs = [
            c for c in certs
            if c.status.not_after is not None and is_expiring_within(c.status.not_after, now, expiring_within_days)
        ]
    return certs


def replace_spec(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    spec: CertificateSpec,
    sensitive_params: frozenset[str],
    keep_sensitive: frozenset[str],
    now: dt.datetime,
) -> bool:
    """Replace the spec; a sensitive dynamic value named in `keep_sensitive` keeps its
    stored value. A real change drops the key made for the old spec and asks for a
    new issuance. Returns whether anything changed."""
    row = _row(session, name)
    current = _to_certificate(row, now, sealer)
    values = dict(spec.dynamic_params)
    for param_name in keep_sensitive:
        if param_name not in current.sensitive_params:
            raise InvalidInput(f"dynamic parameter {param_name!r} has no stored value to keep: send its value",
                               field="dynamic_params")
        values[param_name] = current.spec.dynamic_params[param_name]
    new_spec = CertificateSpec(
        profile=spec.profile, subject=spec.subject, subject_alt_names=spec.subject_alt_names, key=spec.key,
        hsm_group=spec.hsm_group, dynamic_params=values,
    )
    if new_spec == current.spec and sensitive_params == current.sensitive_params:
        return False
    row.profile = _profile_row(session, spec.profile)
    row.subject = spec.subject.as_dict()
    row.subject_alt_names = [str(s) for s in spec.subject_alt_names]
    row.key_spec = str(spec.key)
    row.hsm_group = spec.hsm_group
    row.updated_at = now
    row.dynamic_params.clear()
    session.flush()
    row.dynamic_params.extend(_dynamic_rows(sealer, values, sensitive_params))
    row.status.pending_key_id = None  # its CSR says what the old spec said
    row.status.renewal_requested = True
    row.status.next_action_at = now
    session.flush()
    return True


def remove_certificate(session: Session, name: str) -> None:
    row = _row(session, name)
    row.status.current_revision_id = None
    row.status.pending_key_id = None
    session.flush()
    session.delete(row)


def list_revisions(session: Session, name: str) -> list[Revision]:
    """Newest first."""
    row = _row(session, name)
    rows = session.scalars(
        select(RevisionRow).where(RevisionRow.certificate_id == row.id).order_by(RevisionRow.number.desc())
    )
    return [
        Revision(
            revision=r.number, serial=r.serial, not_before=r.not_before, not_after=r.not_after,
            fingerprint_sha256=r.fingerprint_sha256, public_key_sha256=r.public_key_sha256,
            leaf_pem=r.leaf_pem, chain_pem=r.chain_pem, csr_pem=r.csr_pem, key_id=r.key_id,
            issued_at=r.issued_at,
        )
        for r in rows
    ]


def current_revision(session: Session, name: str) -> Revision | None:
    """The revision being served, if any."""
    current = _row(session, name).status.current_revision
    if current is None:
        return None
    return next(r for r in list_revisions(session, name) if r.revision == current.number)


def list_attempts(session: Session, name: str, limit: int = 50) -> list[Attempt]:
    """Newest first."""
    row = _row(session, name)
    rows = session.scalars(
        select(AttemptRow).where(AttemptRow.certificate_id == row.id).order_by(AttemptRow.id.desc()).limit(limit)
    )
    return [
        Attempt(
            id=a.id, kind=a.kind, started_at=a.started_at, finished_at=a.finished_at,
            outcome=Outcome(a.outcome) if a.outcome else None, duration_ms=a.duration_ms,
            error=a.error, output=a.output, revision=a.revision_number,
        )
        for a in rows
    ]


def get_key(session: Session, key_id: str) -> StoredKey:
    row = session.get(KeyRow, key_id)
    if row is None:
        raise NotFound("key", key_id)
    group = session.get(HsmGroupRow, row.hsm_group_id) if row.hsm_group_id else None
    return StoredKey(
        key_id=row.id, backend=row.backend, key_spec=KeySpec.parse(row.key_spec),
        private_key_sealed=row.private_key_sealed, public_key_sha256=row.public_key_sha256, csr_pem=row.csr_pem,
        hsm_group=group.name if group else None, pkcs11_label=row.pkcs11_label, pkcs11_id=row.pkcs11_id,
    )


# --- the attempt protocol: claim -> (store key) -> start -> finish ----------


def request_renewal(session: Session, name: str, now: dt.datetime) -> None:
    row = _row(session, name)
    row.status.renewal_requested = True
    row.status.next_action_at = now


def _id(session: Session, name: str) -> int:
    cert_id = session.scalar(select(CertificateRow.id).where(CertificateRow.name == name))
    if cert_id is None:
        raise NotFound("certificate", name)
    return cert_id


def claim(session: Session, name: str, *, owner: str, now: dt.datetime, lease_until: dt.datetime) -> None:
    """Take the lease on `name`, or raise `Conflict` while another live worker holds it."""
    cert_id = _id(session, name)
    taken = session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id == cert_id)
        .where(
            or_(
                CertificateStatusRow.lease_owner.is_(None),
                CertificateStatusRow.lease_owner == owner,
                CertificateStatusRow.lease_expires_at < now,
            )
        )
        .values(lease_owner=owner, lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        raise Conflict(f"certificate {name!r} is being worked on by another worker; try again shortly")
    session.expire_all()  # the status rows loaded before the UPDATE are stale now


def is_leased(session: Session, name: str, now: dt.datetime) -> bool:
    """Some live holder has the lease on `name`."""
    status = session.get(CertificateStatusRow, _id(session, name))
    return bool(status and status.lease_owner and status.lease_expires_at and status.lease_expires_at >= now)


def release(session: Session, name: str, owner: str) -> None:
    session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id == _id(session, name))
        .where(CertificateStatusRow.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def pending_key(session: Session, name: str) -> StoredKey | None:
    """The key made for the next revision and not used yet, if any."""
    key_id = _row(session, name).status.pending_key_id
    return get_key(session, key_id) if key_id else None


def store_pending_key(session: Session, name: str, key: StoredKey, *, attempt_id: int, now: dt.datetime) -> None:
    """Keep the key made for the next revision (before any CA sees its CSR)."""
    row = _row(session, name)
    session.add(
        KeyRow(
            id=key.key_id, certificate_id=row.id, backend=key.backend, key_spec=str(key.key_spec),
            private_key_sealed=key.private_key_sealed, public_key_sha256=key.public_key_sha256,
            csr_pem=key.csr_pem, created_at=now,
            hsm_group_id=session.scalar(select(HsmGroupRow.id).where(HsmGroupRow.name == key.hsm_group))
            if key.hsm_group else None,
            pkcs11_label=key.pkcs11_label, pkcs11_id=key.pkcs11_id,
        )
    )
    session.flush()
    row.status.pending_key_id = key.key_id
    attempt = session.get(AttemptRow, attempt_id)
    assert attempt is not None
    attempt.key_id = key.key_id


def start_attempt(session: Session, name: str, *, key_id: str | None, kind: str, worker: str, now: dt.datetime) -> int:
    row = _row(session, name)
    # an attempt still open here belonged to a worker that died: its lease ran out
    for stale in session.scalars(
        select(AttemptRow).where(AttemptRow.certificate_id == row.id).where(AttemptRow.finished_at.is_(None))
    ):
        _finish(stale, Outcome.FAILED, now, f"the worker {stale.worker} stopped during this attempt", None)
    attempt = AttemptRow(certificate_id=row.id, key_id=key_id, kind=kind, worker=worker, started_at=now)
    session.add(attempt)
    if row.status.current_revision_id is not None:
        row.status.phase = Phase.RENEWING.value
    row.status.last_attempt_at = now
    session.flush()
    return attempt.id


def _finish(row: AttemptRow, outcome: Outcome, now: dt.datetime, error: str | None, output: str | None) -> None:
    row.finished_at = now
    row.outcome = outcome.value
    row.duration_ms = int((now - row.started_at).total_seconds() * 1000)
    row.error = error
    row.output = output


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
) -> int:
    """Store the new revision and make it current, in the caller's transaction. Returns its number."""
    row = _row(session, name, for_update=True)
    if session.scalar(select(exists().where(RevisionRow.key_id == key.key_id))):
        raise Conflict(f"a revision with key {key.key_id} is stored already")
    last = session.scalar(
        select(RevisionRow.number).where(RevisionRow.certificate_id == row.id).order_by(RevisionRow.number.desc()).limit(1)
    )
    revision = RevisionRow(
        certificate_id=row.id, number=(last or 0) + 1, key_id=key.key_id, leaf_pem=leaf_pem,
        chain_pem=chain_pem, csr_pem=key.csr_pem, serial=facts.serial, not_before=facts.not_before,
        not_after=facts.not_after, fingerprint_sha256=facts.fingerprint_sha256,
        public_key_sha256=facts.public_key_sha256, issued_at=now,
    )
    session.add(revision)
    session.flush()
    st = row.status
    st.current_revision_id = revision.id
    st.pending_key_id = None
    st.phase = Phase.ISSUED.value
    st.failures = 0
    st.last_error = None
    st.renewal_requested = False
    st.warned_days = []
    st.expired_event_recorded = False
    st.retry_at = None
    attempt = session.get(AttemptRow, attempt_id)
    assert attempt is not None
    _finish(attempt, Outcome.ISSUED, now, None, output)
    attempt.revision_number = revision.number
    session.flush()
    session.refresh(st)
    reschedule(row, now)
    return revision.number


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
) -> int:
    """Record a failed attempt; the served revision is left as it is. Returns the failure count."""
    row = _row(session, name, for_update=True)
    st = row.status
    st.failures += 1
    st.last_error = error
    st.renewal_requested = False
    st.retry_at = retry_at
    if st.current_revision_id is None:
        st.phase = Phase.FAILED.value
    else:
        expired = st.current_revision is not None and st.current_revision.not_after <= now
        st.phase = (Phase.EXPIRED if expired else Phase.ISSUED).value
    attempt = session.get(AttemptRow, attempt_id)
    assert attempt is not None
    _finish(attempt, outcome, now, error, output)
    session.flush()
    reschedule(row, now)
    return st.failures


def spec_context(session: Session, name: str) -> Mapping[str, object]:
    """What a script's optional `context` sees about the served certificate."""
    row = _row(session, name)
    rev = row.status.current_revision
    return {"previous_certificate": rev.leaf_pem + rev.chain_pem if rev else None}


# --- scheduling: what the renewal loop needs ---------------------------------


def snapshot(row: CertificateRow) -> CertificateSnapshot:
    """The policy's view of one certificate. The snapshot's `next_action_at` is the
    backoff time (`retry_at`), not the loop's wake-up time."""
    st = row.status
    rev = st.current_revision
    return CertificateSnapshot(
        phase=Phase(st.phase),
        has_revision=rev is not None,
        not_before=rev.not_before if rev else None,
        not_after=rev.not_after if rev else None,
        renewal=_to_profile(row.profile, None).renewal,
        failures=st.failures,
        next_action_at=st.retry_at,
        renewal_requested=st.renewal_requested,
        warned_days=frozenset(st.warned_days or ()),
        expired_event_recorded=st.expired_event_recorded,
    )


def reschedule(row: CertificateRow, now: dt.datetime) -> Decision:
    """Set `next_action_at` from the policy: now when something is due, else when it falls due."""
    decision = decide(snapshot(row), now)
    row.status.next_action_at = decision.at if decision.action is Action.NOTHING else now
    return decision


def reschedule_by_name(session: Session, name: str, now: dt.datetime) -> Decision:
    return reschedule(_row(session, name), now)


def release_all(session: Session, owner: str) -> None:
    session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def decide_for(session: Session, name: str, now: dt.datetime) -> Decision:
    return decide(snapshot(_row(session, name)), now)


def record_warnings(session: Session, name: str, days: tuple[int, ...], now: dt.datetime) -> None:
    row = _row(session, name)
    row.status.warned_days = sorted(set(row.status.warned_days or ()) | set(days), reverse=True)
    session.flush()
    reschedule(row, now)


def mark_expired(session: Session, name: str, now: dt.datetime) -> None:
    row = _row(session, name)
    row.status.phase = Phase.EXPIRED.value
    row.status.expired_event_recorded = True
    session.flush()
    reschedule(row, now)


def served_not_after(session: Session, name: str) -> dt.datetime | None:
    rev = _row(session, name).status.current_revision
    return rev.not_after if rev else None


def claim_due(
    session: Session, *, owner: str, now: dt.datetime, lease_until: dt.datetime, limit: int
) -> list[str]:
    """Lease up to `limit` certificates whose next action is due and that no live
    worker holds; other workers skip the rows this one locks (PostgreSQL)."""
    due = (
        select(CertificateStatusRow.certificate_id)
        .where(CertificateStatusRow.next_action_at <= now)
        .where(or_(CertificateStatusRow.lease_owner.is_(None), CertificateStatusRow.lease_expires_at < now))
        .order_by(CertificateStatusRow.next_action_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id.in_(ids))
        .values(lease_owner=owner, lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(select(CertificateRow.name).where(CertificateRow.id.in_(ids))))


def earliest_next_action(session: Session, now: dt.datetime) -> dt.datetime | None:
    """When this loop may find work next: the earliest `next_action_at` among
    certificates no live worker holds, or the earliest expiry of a live lease."""
    st = CertificateStatusRow
    free = session.scalar(
        select(func.min(st.next_action_at)).where(or_(st.lease_owner.is_(None), st.lease_expires_at < now))
    )
    leased = session.scalar(select(func.min(st.lease_expires_at)).where(st.lease_expires_at >= now))
    return min((t for t in (free, leased) if t is not None), default=None)


def postpone(session: Session, name: str, until: dt.datetime) -> None:
    """Look at `name` again no sooner than `until` (after an unexpected error)."""
    _row(session, name).status.next_action_at = until


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
