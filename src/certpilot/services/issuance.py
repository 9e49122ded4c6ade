"""One issuance attempt for one certificate: first issue and renewal alike.

    claim (lease) -> key for the next revision (made once, stored sealed before the
    script runs) -> CSR -> script in a worker process -> the five checks ->
    record: a new revision in the same transaction that makes it current, or a
    failed attempt that leaves the served revision untouched.

Deferred issuance: a script that raises `Pending(retry_after_s, cookie)` leaves
the request with its CA; the cookie is stored sealed in the transaction that
records the answer (the key was stored before the CA saw the CSR), and later
attempts are polls, `certificate_poll(cookie, args_dict)`, with the same key,
until the CA issues (the five checks, as ever), fails (backoff, then a fresh
submission), or the profile's `max_pending_days` pass. A manual renewal while
deferred abandons the request and submits afresh.

Script state: every call gets the profile's `context.state`; what the call
changed is saved with its outcome (see `domain.script_state` for the merge rule).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from certpilot.clock import monotonic_s
from certpilot.domain.errors import Conflict, IssuerFailed, KeyBackendError
from certpilot.domain.model import Certificate, CertificateSpec, EventKind, Outcome, Profile, Script
from certpilot.issuers.capture import scrub
from certpilot.issuers.messages import OPERATION_POLL, OPERATION_REQUEST
from certpilot.issuers.script_functions import defines_renewal_info
from certpilot.issuers.runner import Failed, Issued, Pending, ScriptCall, ScriptResult
from certpilot.pki.checks import IssuedCertificate, check_issued
from certpilot.policy import next_retry_at
from certpilot.policy.deferral import next_poll_at
from certpilot.services import key_backends, scheduling
from certpilot.services.app import App
from certpilot.store import attempts, deferrals, renewal_info, schedule, script_state
from certpilot.store import certificates as repo
from certpilot.store import profiles as profile_repo
from certpilot.store.events import record_event

@dataclass(frozen=True)
class AttemptReport:
    """`deferred_since` and `next_poll_at` are set when the outcome is DEFERRED."""

    name: str
    outcome: Outcome
    revision: int | None
    error: str | None
    failures: int
    deferred_since: dt.datetime | None = None
    next_poll_at: dt.datetime | None = None


@dataclass(frozen=True)
class _Job:
    certificate: Certificate
    profile: Profile
    script: Script
    key: repo.StoredKey | None
    previous_pem: str | None
    deferral: deferrals.Deferral | None = None  # set: this attempt polls the request the CA holds
    state: dict[str, str] | None = None  # the profile's context.state as the attempt began
    started_at: dt.datetime | None = None  # the attempt row's `started_at` (None: read it)


STATE_SCRUB_MIN_CHARS = 16  # context.state values this long are masked in output like secrets


def _secrets(job: _Job) -> tuple[str, ...]:
    """What is masked in the call's output: sensitive parameters, and the script's
    `context.state` values long enough to be a key or token rather than a counter or a
    flag (the bundled acme script keeps its account key there). The CA's cookie is not:
    it names the request, which the CA's own messages quote."""
    values = [p.value for p in job.profile.params if p.sensitive and p.value]
    values += [job.certificate.spec.dynamic_params[n] for n in job.certificate.sensitive_params]
    values += [v for v in (job.state or {}).values() if len(v) >= STATE_SCRUB_MIN_CHARS]
    return tuple(v for v in values if v)


def _args(job: _Job) -> dict[str, str]:
    values = job.certificate.spec.dynamic_params
    return {p.name: (values.get(p.name, "") if p.dynamic else p.value or "") for p in job.profile.params}


@dataclass(frozen=True)
class Started:
    """An attempt begun (lease held, attempt row open): what `run_started` finishes."""

    job: _Job
    attempt_id: int
    owner: str
    actor: str


def _is_cheap_key(spec: CertificateSpec) -> bool:
    """Software EC keys take well under a millisecond: made and stored in the transaction
    that starts the attempt. RSA keys (tens of milliseconds) and HSM keys are made outside
    it and stored in a transaction of their own, so SQLite's writer is not held for them."""
    return spec.hsm_group is None and spec.key.algorithm == "ec"


