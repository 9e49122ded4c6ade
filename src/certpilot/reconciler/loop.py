"""The reconcile loop behind `certpilot serve` and `certpilot worker`.

The loop keeps up to `max_in_flight` certificates in hand, each reconciled on a
thread of its own: decide with the pure policy, act (issue, renew, warn, mark
expired), record, release. Whenever there is room it leases more of those whose
`next_action_at` has come (rows other workers hold are skipped), never more of
one profile than that profile's free concurrency, so that a slow CA fills only
its own slots and the others keep flowing. With nothing to take it sleeps until
the earliest `next_action_at`, at most `reconcile_interval_s`, and wakes early
when `wake()` is called or a certificate in hand is done.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sqlalchemy.orm import Session

from certpilot.clock import monotonic_s
from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import EventKind, Outcome
from certpilot.policy import Action, Decision, days_left
from certpilot.services import deployment, hsm, issuance, notifications, renewal_info, scheduling
from certpilot.services.app import App
from certpilot.store import schedule
from certpilot.store.events import record_event
from certpilot.store.heartbeats import beat
from certpilot.store.wakeup import SqliteWakeListener, WakeListener, sqlite_wake_dir

log = logging.getLogger("certpilot.reconciler")

CLAIM_LEASE_S = 300
ERROR_RETRY_S = 60
MAX_STEPS = 8  # bookkeeping actions (warn, mark expired) chain before the real one
HOUSEKEEPING_EVERY_S = 1.0  # heartbeat and HSM key retirement, at most this often


class Reconciler:
    def __init__(self, app: App, *, batch_size: int | None = None) -> None:
        self.app = app
        self.owner = f"{app.worker_id}:loop-{uuid.uuid4().hex[:6]}"  # not shared with requests in this process
        self.actor = f"controller:{self.owner}"
        self.capacity = app.settings.max_in_flight
        self.batch_size = batch_size or self.capacity
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="reconcile")
        self._in_hand: Counter[str] = Counter()  # profile -> certificates in hand
        self._in_hand_lock = threading.Lock()
        self.last_pass_at: dt.datetime | None = None
        self._housekept_at = 0.0
        # one handler per bookkeeping Action; ISSUE, RENEW and POLL are attempts (`_attempt`)
        self._bookkeeping_handlers: dict[Action, Callable[[Session, str, Decision, dt.datetime], None]] = {
            Action.NOTHING: self._nothing, Action.WARN: self._warn, Action.MARK_EXPIRED: self._mark_expired,
            Action.GIVE_UP: self._give_up,
        }
        # actions that run files, commands or scripts: outside any transaction, lease held
        self._unlocked_handlers: dict[Action, Callable[[str], None]] = {
            Action.DEPLOY: self._deploy, Action.CHECK_RENEWAL_INFO: self._check_renewal_info,
        }
        self._started_at = app.clock.now()
        self._notifications = notifications.Dispatcher(app, self.owner)  # the outbox, in a thread of its own
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
        log.info("renewal loop started as %s (up to %d certificates in hand)", self.owner, self.capacity)
        self.app.add_wake_listener(self.wake)
        listener: WakeListener | SqliteWakeListener | None = None
        if WakeListener.is_supported(self.app.db.url):
            listener = WakeListener(self.app.db.url, self.wake)
        elif sqlite_wake_dir(self.app.db.url) is not None:
            listener = SqliteWakeListener(self.app.db.url, self.wake)
        if listener is not None:
            listener.start()
        try:
            while not self._stop.is_set():
                try:
                    free, taken = self._take_more()
                except Exception:  # the loop must never silently stop: log, wait, go on
                    log.exception("reconcile pass failed")
                    free, taken = 0, 0
                self._housekeeping()
                if free and taken >= free and not self._stop.is_set():
                    continue  # more may be due right now
                self._sleep()
        finally:
            if listener is not None:
                listener.stop()
            self._threads.shutdown(wait=True)
            self._notifications.wait()
            self._release_all()
            log.info("renewal loop stopped")

    def in_hand(self) -> int:
        with self._in_hand_lock:
            return sum(self._in_hand.values())

    def _take_more(self) -> tuple[int, int]:
        """Lease what is due, as far as there is room, and start it. Returns (room, taken)."""
        with self._in_hand_lock:
            in_hand = Counter(self._in_hand)
        free = min(self.batch_size, self.capacity - sum(in_hand.values()))
        if free <= 0:
            return 0, 0
        claimed = self._claim(free, in_hand)
        for item in claimed:
            with self._in_hand_lock:
                self._in_hand[item.profile] += 1
            self._threads.submit(self._reconcile_leased, item.name).add_done_callback(
                lambda _f, profile=item.profile: self._done(profile))
        return free, len(claimed)

    def _done(self, profile: str) -> None:
        with self._in_hand_lock:
            self._in_hand[profile] -= 1
            if self._in_hand[profile] <= 0:
                del self._in_hand[profile]
        self._wake.set()  # room again: look for more

    def _claim(self, limit: int, in_hand: Counter[str]) -> list[schedule.Claimed]:
        now = self.app.clock.now()
        with self.app.db.transaction() as session:
            room = {name: concurrency - in_hand.get(name, 0)
                    for name, concurrency in schedule.profile_concurrency(session).items()}
            return schedule.claim_due(session, owner=self.owner, now=now,
                                      lease_until=now + dt.timedelta(seconds=CLAIM_LEASE_S), limit=limit, room=room)

    def _housekeeping(self, force: bool = False) -> None:
        if not force and monotonic_s() - self._housekept_at < HOUSEKEEPING_EVERY_S:
            return
        self._housekept_at = monotonic_s()
        self._notifications.poke()
        try:
            hsm.retire_old_keys(self.app)
        except Exception:
            log.exception("retiring old HSM keys failed")
        self.last_pass_at = self.app.clock.now()
        self.passes += 1
        try:
            with self.app.db.transaction() as session:
                beat(session, self.owner, started_at=self._started_at, now=self.last_pass_at)
        except Exception:
            log.exception("could not record the loop's heartbeat")

    def _sleep(self) -> None:
        interval = self.app.settings.reconcile_interval_s
        now = self.app.clock.now()
        if self.in_hand() >= self.capacity:
            earliest = None  # nothing could be taken anyway: a finished certificate wakes us
        else:
            with self.app.db.read() as session:
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
        """One pass that waits for what it took: lease what is due (as far as there is
        room) and reconcile it. Returns how many were leased."""
        claimed = self._claim(self.batch_size, Counter())
        futures: list[Future[None]] = [self._threads.submit(self._reconcile_leased, c.name) for c in claimed]
        wait(futures)
        self._housekeeping(force=True)
        self._notifications.wait()  # the pass's notifications delivered (or retried later) too
        return len(claimed)

    def _reconcile_leased(self, name: str) -> None:
        released = False
        try:
            if self._stop.is_set():
                return  # released below; another worker (or the next start) takes it
            released = self.reconcile(name)
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
                if not released:
                    with self.app.db.transaction() as session:
                        schedule.release(session, name, self.owner)
            except NotFound:
                pass

    def reconcile(self, name: str) -> bool:
        """Gather -> decide -> act -> record for one certificate, until nothing is due now.
        Bookkeeping actions (warn, mark expired) are recorded with a fresh decision in the
        same transaction; an issuance or renewal is one attempt, begun in the transaction
        that decided it, and ends the call. Returns True when the loop's lease was released
        with the last change (an attempt's outcome, or the next action time)."""
        for _ in range(MAX_STEPS):
            now = self.app.clock.now()
            with self.app.db.transaction() as session:
                decision = scheduling.decide_now(session, name, now)
                log.debug("%s: %s (%s)", name, decision.action.value, decision.reason.value)
                handler = self._bookkeeping_handlers.get(decision.action)
                if decision.action in self._unlocked_handlers:
                    started = None
                elif handler is None:  # ISSUE, RENEW, POLL: an attempt
                    started = issuance.start(self.app, session, name, owner=self.owner, actor=self.actor)
                else:
                    handler(session, name, decision, now)
                    scheduling.reschedule(session, name, now)
                    if decision.action is Action.NOTHING:
                        schedule.release(session, name, self.owner)
                        return True
                    continue
            if started is None:
                self._unlocked_handlers[decision.action](name)
                continue
            self._attempt(started, decision)
            return True
        return False

    def _deploy(self, name: str) -> None:
        deployment.deploy_leased(self.app, name, owner=self.owner, actor=self.actor)

    def _check_renewal_info(self, name: str) -> None:
        """Ask the CA for its suggested renewal window (RFC 9773); the next decision uses it."""
        renewal_info.check_leased(self.app, name, owner=self.owner)

    def _nothing(self, session: Session, name: str, decision: Decision, now: dt.datetime) -> None:
        """Nothing due: `reschedule` saves when something falls due."""

    def _warn(self, session: Session, name: str, decision: Decision, now: dt.datetime) -> None:
        not_after = schedule.served_not_after(session, name)
        assert not_after is not None
        for day in decision.warn_days:
            record_event(session, at=now, actor=self.actor, kind=EventKind.CERT_EXPIRING,
                         object_type="certificate", object_name=name,
                         details={"days_left": days_left(not_after, now), "warning_day": day,
                                  "not_after": not_after.isoformat(), "reason": decision.reason.value})
        schedule.record_warnings(session, name, decision.warn_days)
        log.warning("%s expires in %d day(s)", name, days_left(not_after, now))

    def _mark_expired(self, session: Session, name: str, decision: Decision, now: dt.datetime) -> None:
        not_after = schedule.served_not_after(session, name)
        record_event(session, at=now, actor=self.actor, kind=EventKind.CERT_EXPIRED,
                     object_type="certificate", object_name=name,
                     details={"not_after": not_after.isoformat() if not_after else None})
        schedule.mark_expired(session, name)
        log.error("%s has expired", name)

    def _give_up(self, session: Session, name: str, decision: Decision, now: dt.datetime) -> None:
        """A deferred request waited the profile's max_pending_days: a failure, then backoff."""
        error = issuance.give_up_deferral(self.app, session, name, now=now, actor=self.actor)
        log.warning("%s: %s", name, error)

    def _attempt(self, started: issuance.Started, decision: Decision) -> None:
        """ISSUE, RENEW (and POLL, which deferred issuance will add): one attempt."""
        name = started.job.certificate.name
        log.info("%s: %s (%s)", name, decision.action.value, decision.reason.value)
        report = issuance.run_started(self.app, started)
        if issuance.is_success(report):
            log.info("%s: revision %s issued", name, report.revision)
        elif report.outcome is Outcome.DEFERRED:
            log.info("%s: awaiting the CA since %s; next poll at %s", name,
                     report.deferred_since.isoformat() if report.deferred_since else "?",
                     report.next_poll_at.isoformat() if report.next_poll_at else "?")
        else:
            log.warning("%s: attempt %s (%d failure(s) in a row): %s",
                        name, report.outcome.value, report.failures, report.error)
