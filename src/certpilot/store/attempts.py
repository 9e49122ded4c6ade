"""The attempt protocol: the key for the next revision is stored before the script
runs; an attempt is started, then finished as a new revision (made current in the
same transaction) or as a failure that leaves the served revision alone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict
from certpilot.domain.model import Outcome, Phase
from certpilot.pki.certificate import CertificateFacts
from certpilot.store.certificates import StoredKey, _row, get_key
from certpilot.store.tables import AttemptRow, CertificateStatusRow, HsmGroupRow, KeyRow, RevisionRow


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
    if row.status.current_revision_id is not None and kind != "poll":  # a poll stays `deferred`
        row.status.phase = Phase.RENEWING.value
    row.status.last_attempt_at = now
    session.flush()
    return attempt.id


def clear_deferral(st: CertificateStatusRow) -> None:
    """Forget the request the CA held (its cookie too)."""
    st.deferred_cookie_sealed = None
    st.deferred_since = None
    st.deferred_poll_at = None
    st.deferred_polls = 0


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
    clear_deferral(st)
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
    keep_deferral: bool = False,
) -> int:
    """Record a failed attempt; the served revision is left as it is. With `keep_deferral`
    the request the CA holds is kept and polled again at `retry_at`. Returns the failure count."""
    st = _mark_failed(session, name, error=error, now=now, retry_at=retry_at, keep_deferral=keep_deferral)
    attempt = session.get(AttemptRow, attempt_id)
    assert attempt is not None
    _finish(attempt, outcome, now, error, output)
    session.flush()
    return st.failures


def _mark_failed(session: Session, name: str, *, error: str, now: dt.datetime,
                 retry_at: dt.datetime, keep_deferral: bool = False) -> CertificateStatusRow:
    row = _row(session, name, for_update=True)
    st = row.status
    st.failures += 1
    st.last_error = error
    st.renewal_requested = False
    st.retry_at = retry_at
    if keep_deferral and st.deferred_since is not None:
        st.deferred_poll_at = retry_at
        st.phase = Phase.DEFERRED.value
        return st
    clear_deferral(st)  # a failed poll or submission ends the deferral: the next try submits afresh
    if st.current_revision_id is None:
        st.phase = Phase.FAILED.value
    else:
        expired = st.current_revision is not None and st.current_revision.not_after <= now
        st.phase = (Phase.EXPIRED if expired else Phase.ISSUED).value
    return st


def fail_deferral(session: Session, name: str, *, error: str, now: dt.datetime, retry_at: dt.datetime) -> int:
    """A deferral that waited too long ends as a failure (no attempt runs for it).
    Returns the failure count."""
    st = _mark_failed(session, name, error=error, now=now, retry_at=retry_at)
    session.flush()
    return st.failures


def spec_context(session: Session, name: str) -> Mapping[str, object]:
    """What a script's optional `context` sees about the served certificate."""
    row = _row(session, name)
    rev = row.status.current_revision
    return {"previous_certificate": rev.leaf_pem + rev.chain_pem if rev else None}
