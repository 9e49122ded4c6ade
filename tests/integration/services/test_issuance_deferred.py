"""Deferred issuance through the real script runner (sandboxed hosts), on SQLite and
PostgreSQL: a CA that queues each CSR for an approver answers `Pending`; the
certificate waits in phase `deferred` with its cookie sealed, polls with the same
cookie and key, and is issued once approved; a rejection fails it (backoff, then a
fresh submission); a manual renewal abandons the request; `max_pending_days` ends
a deferral as failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from certpilot.config import Settings
from certpilot.domain.model import EventKind, Outcome, Phase, ProfileParam, make_subject
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import (
    certificate_events,
    get_certificate,
    list_attempts,
    list_revisions,
    request_certificate,
    request_renewal,
)
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.views import certificate_view
from certpilot.store.database import create_db_engine, upgrade
from certpilot.store.tables import CertificateStatusRow
from tests.support.queued_ca import approve, polls, queued_ca_source, reject, submissions
from tests.support.script_access import scripts_directory

ACTOR = "test:deferred"


class StepClock:
    def __init__(self, start: dt.datetime) -> None:
        self.instant = start

    def now(self) -> dt.datetime:
        return self.instant


@pytest.fixture
def queue() -> Iterator[Path]:
    with scripts_directory() as directory:
        yield directory


@pytest.fixture
def clock() -> StepClock:
    return StepClock(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))


@pytest.fixture
def deferring_app(settings: Settings, test_ca: LocalCA, queue: Path, clock: StepClock) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings, clock=clock, random_fraction=lambda: 0.5) as app:
        add_script(app, "queued-ca", queued_ca_source(), timeout_s=20, actor=ACTOR)
        create_profile(app, "approvals", script="queued-ca", actor=ACTOR, allow_write=[str(queue)],
                       max_pending_days=2, params=[
                           ProfileParam("ca_cert", test_ca.cert_path.read_text()),
                           ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
                           ProfileParam("ca_key_password", test_ca.password, sensitive=True),
                           ProfileParam("queue_dir", str(queue)),
                           ProfileParam("retry_after_s", "600"),
                       ])
        yield app


def _request(app: App, name: str) -> None:
    request_certificate(app, name, profile="approvals", subject=make_subject(f"{name}.example.test"), actor=ACTOR)


def _events(app: App, name: str, kind: EventKind) -> list[dict[str, object]]:
    return [dict(e.details) for e in reversed(certificate_events(app, name)) if e.kind == kind.value]


def _sealed_cookie(app: App, name: str) -> bytes | None:
    with app.db.read() as session:
        return session.scalar(select(CertificateStatusRow.deferred_cookie_sealed)
                              .where(CertificateStatusRow.certificate.has(name=name)))


def test_a_queued_request_is_deferred_polled_with_its_cookie_and_issued_with_its_key(
    deferring_app: App, queue: Path, clock: StepClock
) -> None:
    app = deferring_app
    _request(app, "web1")
    submitted_at = clock.now()

    report = issuance.attempt(app, "web1", actor=ACTOR)

    assert report.outcome is Outcome.DEFERRED and report.error is None
    (csr_file,) = submissions(queue)
    cookie = csr_file.stem
    status = get_certificate(app, "web1").status
    assert status.phase is Phase.DEFERRED
    assert status.deferred_since == submitted_at
    assert status.next_poll_at == submitted_at + dt.timedelta(seconds=600)  # the CA's wait, within bounds
    assert status.next_action_at == status.next_poll_at
    assert status.deferred_polls == 0
    view = certificate_view(get_certificate(app, "web1"))["status"]
    assert view["phase"] == "deferred" and view["awaiting_ca"]["since"] and view["awaiting_ca"]["next_poll_at"]
    (deferred,) = _events(app, "web1", EventKind.CERT_DEFERRED)
    assert deferred["retry_after_s"] == 600
    sealed = _sealed_cookie(app, "web1")
    assert sealed and cookie.encode() not in sealed, "the cookie is stored sealed"

    clock.instant += dt.timedelta(minutes=10)
    assert issuance.attempt(app, "web1", actor=ACTOR).outcome is Outcome.DEFERRED  # not approved yet
    assert polls(queue) == [cookie]
    status = get_certificate(app, "web1").status
    assert (status.phase, status.deferred_since, status.deferred_polls) == (Phase.DEFERRED, submitted_at, 1)

    approve(queue, cookie)
    clock.instant += dt.timedelta(minutes=10)
    report = issuance.attempt(app, "web1", actor=ACTOR)

    assert issuance.is_success(report), report.error
    assert polls(queue) == [cookie, cookie]
    assert len(submissions(queue)) == 1, "the CA saw exactly one submission"
    (revision,) = list_revisions(app, "web1")
    submitted = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert revision.public_key_sha256 == public_key_sha256(submitted.public_key()), \
        "the key made for the request is the one certified"
    status = get_certificate(app, "web1").status
    assert status.phase is Phase.ISSUED and status.deferred_since is None and status.next_poll_at is None
    assert _sealed_cookie(app, "web1") is None
    (issued,) = _events(app, "web1", EventKind.CERT_ISSUED)
    assert issued["polls"] == 2 and issued["deferred_since"] == submitted_at.isoformat()
    kinds = [(a.kind, a.outcome) for a in reversed(list_attempts(app, "web1"))]
    assert kinds == [("issue", Outcome.DEFERRED), ("poll", Outcome.DEFERRED), ("poll", Outcome.ISSUED)]


def test_a_rejection_during_a_poll_fails_backs_off_and_the_next_try_submits_afresh(
    deferring_app: App, queue: Path, clock: StepClock
) -> None:
    app = deferring_app
    _request(app, "web2")
    issuance.attempt(app, "web2", actor=ACTOR)
    (first,) = submissions(queue)
    reject(queue, first.stem)

    report = issuance.attempt(app, "web2", actor=ACTOR)

    assert report.outcome is Outcome.FAILED
    assert "the approver rejected request " + first.stem in (report.error or "")
    status = get_certificate(app, "web2").status
    assert status.phase is Phase.FAILED and status.failures == 1 and status.deferred_since is None
    assert status.next_action_at is not None and status.next_action_at > clock.now(), "backing off"
    (failed,) = _events(app, "web2", EventKind.CERT_ISSUE_FAILED)
    assert failed["during"] == "poll"

    clock.instant = status.next_action_at
    assert issuance.attempt(app, "web2", actor=ACTOR).outcome is Outcome.DEFERRED
    assert len(submissions(queue)) == 2, "a fresh submission after the failure"
    assert polls(queue) == [first.stem]


def test_a_manual_renewal_abandons_the_deferred_request_and_submits_afresh(
    deferring_app: App, queue: Path
) -> None:
    app = deferring_app
    _request(app, "web3")
    issuance.attempt(app, "web3", actor=ACTOR)
    request_renewal(app, "web3", actor=ACTOR)

    assert issuance.attempt(app, "web3", actor=ACTOR).outcome is Outcome.DEFERRED
    assert len(submissions(queue)) == 2 and polls(queue) == []
    assert len(_events(app, "web3", EventKind.CERT_DEFERRED)) == 2


def test_a_deferral_past_max_pending_days_ends_as_failed(deferring_app: App, queue: Path, clock: StepClock) -> None:
    app = deferring_app
    _request(app, "web4")
    issuance.attempt(app, "web4", actor=ACTOR)
    since = get_certificate(app, "web4").status.deferred_since
    assert since is not None

    clock.instant = since + dt.timedelta(days=2)  # the profile's max_pending_days
    reconciler = Reconciler(app)
    try:
        reconciler.run_once()
    finally:
        reconciler.stop()

    status = get_certificate(app, "web4").status
    assert status.phase is Phase.FAILED and status.deferred_since is None and status.failures == 1
    assert "did not issue within 2 day(s)" in (status.last_error or "")
    assert status.next_action_at is not None and status.next_action_at > clock.now()
    assert polls(queue) == [], "given up without another poll"
    (failed,) = _events(app, "web4", EventKind.CERT_ISSUE_FAILED)
    assert failed["during"] == "poll"


def test_pending_from_a_script_without_certificate_poll_fails_clearly(
    deferring_app: App, queue: Path
) -> None:
    app = deferring_app
    add_script(app, "no-poll", "from certpilot.issuer import Pending\n\n"
               "def certificate_request(csr, common_name, args_dict):\n    raise Pending(60, 'x')\n",
               actor=ACTOR)
    create_profile(app, "no-poll", script="no-poll", actor=ACTOR)
    request_certificate(app, "np", profile="no-poll", subject=make_subject("np.example.test"), actor=ACTOR)

    report = issuance.attempt(app, "np", actor=ACTOR)

    assert report.outcome is Outcome.FAILED
    assert "defines no certificate_poll" in (report.error or "")
    assert get_certificate(app, "np").status.deferred_since is None


def test_a_poll_that_never_answers_keeps_the_request_and_polls_it_again(
    deferring_app: App, queue: Path, clock: StepClock, test_ca: LocalCA
) -> None:
    app = deferring_app
    add_script(app, "queued-ca-short", queued_ca_source(), timeout_s=2, actor=ACTOR)
    create_profile(app, "short-polls", script="queued-ca-short", actor=ACTOR, allow_write=[str(queue)], params=[
        ProfileParam("ca_cert", test_ca.cert_path.read_text()),
        ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", test_ca.password, sensitive=True),
        ProfileParam("queue_dir", str(queue)),
    ])
    request_certificate(app, "web5", profile="short-polls", subject=make_subject("web5.example.test"), actor=ACTOR)
    issuance.attempt(app, "web5", actor=ACTOR)
    (csr_file,) = submissions(queue)
    (queue / "hang").touch()

    report = issuance.attempt(app, "web5", actor=ACTOR)  # killed at its 2-s timeout

    assert report.outcome is Outcome.TIMEOUT
    status = get_certificate(app, "web5").status
    assert status.phase is Phase.DEFERRED and status.deferred_since is not None, "the request is kept"
    assert status.failures == 1 and status.next_poll_at == status.next_action_at
    assert status.next_poll_at is not None and status.next_poll_at > clock.now(), "polled again after a backoff"
    (failed,) = _events(app, "web5", EventKind.CERT_ISSUE_FAILED)
    assert failed["deferral"] == "kept"

    (queue / "hang").unlink()
    approve(queue, csr_file.stem)
    clock.instant = status.next_poll_at
    assert issuance.is_success(issuance.attempt(app, "web5", actor=ACTOR))
    assert submissions(queue) == [csr_file], "still one submission"
    assert polls(queue) == [csr_file.stem, csr_file.stem]
