"""`certpilot worker` as a real process (DESIGN §3 crash safety, §4 leases): it issues
and renews short-lived certificates on its own and stops cleanly on SIGTERM; a
worker killed with SIGKILL in the middle of an attempt is taken over by another
once its lease has run out; SIGTERM during an attempt lets the attempt finish.

Runs on SQLite and PostgreSQL. The test process reads the same database as the
workers, through the services and (for leases and attempts) plain queries.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from certpilot.domain.model import EventKind, Outcome, Phase, Revision
from certpilot.pki.local_ca import LocalCA
from certpilot.policy import renewal_time
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_revisions, request_renewal
from certpilot.services.issuance import attempt, is_success
from certpilot.services.profiles import get_profile
from certpilot.services.scripts import update_script
from certpilot.services.setup import bundled_local_ca_source
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.reconciler import (
    ACTOR,
    AttemptFact,
    add_local_ca_profile,
    all_attempts,
    events_of,
    held_leases,
    leases,
    real_now,
    request,
    stalling_local_ca_source,
)

pytestmark = pytest.mark.slow

StartWorker = Callable[[str, dict[str, str]], WorkerProcess]

SCRIPT = "local-ca"
PROFILE = "short"
STOP_WITHIN_S = 10
# The bundled script backdates not_before by 30 s: a 30-s certificate lives 60 s, is
# renewed at 60 % of that, 6 s after it was issued, and expires 24 s after that.
SHORT_VALIDITY_S = 30
SHORT_RENEW_BEFORE_PERCENT = 40


def revisions_oldest_first(app: App, name: str) -> list[Revision]:
    return sorted(list_revisions(app, name), key=lambda r: r.revision)


def test_worker_renews_short_lived_certificates_in_time_and_stops_cleanly_on_sigterm(
    app: App, test_ca: LocalCA, start_worker: StartWorker
) -> None:
    add_local_ca_profile(app, test_ca, profile=PROFILE, script=SCRIPT, source=bundled_local_ca_source(),
                         timeout_s=20, renew_before_percent=SHORT_RENEW_BEFORE_PERCENT,
                         validity_seconds=str(SHORT_VALIDITY_S))
    names = [f"short-{i}" for i in range(3)]
    for name in names:
        request(app, name, profile=PROFILE)

    worker = start_worker("w", settings_env(app.settings))

    def all_renewed() -> bool:
        return all(len(list_revisions(app, n)) >= 2 for n in names)

    wait_for(all_renewed, timeout_s=45, what="revision 2 of every certificate", alive=worker.died)

    renewal = get_profile(app, PROFILE).renewal
    for name in names:
        first, second = revisions_oldest_first(app, name)[:2]
        assert second.public_key_sha256 != first.public_key_sha256, f"{name}: the renewal reused the key"
        assert second.key_id != first.key_id and second.serial != first.serial
        assert second.issued_at < first.not_after, f"{name}: revision 1 expired before revision 2 was issued"
        # and not early: not before the renewal time the policy gives revision 1
        assert second.issued_at >= renewal_time(first.not_before, first.not_after, renewal)
        renewed = [e.details["revision"] for e in events_of(app, name, EventKind.CERT_RENEWED)]
        assert renewed[:1] == [2]

    worker.remember_script_workers()
    assert worker.script_workers, "the worker ran its scripts in script worker processes"
    started = time.monotonic()
    assert worker.terminate(timeout_s=STOP_WITHIN_S) == 0, worker.log()[-4000:]
    assert time.monotonic() - started < STOP_WITHIN_S
    assert held_leases(app) == [], "the stopped worker left leases held"
    assert [a for a in all_attempts(app) if a.finished_at is None] == [], "an attempt was left open"
    assert all(a.outcome == Outcome.ISSUED.value for a in all_attempts(app))
    for name in names:
        assert get_certificate(app, name).status.phase is Phase.ISSUED
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in worker.script_workers),
             timeout_s=5, what="the script worker processes ending with their worker")


STALL_S = 4  # the CA's one slow answer: longer than it takes to kill the worker
STALL_TIMEOUT_S = 5  # the script's timeout; the lease lasts this plus the lease margin
LEASE_MARGIN_S = 1


def test_worker_killed_mid_attempt_is_taken_over_when_its_lease_expires_and_sigterm_finishes_the_attempt(
    app: App, test_ca: LocalCA, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "shared-with-scripts" / "stall-marker"
    add_local_ca_profile(app, test_ca, profile=PROFILE, script=SCRIPT, source=bundled_local_ca_source(),
                         timeout_s=STALL_TIMEOUT_S, validity_days="90", stall_marker=str(marker))
    cert = "web1"
    request(app, cert, profile=PROFILE)
    assert is_success(attempt(app, cert, actor=ACTOR))  # revision 1, issued in this process
    (revision_1,) = list_revisions(app, cert)

    update_script(app, SCRIPT, stalling_local_ca_source(STALL_S), timeout_s=STALL_TIMEOUT_S, actor=ACTOR)
    request_renewal(app, cert, actor=ACTOR)
    env = settings_env(app.settings, CERTPILOT_LEASE_MARGIN_S=str(LEASE_MARGIN_S))

    worker_a = start_worker("a", env)

    def open_attempt() -> AttemptFact | None:
        running = [a for a in all_attempts(app) if a.finished_at is None]
        return running[0] if running and marker.exists() else None

    stale = wait_for(open_attempt, timeout_s=30, what="worker A's attempt with the script running",
                     alive=worker_a.died)
    (lease,) = leases(app)
    assert lease.owner == stale.worker and lease.expires_at is not None
    worker_a.kill()  # SIGKILL: no chance to release anything
    assert real_now() < lease.expires_at, "the test was too slow to kill A before its lease ran out"
    assert held_leases(app) == [lease]
    status = get_certificate(app, cert).status
    assert (status.phase, status.revision) == (Phase.RENEWING, 1)

    worker_b = start_worker("b", env)
    served_while_waiting: list[tuple[dt.datetime, int | None]] = []

    def renewed() -> bool:
        status = get_certificate(app, cert).status
        served_while_waiting.append((real_now(), status.revision))
        return status.revision == 2

    wait_for(renewed, timeout_s=40, what="worker B renewing after A's lease expired", alive=worker_b.died)

    # B worked only once A's lease had run out; revision 1 was served until then
    attempts = all_attempts(app)
    assert [(a.kind, a.outcome) for a in attempts] == [
        ("issue", "issued"), ("renew", "failed"), ("renew", "issued")]
    _, closed, taken_over = attempts
    assert closed.id == stale.id and closed.worker == stale.worker
    assert closed.finished_at is not None and "stopped" in (closed.error or "")
    assert taken_over.worker not in (None, stale.worker)
    assert taken_over.started_at >= lease.expires_at, "B started before A's lease expired"
    assert {revision for at, revision in served_while_waiting if at < lease.expires_at} <= {1}

    # exactly one new revision, with the key made (and stored) before A called the CA
    revisions = revisions_oldest_first(app, cert)
    assert [r.revision for r in revisions] == [1, 2]
    assert revisions[0] == revision_1
    assert revisions[1].key_id == stale.key_id == taken_over.key_id
    assert len({r.key_id for r in revisions}) == len({r.serial for r in revisions}) == 2
    assert revisions[1].public_key_sha256 != revision_1.public_key_sha256
    assert taken_over.revision == 2
    assert [e.details["revision"] for e in events_of(app, cert, EventKind.CERT_RENEWED)] == [2]
    status = get_certificate(app, cert).status
    assert (status.phase, status.failures, status.last_error) == (Phase.ISSUED, 0, None)


    # SIGTERM in the middle of B's next (slow) attempt: B finishes it, then stops
    marker.unlink()
    request_renewal(app, cert, actor=ACTOR)
    in_flight = wait_for(open_attempt, timeout_s=15, what="worker B's second attempt with the script running",
                         alive=worker_b.died)
    assert in_flight.worker == taken_over.worker
    assert worker_b.terminate(timeout_s=STALL_S + STOP_WITHIN_S) == 0, worker_b.log()[-4000:]
    finished = [a for a in all_attempts(app) if a.id == in_flight.id]
    assert [(a.outcome, a.revision) for a in finished] == [("issued", 3)], "the attempt in hand was not finished"
    assert [a for a in all_attempts(app) if a.finished_at is None] == []
    assert get_certificate(app, cert).status.revision == 3
    assert held_leases(app) == []
