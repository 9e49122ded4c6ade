"""One issuance attempt for one certificate: first issue and renewal alike.

    claim (lease) -> key for the next revision (made once, stored sealed before the
    script runs) -> CSR -> script in a worker process -> the five checks ->
    record: a new revision in the same transaction that makes it current, or a
    failed attempt that leaves the served revision untouched.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from certpilot.domain.errors import IssuerFailed
from certpilot.domain.model import Certificate, EventKind, Outcome, Profile, Script
from certpilot.issuers.capture import scrub
from certpilot.issuers.runner import ScriptCall, ScriptResult
from certpilot.keys.software import generate_private_key, seal_private_key
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.checks import IssuedCertificate, check_issued
from certpilot.pki.csr import build_csr
from certpilot.policy import next_retry_at
from certpilot.services.app import App
from certpilot.store import certificates as repo
from certpilot.store import profiles as profile_repo
from certpilot.store import scripts as script_repo
from certpilot.store.events import record_event

@dataclass(frozen=True)
class AttemptReport:
    name: str
    outcome: Outcome
    revision: int | None
    error: str | None
    failures: int


@dataclass(frozen=True)
class _Job:
    certificate: Certificate
    profile: Profile
    script: Script
    key: repo.StoredKey | None
    previous_pem: str | None


def _secrets(job: _Job) -> tuple[str, ...]:
    values = [p.value for p in job.profile.params if p.sensitive and p.value]
    values += [job.certificate.spec.dynamic_params[n] for n in job.certificate.sensitive_params]
    return tuple(v for v in values if v)


def _args(job: _Job) -> dict[str, str]:
    values = job.certificate.spec.dynamic_params
    return {p.name: (values.get(p.name, "") if p.dynamic else p.value or "") for p in job.profile.params}


def attempt(app: App, name: str, *, actor: str | None = None) -> AttemptReport:
    """Run one attempt now. Raises `NotFound`, or `Conflict` when another worker holds
    the certificate; every failure of the issuer itself is a recorded attempt."""
    owner = app.worker_id
    actor = actor or f"controller:{owner}"
    now = app.clock.now()
    with app.db.transaction() as session:
        cert = repo.get_certificate(session, name, now, app.sealer)
        profile = profile_repo.get_profile(session, cert.spec.profile, app.sealer)
        script = script_repo.get_script(session, profile.script)
        repo.claim(session, name, owner=owner, now=now,
                   lease_until=now + dt.timedelta(seconds=script.timeout_s + app.settings.lease_margin_s))
        job = _Job(cert, profile, script, repo.pending_key(session, name),
                   repo.spec_context(session, name)["previous_certificate"])  # type: ignore[arg-type]
    try:
        return _run(app, job, owner, actor)
    finally:
        with app.db.transaction() as session:
            repo.release(session, name, owner)


def _run(app: App, job: _Job, owner: str, actor: str) -> AttemptReport:
    name, spec = job.certificate.name, job.certificate.spec
    kind = "issue" if job.certificate.status.revision is None else "renew"
    key = job.key
    if key is None:
        private_key = generate_private_key(spec.key)
        key_id = uuid.uuid4().hex
        key = repo.StoredKey(
            key_id=key_id, backend="software", key_spec=spec.key,
            private_key_sealed=seal_private_key(app.sealer, private_key, key_id),
            public_key_sha256=public_key_sha256(private_key.public_key()),
            csr_pem=build_csr(private_key, spec.subject, spec.subject_alt_names),
        )
        store_new_key = True
    else:
        store_new_key = False
    with app.db.transaction() as session:
        if store_new_key:  # the key is durable before any CA sees its CSR
            repo.store_pending_key(
                session, name, key_id=key.key_id, backend=key.backend, key_spec=key.key_spec,
                private_key_sealed=key.private_key_sealed, public_key_sha256=key.public_key_sha256,
                csr_pem=key.csr_pem, now=app.clock.now(),
            )
        attempt_id = repo.start_attempt(session, name, key_id=key.key_id, kind=kind, worker=owner,
                                        now=app.clock.now())

    secrets = _secrets(job)
    call = ScriptCall(
        script_name=job.script.name, source=job.script.source, timeout_s=job.script.timeout_s,
        csr_pem=key.csr_pem, common_name=spec.subject.common_name, args=_args(job), secrets=secrets,
        context={
            "certificate_name": name, "profile_name": job.profile.name,
            "subject_alt_names": [str(s) for s in spec.subject_alt_names],
            "key_algorithm": str(spec.key), "previous_certificate": job.previous_pem,
        },
    )
    try:
        result = app.runner.call(call)
    except Exception as exc:  # the runner itself broke: still a recorded, retryable attempt
        result = ScriptResult(None, f"the script runner failed: {exc}", False, None, "", 0.0)
    try:
        issued = _checked(result, key, job, app.clock.now())
    except IssuerFailed as failure:
        return _record_failure(app, job, attempt_id, failure, result, secrets, actor)
    return _record_success(app, job, attempt_id, key, issued, result, actor)


def _checked(result: ScriptResult, key: repo.StoredKey, job: _Job, now: dt.datetime) -> IssuedCertificate:
    if result.timed_out:
        raise IssuerFailed(result.error or "timeout", outcome=Outcome.TIMEOUT.value)
    if result.returned_other:
        raise IssuerFailed(result.error or "the script returned no text", outcome=Outcome.INVALID.value)
    if result.error is not None:
        raise IssuerFailed(result.error)
    if result.pending is not None:
        raise IssuerFailed("the CA deferred issuance; deferred issuance is not supported yet", outcome="failed")
    return check_issued(
        result.pem, expected_public_key_sha256=key.public_key_sha256,
        requested_names=job.certificate.spec.subject_alt_names, now=now,
    )


def _record_success(
    app: App, job: _Job, attempt_id: int, key: repo.StoredKey, issued: IssuedCertificate,
    result: ScriptResult, actor: str,
) -> AttemptReport:
    name = job.certificate.name
    now = app.clock.now()
    with app.db.transaction() as session:
        number = repo.finish_attempt_issued(
            session, name, attempt_id=attempt_id, key=key, leaf_pem=issued.leaf_pem,
            chain_pem=issued.chain_pem, facts=issued.facts, output=result.output or None, now=now,
        )
        first = job.certificate.status.revision is None
        record_event(
            session, at=now, actor=actor,
            kind=EventKind.CERT_ISSUED if first else EventKind.CERT_RENEWED,
            object_type="certificate", object_name=name,
            details={"revision": number, "serial": issued.facts.serial,
                     "not_after": issued.facts.not_after.isoformat()},
        )
    return AttemptReport(name, Outcome.ISSUED, number, None, 0)


def _record_failure(
    app: App, job: _Job, attempt_id: int, failure: IssuerFailed, result: ScriptResult,
    secrets: tuple[str, ...], actor: str,
) -> AttemptReport:
    name = job.certificate.name
    now = app.clock.now()
    error = scrub(str(failure), secrets)
    outcome = Outcome(failure.outcome)
    failures = job.certificate.status.failures + 1
    retry_at = next_retry_at(failures, now=now, not_after=job.certificate.status.not_after,
                             random_fraction=app.random_fraction())
    with app.db.transaction() as session:
        failures = repo.finish_attempt_failed(
            session, name, attempt_id=attempt_id, outcome=outcome, error=error,
            output=result.output or None, now=now, retry_at=retry_at,
        )
        first = job.certificate.status.revision is None
        record_event(
            session, at=now, actor=actor,
            kind=EventKind.CERT_ISSUE_FAILED if first else EventKind.CERT_RENEW_FAILED,
            object_type="certificate", object_name=name,
            details={"outcome": outcome.value, "error": error, "failures": failures,
                     "next_attempt_at": retry_at.isoformat()},
        )
    return AttemptReport(name, outcome, job.certificate.status.revision, error, failures)


def is_success(report: AttemptReport) -> bool:
    return report.outcome is Outcome.ISSUED

