"""Several issuances on one token at once: two threads of one process (they share the
process's PKCS#11 session, under its lock), and two `certpilot worker` processes (each
with its own session on the same SoftHSM token directory). Every certificate is issued,
with its own key pair in the token.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from certpilot.domain.model import Outcome
from certpilot.keys import pkcs11_backend
from certpilot.services.app import App
from certpilot.services.issuance import AttemptReport, attempt
from certpilot.store.tables import LoopHeartbeatRow
from tests.integration.keys.hsm_support import (
    ACTOR,
    SoftHsm,
    object_count,
    request_hsm,
    served_certificate,
    served_key,
    spki,
    token_public_key,
)
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.reconciler import all_attempts


def assert_each_served_key_is_its_own_token_key(app: App, softhsm: SoftHsm, names: list[str]) -> None:
    ids = set()
    for name in names:
        key = served_key(app, name)
        assert spki(served_certificate(app, name).public_key()) == spki(token_public_key(softhsm.ref, key.token_id))
        ids.add(key.pkcs11_id)
    assert len(ids) == len(names)


def test_two_threads_issue_hsm_certificates_at_once(hsm_app: App, softhsm: SoftHsm) -> None:
    names = [f"t{i}" for i in range(4)]
    for i, name in enumerate(names):
        request_hsm(hsm_app, name, "rsa:2048" if i % 2 else "ec:p256")
    before = object_count(softhsm.ref)
    start = threading.Barrier(2)

    def issue_pair(pair: list[str]) -> list[AttemptReport]:
        start.wait(timeout=30)  # both threads go into key generation together
        return [attempt(hsm_app, name, actor=ACTOR) for name in pair]

    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = [r for batch in pool.map(issue_pair, [names[0::2], names[1::2]]) for r in batch]
    assert [(r.name, r.outcome, r.error) for r in reports if r.outcome is not Outcome.ISSUED] == []
    assert object_count(softhsm.ref) == before + 2 * len(names)
    assert_each_served_key_is_its_own_token_key(hsm_app, softhsm, names)
    assert list(pkcs11_backend._tokens) == [softhsm.ref.cache_key], "one shared session per token"


StartWorker = Callable[[str, dict[str, str]], WorkerProcess]


@pytest.fixture
def start_worker(tmp_path: Path) -> StartWorker:
    started: list[WorkerProcess] = []

    def start(name: str, env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess.start(name, env, tmp_path)
        started.append(worker)
        return worker

    yield start  # type: ignore[misc]
    for worker in started:
        worker.clean_up()


def has_finished_a_pass(app: App, worker: WorkerProcess) -> bool:
    """The worker's renewal loop wrote its heartbeat (owner "host:pid:…")."""
    with app.db.engine.connect() as conn:
        return any(f":{worker.pid}:" in owner for owner in conn.scalars(select(LoopHeartbeatRow.owner)))


@pytest.mark.slow
def test_two_worker_processes_issue_hsm_certificates_on_one_token(
    hsm_app: App, softhsm: SoftHsm, start_worker: StartWorker
) -> None:
    env = settings_env(hsm_app.settings, CERTPILOT_MAX_IN_FLIGHT="2", SOFTHSM2_CONF=str(softhsm.conf))
    workers = [start_worker(name, env) for name in ("a", "b")]

    def both_running() -> bool:
        for worker in workers:
            if reason := worker.died():
                raise AssertionError(reason)
        return all(has_finished_a_pass(hsm_app, w) for w in workers)

    wait_for(both_running, timeout_s=60, what="both workers finishing a pass")
    before = object_count(softhsm.ref)
    names = [f"w{i}" for i in range(6)]
    for name in names:
        request_hsm(hsm_app, name, "ec:p256")

    def all_issued() -> bool:
        for worker in workers:
            if reason := worker.died():
                raise AssertionError(reason)
        finished = [a for a in all_attempts(hsm_app) if a.finished_at is not None]
        failed = [(a.certificate, a.outcome, a.error) for a in finished if a.outcome != Outcome.ISSUED.value]
        assert failed == [], failed
        return len({a.certificate for a in finished}) == len(names)

    wait_for(all_issued, timeout_s=90, what=f"{len(names)} HSM certificates issued by the workers")
    for worker in workers:
        assert worker.terminate(timeout_s=15) == 0, worker.log()[-3000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]

    attempts = all_attempts(hsm_app)
    assert sorted(a.certificate for a in attempts) == names, "one attempt per certificate"
    assert object_count(softhsm.ref) == before + 2 * len(names)
    assert_each_served_key_is_its_own_token_key(hsm_app, softhsm, names)
    by_worker = {w.name: sum(f":{w.pid}:" in (a.worker or "") for a in attempts) for w in workers}
    assert all(by_worker.values()), f"one worker issued nothing, so the token was not shared: {by_worker}"