def start(app: App, session: Session, name: str, *, owner: str, actor: str) -> Started:
    """In the caller's transaction: claim `name`, load what the attempt needs and open the
    attempt (with a cheap new key, see `_is_cheap_key`, stored with it). Raises `NotFound`,
    or `Conflict` when another holder has the lease."""
    now = app.clock.now()
    inputs = attempts.load_inputs(session, name, now, app.sealer, lock=True)
    schedule.claim(session, name, owner=owner, now=now,
                   lease_until=now + dt.timedelta(seconds=inputs.script.timeout_s + app.settings.lease_margin_s))
    cert, key = inputs.certificate, inputs.key
    deferral = deferrals.of_inputs(inputs, app.sealer)
    if deferral is not None and (key is None or inputs.renewal_requested):
        deferrals.abandon(session, name)  # a manual renewal (or a lost key) submits afresh
        deferral = None
    new_key = None
    if key is None and _is_cheap_key(cert.spec):
        try:
            key = new_key = key_backends.backend_for(app, cert.spec).new_key(name, cert.spec)
        except KeyBackendError:
            pass  # made again (and its failure recorded) when the attempt runs
    job = _Job(cert, inputs.profile, inputs.script, key, inputs.previous_pem, deferral,
               inputs.state, started_at=now)
    kind = "poll" if deferral is not None else "issue" if cert.status.revision is None else "renew"
    attempt_id = attempts.start_attempt(
        session, inputs.cert_id, key_id=key.key_id if key else None, kind=kind, worker=owner, now=now,
        renewing=cert.status.revision is not None, new_key=new_key)
    return Started(job, attempt_id, owner, actor)


def run_started(app: App, started: Started) -> AttemptReport:
    """Key, script, checks, and the outcome recorded with the lease released."""
    recorded = False
    try:
        report = _run(app, started.job, started.attempt_id, started.owner, started.actor)
        recorded = True
        return report
    finally:
        if not recorded:  # recording releases the lease in its own transaction
            with app.db.transaction() as session:
                schedule.release(session, started.job.certificate.name, started.owner)


def attempt(app: App, name: str, *, actor: str | None = None, owner: str | None = None) -> AttemptReport:
    """Run one attempt now. Raises `NotFound`, or `Conflict` when another holder has the
    lease on the certificate; every failure of the issuer itself is a recorded attempt.
    `owner` is the lease holder's name: a renewal loop passes the one it leased with;
    by default each call is a holder of its own."""
    owner = owner or f"{app.worker_id}:{uuid.uuid4().hex[:8]}"
    actor = actor or f"controller:{owner}"
    with app.db.transaction() as session:  # claim, load and start: one transaction
        started = start(app, session, name, owner=owner, actor=actor)
    return run_started(app, started)


WAIT_POLL_S = 0.2


def new_holder(app: App) -> str:
    """A lease holder's name for one request (`hold_for=` of the certificate services)."""
    return f"{app.worker_id}:{uuid.uuid4().hex[:8]}"


def attempt_or_wait(app: App, name: str, *, actor: str, owner: str | None = None,
                    timeout_s: float = 600.0) -> AttemptReport:
    """Run one attempt now, or, when a renewal loop has just taken the certificate, wait
    for its attempt to end and report that one (`--wait`, `?wait=true`). `owner`: the
    holder that leased the certificate when the request made it due."""
    try:
        return attempt(app, name, actor=actor, owner=owner)
    except Conflict:
        pass
    deadline = monotonic_s() + timeout_s
    while monotonic_s() < deadline:
        time.sleep(WAIT_POLL_S)
        with app.db.transaction() as session:
            if not schedule.is_leased(session, name, app.clock.now()):
                return _last_report(session, name, app.clock.now())
    raise Conflict(f"certificate {name!r} is still being worked on by another worker after {timeout_s:.0f} s")


def _last_report(session: Session, name: str, now: dt.datetime) -> AttemptReport:
    cert = repo.get_certificate(session, name, now)
    last = repo.list_attempts(session, name, limit=1)
    if not last or last[0].outcome is None:
        raise Conflict(f"certificate {name!r} has no finished attempt to report")
    return AttemptReport(name, last[0].outcome, cert.status.revision, last[0].error, cert.status.failures)


