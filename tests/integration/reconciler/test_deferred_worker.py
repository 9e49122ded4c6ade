"""Deferred issuance across `certpilot worker` processes, on SQLite and PostgreSQL: a
worker submits to a CA that queues the request and polls it; it is killed with SIGKILL
while the request waits for approval; another worker started afterwards polls the same
request with the same cookie and certifies the key made for it. The CA sees exactly one
submission.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certpilot.domain.model import EventKind, Outcome, Phase
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_revisions
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.queued_ca import approve, polls, queued_ca_source, submissions
from tests.support.reconciler import add_local_ca_profile, all_attempts, events_of, held_leases, request
from tests.support.script_access import scripts_directory

pytestmark = pytest.mark.slow

StartWorker = Callable[[str, dict[str, str]], WorkerProcess]


@pytest.fixture
def queue() -> Iterator[Path]:
    with scripts_directory() as shared:
        directory = shared / "queue"  # granted through its parent (a profile value's directory)
        directory.mkdir(mode=0o1777)
        os.chmod(directory, 0o1777)
        yield directory


def test_a_deferred_request_survives_sigkill_of_its_worker_and_the_ca_sees_one_submission(
    app: App, test_ca: LocalCA, start_worker: StartWorker, queue: Path
) -> None:
    add_local_ca_profile(app, test_ca, profile="approvals", script="queued-ca", source=queued_ca_source(),
                         timeout_s=5, queue_dir=str(queue), retry_after_s="1")
    request(app, "web1", profile="approvals")
    # polls every second (the CA's retry_after_s, with the floor lowered for the test)
    env = settings_env(app.settings, CERTPILOT_DEFERRED_POLL_MIN_S="1", CERTPILOT_LEASE_MARGIN_S="1")

    worker_a = start_worker("a", env)
    wait_for(lambda: len(polls(queue)) >= 2, timeout_s=60, what="worker A submitting and polling twice",
             alive=worker_a.died)
    worker_a.kill()  # SIGKILL, perhaps in the middle of a poll

    (csr_file,) = submissions(queue)
    cookie = csr_file.stem
    status = get_certificate(app, "web1").status
    assert status.phase is Phase.DEFERRED and status.deferred_since is not None
    assert list_revisions(app, "web1") == []
    approve(queue, cookie)

    worker_b = start_worker("b", env)
    wait_for(lambda: list_revisions(app, "web1"), timeout_s=60, what="worker B issuing the approved request",
             alive=worker_b.died)

    assert submissions(queue) == [csr_file], "the CA saw exactly one submission"
    assert set(polls(queue)) == {cookie}, "every poll named the one request"
    (revision,) = list_revisions(app, "web1")
    submitted = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert revision.public_key_sha256 == public_key_sha256(submitted.public_key())
    attempts = all_attempts(app)
    assert attempts[0].kind == "issue" and attempts[0].outcome == Outcome.DEFERRED.value
    assert all(a.kind == "poll" for a in attempts[1:])
    assert attempts[-1].outcome == Outcome.ISSUED.value and attempts[-1].revision == 1
    assert {a.key_id for a in attempts} == {revision.key_id}
    workers = {a.worker.split(":loop-")[0] for a in attempts if a.worker}
    assert len(workers) == 2, "both workers took part"
    assert len(events_of(app, "web1", EventKind.CERT_DEFERRED)) == 1
    (issued,) = events_of(app, "web1", EventKind.CERT_ISSUED)
    assert issued.details["polls"] >= 3
    status = get_certificate(app, "web1").status
    assert status.phase is Phase.ISSUED and status.deferred_since is None

    assert worker_b.terminate(timeout_s=10) == 0, worker_b.log()[-4000:]
    assert held_leases(app) == []
