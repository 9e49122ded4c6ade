"""Notifications delivered by real `certpilot worker` processes sharing one database:
every notification reaches the webhook exactly once however many workers lease the
outbox, and a receiver that was down gets what was queued once it is back. The
failures come from a CA script that always fails (its message quoting a secret)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from certpilot.domain.model import EventKind, NotifySettings
from certpilot.pki.local_ca import LocalCA
from certpilot.policy.notification import is_notified, retry_delay
from certpilot.services.app import App
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.store.tables import EventRow, NotificationRow
from tests.support.processes import WorkerProcess, settings_env, wait_for
from tests.support.receivers import Webhook
from tests.support.reconciler import ACTOR, local_ca_params, request

StartWorker = Callable[[str, dict[str, str]], WorkerProcess]

SECRET_QUOTING_CA = '''
def certificate_request(csr, common_name, args_dict):
    raise RuntimeError("CA unavailable: 503 (password " + args_dict["ca_key_password"] + ")")
'''


def notifiable_events(app: App) -> Counter[str]:
    """Certificate -> events that must be notified, as recorded."""
    with app.db.read() as session:
        rows = session.execute(select(EventRow.object_name, EventRow.kind, EventRow.details)
                               .where(EventRow.object_type == "certificate"))
        return Counter(name for name, kind, details in rows if is_notified(kind, details))


def bring_retries_forward(app: App, failed_after: dt.datetime) -> None:
    """Every delivery that failed after `failed_after` is due again at its backoff
    (`retry_delay`) after that failure; then make it due now: what waiting out the
    backoff would do, without the wait."""
    undelivered_retries = (NotificationRow.delivered_at.is_(None), NotificationRow.dropped_at.is_(None),
                           NotificationRow.attempts >= 1)
    now = dt.datetime.now(dt.timezone.utc)
    slack = dt.timedelta(seconds=1)
    with app.db.engine.begin() as conn:
        rows = conn.execute(select(NotificationRow.id, NotificationRow.next_attempt_at, NotificationRow.attempts)
                            .where(*undelivered_retries)).all()
        assert rows, "no failed delivery is waiting for a retry"
        for row_id, due, attempts in rows:
            delay = retry_delay(attempts)
            assert failed_after + delay - slack <= due <= now + delay + slack, (row_id, due, attempts)
        conn.execute(update(NotificationRow).where(*undelivered_retries).values(next_attempt_at=now))


def outbox(app: App) -> list[tuple[int, object, int]]:
    with app.db.read() as session:
        return list(session.execute(select(NotificationRow.event_id, NotificationRow.delivered_at,
                                           NotificationRow.attempts)))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql", "sqlite"], indirect=True)
def test_three_workers_deliver_each_notification_once_and_a_returning_receiver_gets_the_queue(
    app: App, test_ca: LocalCA, start_worker: StartWorker
) -> None:
    receiver = Webhook().start()
    try:
        add_script(app, "failing", SECRET_QUOTING_CA, timeout_s=30, actor=ACTOR)
        create_profile(app, "corp", script="failing", params=local_ca_params(test_ca), actor=ACTOR,
                       notify=NotifySettings(url=receiver.url))
        names = [f"web{i:02d}" for i in range(24)]
        for name in names:
            request(app, name, profile="corp")
        workers = [start_worker(f"w{i}", settings_env(app.settings, CERTPILOT_MAX_IN_FLIGHT="4")) for i in range(3)]

        def died() -> str | None:
            return next((reason for w in workers if (reason := w.died())), None)

        wait_for(lambda: len(receiver.bodies) >= len(names), timeout_s=120, interval_s=0.5,
                 what="a notification for each failed certificate", alive=died)
        receiver.stop()  # down: what falls due now is queued
        stopped_at = dt.datetime.now(dt.timezone.utc)
        later = [f"late{i}" for i in range(4)]
        for name in later:
            request(app, name, profile="corp")
        wait_for(lambda: sum(1 for _, delivered, attempts in outbox(app) if delivered is None and attempts >= 1)
                 >= len(later), timeout_s=120, interval_s=0.5, what="failed deliveries to the stopped receiver",
                 alive=died)
        receiver.start()  # back on the same port: the retries reach it
        bring_retries_forward(app, stopped_at)
        wait_for(lambda: len(receiver.bodies) >= len(names) + len(later), timeout_s=120, interval_s=0.5,
                 what="the queued notifications after the receiver came back", alive=died)
        time.sleep(2)  # any duplicate would arrive now
        for worker in workers:
            worker.request_stop()
        for worker in workers:
            assert worker.wait(timeout_s=30) == 0, worker.log()[-4000:]

        received = Counter(m["certificate"] for m in receiver.messages())
        expected = notifiable_events(app)
        assert set(received) == set(names + later)
        undelivered = {event for event, delivered, _ in outbox(app) if delivered is None}
        assert sum(received.values()) + len(undelivered) == sum(expected.values())
        assert all(received[n] <= expected[n] for n in received), "never more than one delivery per event"
        assert len(receiver.bodies) == len({b for b in receiver.bodies}), "no body delivered twice"
        for body in receiver.bodies:
            assert test_ca.password.encode() not in body
            assert receiver.path.rsplit("/", 1)[-1].encode() not in body
        assert {m["event"] for m in receiver.messages()} == {EventKind.CERT_ISSUE_FAILED.value}
    finally:
        receiver.stop()
