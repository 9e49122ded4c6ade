"""A renewal loop in another process wakes at once when work is made due, also on
SQLite (wake-up sockets beside the database file), not at its next timer pass."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from certpilot.domain.model import Phase
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.tables import LoopHeartbeatRow
from certpilot.store.wakeup import sqlite_wake_dir
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.reconciler import add_local_ca_profile, request

pytestmark = pytest.mark.slow

StartWorker = Callable[[str, dict[str, str]], WorkerProcess]
INTERVAL_S = 120  # the loop's timer: far longer than the test waits
PICKED_UP_WITHIN_S = 10


def test_a_worker_with_a_long_interval_picks_up_a_new_request_at_once(
    app: App, test_ca: LocalCA, start_worker: StartWorker
) -> None:
    add_local_ca_profile(app, test_ca, profile="corp", script="local-ca", source=bundled_local_ca_source(),
                         validity_days="90")
    worker = start_worker("w", settings_env(app.settings, CERTPILOT_RECONCILE_INTERVAL_S=str(INTERVAL_S)))

    def has_passed() -> bool:
        with app.db.engine.connect() as conn:
            return any(f":{worker.pid}:" in o for o in conn.scalars(select(LoopHeartbeatRow.owner)))

    wait_for(has_passed, timeout_s=30, what="the worker's first pass", alive=worker.died)
    time.sleep(0.5)  # it is asleep now, for up to INTERVAL_S

    asked = time.monotonic()
    request(app, "web1", profile="corp")  # from this process, as the CLI would
    wait_for(lambda: get_certificate(app, "web1").status.phase is Phase.ISSUED,
             timeout_s=PICKED_UP_WITHIN_S, what="web1 issued by the sleeping worker", alive=worker.died)
    assert time.monotonic() - asked < PICKED_UP_WITHIN_S

    if sqlite_wake_dir(app.db.url) is not None:
        assert worker.terminate(timeout_s=10) == 0
        assert list(sqlite_wake_dir(app.db.url).glob("*.sock")) == [], "the worker left its wake-up socket"
