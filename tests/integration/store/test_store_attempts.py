"""store.attempts (the attempt protocol, in Core statements): what an attempt loads, how it
starts (a dead worker's open attempt closed, a new key stored with it), and how it ends
(a new current revision, or a failure that leaves the served one), on SQLite and
PostgreSQL; ORM rows of the same session stay coherent with the Core writes."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import KeySpec, Outcome, Phase, ProfileParam
from certpilot.domain.script_state import StateChanges
from certpilot.keys.sealing import Sealer
from certpilot.pki.certificate import CertificateFacts
from certpilot.store import attempts, certificates, deferrals, schedule, script_state
from certpilot.store.certificates import StoredKey
from certpilot.store.session import Database
from certpilot.store.tables import AttemptRow, CertificateStatusRow, KeyRow, RevisionRow
from tests.integration.store.conftest import T0, Seed

LATER = T0 + dt.timedelta(minutes=5)


def _key(key_id: str = "k" * 32) -> StoredKey:
    return StoredKey(key_id=key_id, backend="software", key_spec=KeySpec.parse("ec:p256"),
                     private_key_sealed=b"sealed", public_key_sha256="ef" * 32, csr_pem="NEW CSR")


def _facts(serial: str = "0abc", days: int = 90) -> CertificateFacts:
    return CertificateFacts(serial=serial, not_before=LATER, not_after=LATER + dt.timedelta(days=days),
                            fingerprint_sha256="12" * 32, public_key_sha256="ef" * 32)


def _status(db: Database, name: str) -> CertificateStatusRow:
    with db.read() as session:
        status = session.scalar(select(CertificateStatusRow).where(
            CertificateStatusRow.certificate_id == certificates._id(session, name)))
        assert status is not None
        session.expunge(status)
        return status


def _attempts(db: Database) -> list[AttemptRow]:
    with db.read() as session:
        rows = list(session.scalars(select(AttemptRow).order_by(AttemptRow.id)))
        session.expunge_all()
        return rows


def test_inputs_hold_what_an_attempt_needs_with_sensitive_values_opened(
        db: Database, seed: Seed, sealer: Sealer) -> None:
    with db.transaction() as session:
        seed.profile(session, "p", params=(ProfileParam("token", "s3cret", sensitive=True),
                                           ProfileParam("url", "https://ca.test")))
        seed.certificate(session, "web")
        served_key = seed.revision(session, "web", 1)
        pending = seed.key(session, "web")
        session.get(CertificateStatusRow, certificates._id(session, "web")).pending_key_id = pending  # type: ignore[union-attr]
        script_state.apply(session, "p", sealer, StateChanges(set={"account": "k3y"}, deleted=frozenset()), T0)
    with db.transaction() as session:
        inputs = attempts.load_inputs(session, "web", LATER, sealer, lock=True)
        assert inputs.state == script_state.load(session, "p", sealer) == {"account": "k3y"}
    assert inputs.certificate.name == "web" and inputs.certificate.status.revision == 1
    assert inputs.certificate.status.phase is Phase.ISSUED
    assert [(p.name, p.value) for p in inputs.profile.params] == [("token", "s3cret"), ("url", "https://ca.test")]
    assert (inputs.script.name, inputs.script.timeout_s) == ("s", 60) and "certificate_request" in inputs.script.source
    assert inputs.key is not None and inputs.key.key_id == pending and inputs.key.key_id != served_key
    assert inputs.previous_pem == "LEAF1CHAIN1"
    assert inputs.deferred_since is None and not inputs.renewal_requested
    with db.read() as session, pytest.raises(NotFound):
        attempts.load_inputs(session, "nope", LATER, sealer)


def test_start_closes_a_dead_workers_attempt_and_stores_the_new_key_with_its_own(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        cert_id = seed.certificate(session, "web")
        seed.revision(session, "web", 1)
        seed.attempt(session, "web", started_at=T0)  # left open by a worker that died
    with db.transaction() as session:
        attempt_id = attempts.start_attempt(session, cert_id, key_id=None, kind="renew", worker="w2", now=LATER,
                                            renewing=True, new_key=_key())
    stale, new = _attempts(db)
    assert (stale.outcome, stale.finished_at, stale.duration_ms) == ("failed", LATER, 300_000)
    assert stale.error == "the worker w stopped during this attempt"
    assert (new.id, new.kind, new.worker, new.key_id, new.finished_at) == (attempt_id, "renew", "w2", "k" * 32, None)
    status = _status(db, "web")
    assert (status.phase, status.pending_key_id, status.last_attempt_at) == ("renewing", "k" * 32, LATER)
    with db.read() as session:
        assert session.get(KeyRow, "k" * 32).csr_pem == "NEW CSR"  # type: ignore[union-attr]
        assert attempts.pending_key(session, "web") == _key()


def test_a_poll_stays_deferred_and_a_first_issue_stays_pending(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        served = seed.certificate(session, "served")
        seed.revision(session, "served", 1)
        new = seed.certificate(session, "new")
        certificates.update_status(session, served, {"phase": "deferred"})
    with db.transaction() as session:
        attempts.start_attempt(session, served, key_id=None, kind="poll", worker="w", now=LATER, renewing=True)
        attempts.start_attempt(session, new, key_id=None, kind="issue", worker="w", now=LATER, renewing=False)
    assert _status(db, "served").phase == "deferred"
    assert _status(db, "new").phase == "pending"


def test_an_issued_attempt_becomes_the_current_revision_and_clears_the_past(
        db: Database, seed: Seed, sealer: Sealer) -> None:
    with db.transaction() as session:
        cert_id = seed.certificate(session, "web")
        seed.revision(session, "web", 1)
        attempt_id = attempts.start_attempt(session, cert_id, key_id=None, kind="renew", worker="w", now=T0,
                                            renewing=True, new_key=_key())
        certificates.update_status(session, cert_id, {"failures": 3, "last_error": "boom", "warned_days": [7],
                                                      "renewal_requested": True, "retry_at": T0})
        deferrals.record(session, "web", sealer, attempt_id=seed.attempt(session, "web"), cookie="c", now=T0,
                         poll_at=LATER, output=None)
    with db.transaction() as session:
        number = attempts.finish_attempt_issued(session, "web", attempt_id=attempt_id, key=_key(), leaf_pem="LEAF2",
                                                chain_pem="CHAIN2", facts=_facts(), output="ok", now=LATER)
    assert number == 2
    status = _status(db, "web")
    assert (status.phase, status.failures, status.last_error, status.retry_at) == ("issued", 0, None, None)
    assert (status.pending_key_id, status.renewal_requested, status.warned_days) == (None, False, [])
    assert (status.deferred_since, status.deferred_cookie_sealed, status.deferred_polls) == (None, None, 0)
    with db.read() as session:
        current = session.get(RevisionRow, status.current_revision_id)
        assert current is not None and (current.number, current.leaf_pem, current.key_id) == (2, "LEAF2", "k" * 32)
    done = next(a for a in _attempts(db) if a.id == attempt_id)
    assert (done.outcome, done.revision_number, done.output, done.duration_ms) == ("issued", 2, "ok", 300_000)
    with db.transaction() as session, pytest.raises(Conflict, match="stored already"):
        attempts.finish_attempt_issued(session, "web", attempt_id=attempt_id, key=_key(), leaf_pem="L",
                                       chain_pem="C", facts=_facts(), output=None, now=LATER)


@pytest.mark.parametrize(("served_days", "keep", "phase"), [
    (None, False, "failed"), (90, False, "issued"), (1, False, "expired"), (90, True, "deferred"),
], ids=["never-issued", "served-revision-kept", "served-revision-expired", "deferral-kept"])
def test_a_failure_counts_and_leaves_the_served_revision(
        db: Database, seed: Seed, sealer: Sealer, served_days: int | None, keep: bool, phase: str) -> None:
    later = T0 + dt.timedelta(days=2)
    with db.transaction() as session:
        cert_id = seed.certificate(session, "web")
        if served_days is not None:
            seed.revision(session, "web", 1, days=served_days)
        deferrals.record(session, "web", sealer, attempt_id=seed.attempt(session, "web"), cookie="c", now=T0,
                         poll_at=LATER, output=None)
        attempt_id = attempts.start_attempt(session, cert_id, key_id=None, kind="poll", worker="w", now=T0,
                                            renewing=served_days is not None)
    with db.transaction() as session:
        failures = attempts.finish_attempt_failed(session, "web", attempt_id=attempt_id, outcome=Outcome.TIMEOUT,
                                                  error="slow", output=None, now=later, retry_at=later,
                                                  keep_deferral=keep, started_at=T0)
    assert failures == 1
    status = _status(db, "web")
    assert (status.phase, status.failures, status.last_error, status.retry_at) == (phase, 1, "slow", later)
    assert (status.deferred_since is not None) is keep
    assert status.deferred_poll_at == (later if keep else None)
    assert status.current_revision_id is None if served_days is None else status.current_revision_id is not None
    done = next(a for a in _attempts(db) if a.id == attempt_id)
    assert (done.outcome, done.error, done.duration_ms) == ("timeout", "slow", 2 * 86_400_000)


def test_a_key_made_after_the_start_is_stored_as_pending_and_on_the_attempt(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        cert_id = seed.certificate(session, "web")
        attempt_id = attempts.start_attempt(session, cert_id, key_id=None, kind="issue", worker="w", now=T0,
                                            renewing=False)
    with db.transaction() as session:
        attempts.store_pending_key(session, "web", _key(), attempt_id=attempt_id, now=T0)
    assert _status(db, "web").pending_key_id == "k" * 32
    assert _attempts(db)[0].key_id == "k" * 32


def test_orm_rows_of_the_same_session_see_the_core_writes_and_are_seen_by_them(db: Database, seed: Seed) -> None:
    """Services load ORM rows and then call the store's Core functions in one transaction:
    a pending ORM change is written before a Core statement reads, and an ORM row loaded
    before a Core write shows the write."""
    with db.transaction() as session:
        seed.certificate(session, "web")
    with db.transaction() as session:
        row = certificates._row(session, "web")
        row.status.renewal_requested = True  # an ORM change, not flushed yet
        assert schedule.is_renewal_requested(session, "web")
        assert schedule.snapshot(session, "web").renewal_requested
        schedule.set_next_action(session, "web", LATER)
        schedule.mark_expired(session, "web")
        assert (row.status.next_action_at, row.status.phase) == (LATER, "expired")
        assert certificates.get_certificate(session, "web", LATER).status.next_action_at == LATER