def _run(app: App, job: _Job, attempt_id: int, owner: str, actor: str) -> AttemptReport:
    name, spec = job.certificate.name, job.certificate.spec
    key = job.key
    if key is None:
        try:
            key = key_backends.backend_for(app, spec).new_key(name, spec)
        except KeyBackendError as exc:  # a key that cannot be made is a failed attempt like any other
            no_output = Failed(str(exc))
            return _record_failure(app, job, attempt_id, IssuerFailed(f"key generation failed: {exc}"),
                                   no_output, _secrets(job), actor, owner)
        with app.db.transaction() as session:  # the key is durable before any CA sees its CSR
            attempts.store_pending_key(session, name, key, attempt_id=attempt_id, now=app.clock.now())

    secrets = _secrets(job)
    polling = job.deferral is not None
    call = ScriptCall(
        script_name=job.script.name, source=job.script.source, timeout_s=job.script.timeout_s,
        csr_pem=key.csr_pem, common_name=spec.subject.common_name, args=_args(job), secrets=secrets,
        context={
            "certificate_name": name, "profile_name": job.profile.name,
            "subject_alt_names": [str(s) for s in spec.subject_alt_names],
            "key_algorithm": str(spec.key), "previous_certificate": job.previous_pem,
        },
        profile=job.profile.name, concurrency=job.profile.sandbox.concurrency,
        allow_read=job.profile.sandbox.allow_read, allow_write=job.profile.sandbox.allow_write,
        operation=OPERATION_POLL if polling else OPERATION_REQUEST,
        cookie=job.deferral.cookie if job.deferral is not None else "", state=dict(job.state or {}),
    )
    try:
        result = app.runner.call(call)
    except Exception as exc:  # the runner itself broke: still a recorded, retryable attempt
        result = Failed(f"the script runner failed: {exc}")
    if isinstance(result, Pending):
        return _record_deferral(app, job, attempt_id, result, actor, owner)
    # a poll that never got the script's answer (timeout, crash) keeps the request: the CA
    # still holds it, and a fresh submission would be a second one
    keep_deferral = polling and isinstance(result, Failed) and result.host_lost
    try:
        issued = _checked(result, key, job, app.clock.now())
    except IssuerFailed as failure:
        return _record_failure(app, job, attempt_id, failure, result, secrets, actor, owner,
                               keep_deferral=keep_deferral)
    return _record_success(app, job, attempt_id, key, issued, result, actor, owner)


def _save_state(app: App, session: Session, job: _Job, result: ScriptResult, now: dt.datetime) -> str | None:
    """The call's changes to `context.state`, saved in the outcome's transaction."""
    if result.state_changes is None:
        return None
    return script_state.apply(session, job.profile.name, app.sealer, result.state_changes, now)


def _with_note(output: str | None, note: str | None) -> str | None:
    if note is None:
        return output or None
    return f"{output.rstrip()}\n--- certpilot ---\n{note}" if output else f"--- certpilot ---\n{note}"


def _record_deferral(app: App, job: _Job, attempt_id: int, result: Pending, actor: str, owner: str) -> AttemptReport:
    """The CA holds the request: keep its cookie (sealed), poll it later, release."""
    name = job.certificate.name
    now = app.clock.now()
    since = job.deferral.since if job.deferral is not None else now
    poll_at = next_poll_at(result.retry_after_s, now, deferred_since=since,
                           max_pending_days=job.profile.renewal.max_pending_days,
                           min_poll_s=app.settings.deferred_poll_min_s)
    # a poll's Pending without a cookie keeps the one the CA gave before
    cookie = result.cookie if result.cookie or job.deferral is None else None
    with app.db.transaction() as session:
        note = _save_state(app, session, job, result, now)
        deferral = deferrals.record(session, name, app.sealer, attempt_id=attempt_id, cookie=cookie, now=now,
                                    poll_at=poll_at, output=_with_note(result.output, note),
                                    started_at=job.started_at)
        if job.deferral is None:
            record_event(
                session, at=now, actor=actor, kind=EventKind.CERT_DEFERRED, object_type="certificate",
                object_name=name, details={"retry_after_s": result.retry_after_s, "next_poll_at": poll_at.isoformat(),
                                           "max_pending_days": job.profile.renewal.max_pending_days},
            )
        scheduling.reschedule(session, name, now)
        schedule.release(session, name, owner)
    return AttemptReport(name, Outcome.DEFERRED, job.certificate.status.revision, None,
                         job.certificate.status.failures, deferred_since=deferral.since, next_poll_at=poll_at)


def _checked(result: ScriptResult, key: repo.StoredKey, job: _Job, now: dt.datetime) -> IssuedCertificate:
    """The checked certificate of an `Issued` result; raises `IssuerFailed` for the others."""
    match result:
        case Issued(pem=pem):
            return check_issued(
                pem, expected_public_key_sha256=key.public_key_sha256,
                requested_names=job.certificate.spec.subject_alt_names, now=now,
            )
        case Pending():
            raise TypeError("a Pending result is recorded as a deferral, never checked")
        case Failed(timed_out=True):
            raise IssuerFailed(result.error, outcome=Outcome.TIMEOUT.value)
        case Failed(returned_other=True):
            raise IssuerFailed(result.error, outcome=Outcome.INVALID.value)
        case Failed():
            raise IssuerFailed(result.error)
    raise TypeError(f"not a script result: {result!r}")


