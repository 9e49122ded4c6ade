"""Scale-out (DESIGN §4): several `certpilot worker` processes share one PostgreSQL
and split the due certificates between them through leases (`FOR UPDATE SKIP
LOCKED`); no certificate is worked on twice.

PostgreSQL only: SQLite is the single-host default, not the scale-out setup.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable

import pytest

from certpilot.domain.model import KeySpec, Outcome, Phase
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import list_certificates
from certpilot.services.setup import bundled_local_ca_source
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.reconciler import add_local_ca_profile, all_attempts, held_leases, request, revision_counts

StartWorker = Callable[[str, dict[str, str]], WorkerProcess]

CERTIFICATES = 300
WORKERS = 3
PROFILE = "bulk"
REQUEST_THREADS = 8
THREADS_PER_WORKER = 4


@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_three_workers_issue_three_hundred_due_certificates_exactly_once(
    app: App, test_ca: LocalCA, start_worker: StartWorker
) -> None:
    add_local_ca_profile(app, test_ca, profile=PROFILE, script="local-ca", source=bundled_local_ca_source(),
                         timeout_s=30, validity_days="90")
    names = [f"bulk-{i:03d}" for i in range(CERTIFICATES)]
    key = KeySpec.parse("ec:p256")
    with ThreadPoolExecutor(max_workers=REQUEST_THREADS) as pool:  # requested and left pending: all due together
        list(pool.map(lambda name: request(app, name, profile=PROFILE, key=key), names))

    env = settings_env(app.settings, CERTPILOT_MAX_IN_FLIGHT=str(THREADS_PER_WORKER))
    workers = [start_worker(f"w{i}", env) for i in range(WORKERS)]

    def any_died() -> str | None:
        return next((reason for w in workers if (reason := w.died())), None)

    def all_issued() -> bool:
        counts = revision_counts(app)
        return len(counts) == CERTIFICATES and all(count >= 1 for count in counts.values())

    started = time.monotonic()
    wait_for(all_issued, timeout_s=90, interval_s=0.5, what=f"a revision for all {CERTIFICATES} certificates",
             alive=any_died)
    elapsed_s = time.monotonic() - started

    for worker in workers:
        worker.request_stop()
    for worker in workers:
        assert worker.wait(timeout_s=10) == 0, worker.log()[-4000:]

    counts = revision_counts(app)
    assert sorted(counts) == names
    assert {name: n for name, n in counts.items() if n != 1} == {}, "a certificate got more than one revision"

    attempts = all_attempts(app)
    per_certificate = collections.Counter(a.certificate for a in attempts)
    assert {name: n for name, n in per_certificate.items() if n != 1} == {}, "a certificate was attempted twice"
    assert len(attempts) == CERTIFICATES
    assert {a.outcome for a in attempts} == {Outcome.ISSUED.value}
    assert all(a.kind == "issue" and a.revision == 1 for a in attempts)

    by_worker = collections.Counter(a.worker for a in attempts)
    assert None not in by_worker
    assert len(by_worker) > 1, f"one worker did all the work in {elapsed_s:.1f} s: {dict(by_worker)}"

    assert {c.status.phase for c in list_certificates(app)} == {Phase.ISSUED}
    assert held_leases(app) == []
