"""The reconcile loop behind `certpilot serve` and `certpilot worker`.

Each pass leases the certificates whose `next_action_at` has come (rows other
workers hold are skipped), then reconciles each one on a thread of its own:
decide with the pure policy, act (issue, renew, warn, mark expired), record,
release. Between passes the loop sleeps until the earliest `next_action_at`,
at most `reconcile_interval_s`, and wakes early when `wake()` is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import EventKind
from certpilot.policy import Action, days_left
from certpilot.services import hsm, issuance
from certpilot.services.app import App
from certpilot.store import schedule
from certpilot.store.events import record_event
from certpilot.store.heartbeats import beat
from certpilot.store.wakeup import WakeListener

log = logging.getLogger("certpilot.reconciler")

CLAIM_LEASE_S = 300
ERROR_RETRY_S = 60
MAX_STEPS = 8  # bookkeeping actions (warn, mark expired) chain before the real one


class Reconciler:
    def __init__(self, app: App, *, batch_size: int | None = None) -> None:
        self.app = app
        self.owner = f"{app.worker_id}:loop-{uuid.uuid4().hex[:6]}"  # not shared with requests in this process
        self.actor = f"controller:{self.owner}"
        self.batch_size = batch_size or max(2, app.settings.workers * 2)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = ThreadPoolExecutor(max_workers=app.settings.workers, thread_name_prefix="reconcile")
        self.last_pass_at: dt.datetime | None = None
        self._started_at = app.clock.now()
        self.passes = 0

    # --- control -------------------------------------------------------------

    def wake(self) -> None:
        """Look for due work now (a certificate was created or a renewal asked for)."""
        self._wake.set()

    def stop(self) -> None:
        """Finish what is in hand, release the rest, and return from `run_forever`."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_forever(self) -> None:
        log.info("renewal loop started as %s", self.owner)
        self.app.add_wake_listener(self.wake)
        listener = None
        if WakeListener.is_supported(self.app.db.url):
            listener = WakeListener(self.app.db.url, self.wake)
            listener.start()
        try:
            while not self._stop.is_set():
                try:
                    handled = self.run_once()
                except Exception:  # the loop must never silently stop: log, wait, go on
                    log.exception("reconcile pass failed")
                    handled = 0
                if handled >= self.batch_size and not self._stop.is_set():
                    continue  # more may be due right now
                self._sleep()
        finally:
            if listener is not None:
                listener.stop()
            self._threads.shutdown(wait=True)
            self._release_all()
            log.info("renewal loop stopped")

    def _sleep(self) -> None:
        interval = self.app.settings.reconcile_interval_s
        now = self.app.clock.now()
        with self.app.db.transaction() as session:
            earliest = schedule.earliest_next_action(session, now)
        timeout = interval if earliest is None else min(interval, max(0.0, (earliest - now).total_seconds()))
        self._wake.wait(timeout=max(timeout, 0.05))
        self._wake.clear()

    def _release_all(self) -> None:
        try:
            with self.app.db.transaction() as session:
                schedule.release_all(session, self.owner)
        except Exception:
            log.exception("could not release leases of %s", self.owner)

    # --- one pass ------------------------------------------------------------

    def run_once(self) -> int:
        """One pass: lease what is due and reconcile it. Returns how many were leased."""
        now = self.app.clock.now()
        with self.app.db.transaction() as session:
            names = schedule.claim_due(
                session, owner=self.owner, now=now,
                lease_until=now + dt.timedelta(seconds=CLAIM_LEASE_S), limit=self.batch_size,
            )
        futures = [self._threads.submit(self._reconcile_leased, name) for name in names]
        wait(futures)
        try:
            hsm.retire_old_keys(self.app)
        except Exception:
            log.exception("retiring old HSM keys failed")
        self.last_pass_at = self.app.clock.now()
        self.passes += 1
        with self.app.db.transaction() as session:
            beat(session, self.owner, started_at=self._started_at, now=self.last_pass_at)
        return len(names)

    def _reconcile_leased(self, name: str) -> None:
        try:
            if self._stop.is_set():
                return  # released below; another worker (or the next start) takes it
            self.reconcile(name)
        except (Conflict, NotFound) as exc:
            log.info("skipped %s: %s", name, exc)
        except Exception:
            log.exception("reconciling %s failed; looking again in %d s", name, ERROR_RETRY_S)
            try:  # a certificate that breaks the loop must not be re-claimed at once, forever
                with self.app.db.transaction() as session:
                    schedule.postpone(session, name, self.app.clock.now() + dt.timedelta(seconds=ERROR_RETRY_S))
            except Exception:
                log.exception("could not postpone %s", name)
        finally:
            try:
                with self.app.db.transaction() as session:
                    schedule.release(session, name, self.owner)
            except NotFound:
                pass

    def reconcile(self, name: str) -> None:
        """Gather -> decide -> act -> record for one certificate, until nothing is due now."""
        for _ in range(MAX_STEPS):
            now = self.app.clock.now()
            with self.app.db.transaction() as session:
                decision = schedule.decide_for(session, name, now)
                if decision.action is Action.NOTHING:
                    schedule.reschedule_by_name(session, name, now)
                    return
                if decision.action is Action.WARN:
                    not_after = schedule.served_not_after(session, name)
                    assert not_after is not None
                    for day in decision.warn_days:
                        record_event(session, at=now, actor=self.actor, kind=EventKind.CERT_EXPIRING,
                                     object_type="certificate", object_name=name,
                                     details={"days_left": days_left(not_after, now), "warning_day": day,
                                              "not_after": not_after.isoformat()})
                    schedule.record_warnings(session, name, decision.warn_days, now)
                    log.warning("%s expires in %d day(s)", name, days_left(not_after, now))
                    continue
                if decision.action is Action.MARK_EXPIRED:
                    not_after = schedule.served_not_after(session, name)
                    record_event(session, at=now, actor=self.actor, kind=EventKind.CERT_EXPIRED,
                                 object_type="certificate", object_name=name,
                                 details={"not_after": not_after.isoformat() if not_after else None})
                    schedule.mark_expired(session, name, now)
                    log.error("%s has expired", name)
                    continue
            # ISSUE, RENEW (and POLL, which deferred issuance will add): one attempt
            report = issuance.attempt(self.app, name, actor=self.actor, owner=self.owner)
            if issuance.is_success(report):
                log.info("%s: revision %s issued", name, report.revision)
            else:
                log.warning("%s: attempt %s (%d failure(s) in a row): %s",
                            name, report.outcome.value, report.failures, report.error)
            return