def _record_success(
    app: App, job: _Job, attempt_id: int, key: repo.StoredKey, issued: IssuedCertificate,
    result: ScriptResult, actor: str, owner: str,
) -> AttemptReport:
    name = job.certificate.name
    now = app.clock.now()
    with app.db.transaction() as session:
        note = _save_state(app, session, job, result, now)
        number = attempts.finish_attempt_issued(
            session, name, attempt_id=attempt_id, key=key, leaf_pem=issued.leaf_pem,
            chain_pem=issued.chain_pem, facts=issued.facts, output=_with_note(result.output, note), now=now,
            started_at=job.started_at,
        )
        first = job.certificate.status.revision is None
        details: dict[str, object] = {"revision": number, "serial": issued.facts.serial,
                                      "not_after": issued.facts.not_after.isoformat()}
        if job.deferral is not None:  # the poll's outcome: the CA issued what it held
            details |= {"deferred_since": job.deferral.since.isoformat(), "polls": job.deferral.polls + 1}
        record_event(
            session, at=now, actor=actor,
            kind=EventKind.CERT_ISSUED if first else EventKind.CERT_RENEWED,
            object_type="certificate", object_name=name, details=details,
        )
        _ask_for_renewal_window(session, job, now)
        scheduling.reschedule(session, name, now)
        schedule.release(session, name, owner)
    return AttemptReport(name, Outcome.ISSUED, number, None, 0)


def _ask_for_renewal_window(session: Session, job: _Job, now: dt.datetime) -> None:
    """A new revision: its renewal window (RFC 9773) is asked for now where the script can."""
    check_at = now if defines_renewal_info(job.script.source) else None
    renewal_info.start_over(session, job.certificate.name, check_at=check_at)


def _record_failure(
    app: App, job: _Job, attempt_id: int, failure: IssuerFailed, result: ScriptResult,
    secrets: tuple[str, ...], actor: str, owner: str, *, keep_deferral: bool = False,
) -> AttemptReport:
    name = job.certificate.name
    now = app.clock.now()
    error = scrub(str(failure), secrets)
    outcome = Outcome(failure.outcome)
    failures = job.certificate.status.failures + 1
    retry_at = next_retry_at(failures, now=now, not_after=job.certificate.status.not_after,
                             random_fraction=app.random_fraction())
    with app.db.transaction() as session:
        note = _save_state(app, session, job, result, now)
        failures = attempts.finish_attempt_failed(
            session, name, attempt_id=attempt_id, outcome=outcome, error=error,
            output=_with_note(result.output, note), now=now, retry_at=retry_at, keep_deferral=keep_deferral,
            started_at=job.started_at,
        )
        first = job.certificate.status.revision is None
        details: dict[str, object] = {"outcome": outcome.value, "error": error, "failures": failures,
                                      "next_attempt_at": retry_at.isoformat()}
        if job.deferral is not None:  # the poll's outcome: the deferral ends (the next try submits
            # afresh), or, when the poll never got the script's answer, is polled again after the backoff
            details |= {"during": "poll", "deferred_since": job.deferral.since.isoformat(),
                        "deferral": "kept" if keep_deferral else "ended"}
        record_event(
            session, at=now, actor=actor,
            kind=EventKind.CERT_ISSUE_FAILED if first else EventKind.CERT_RENEW_FAILED,
            object_type="certificate", object_name=name, details=details,
        )
        scheduling.reschedule(session, name, now)
        schedule.release(session, name, owner)
    return AttemptReport(name, outcome, job.certificate.status.revision, error, failures)


def is_success(report: AttemptReport) -> bool:
    return report.outcome is Outcome.ISSUED


def is_deferred(report: AttemptReport) -> bool:
    """The CA accepted the request and will answer later (the loop polls it)."""
    return report.outcome is Outcome.DEFERRED



def give_up_deferral(app: App, session: Session, name: str, *, now: dt.datetime, actor: str) -> str:
    """Bookkeeping in the caller's transaction (the policy's GIVE_UP): the CA held the
    request past the profile's `max_pending_days`; record that as a failure, so the
    certificate backs off and then submits afresh. Returns the error recorded."""
    cert = repo.get_certificate(session, name, now)
    profile = profile_repo.get_profile(session, cert.spec.profile)
    since = cert.status.deferred_since
    days = profile.renewal.max_pending_days
    error = (f"the CA did not issue within {days} day(s) (max_pending_days) of accepting the request"
             + (f" on {since.isoformat()}" if since else ""))
    failures = cert.status.failures + 1
    retry_at = next_retry_at(failures, now=now, not_after=cert.status.not_after, random_fraction=app.random_fraction())
    failures = attempts.fail_deferral(session, name, error=error, now=now, retry_at=retry_at)
    record_event(
        session, at=now, actor=actor,
        kind=EventKind.CERT_ISSUE_FAILED if cert.status.revision is None else EventKind.CERT_RENEW_FAILED,
        object_type="certificate", object_name=name,
        details={"outcome": Outcome.FAILED.value, "error": error, "failures": failures, "during": "poll",
                 "deferred_since": since.isoformat() if since else None, "next_attempt_at": retry_at.isoformat()},
    )
    return error
