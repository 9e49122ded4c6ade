"""The renewal loop (DESIGN §3) driven pass by pass with an injected clock.

`Reconciler.run_once()` is called directly; between passes the fake clock is moved.
The CA is the bundled local-CA script, made to read the same fake "now" from a
file, so the certificates it signs are valid in the controller's (fake) time and
the instants the tests derive from them are exact. `random_fraction` is pinned to
0.5, which makes the backoff jitter factor exactly 1.

The last tests run the loop on a thread (`run_forever`, `wake`, `stop`) and check
how it treats a certificate another worker holds a lease on.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.domain.model import Attempt, EventKind, ExpiryStatus, Outcome, Phase, RenewalSettings
from certpilot.pki.local_ca import LocalCA, create_local_ca
from certpilot.policy import backoff_delay, renewal_time
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from certpilot.services.certificates import (
    get_certificate,
    list_attempts,
    list_revisions,
    request_renewal,
)
from certpilot.services.scripts import update_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store import schedule
from tests.support.processes import wait_for
from tests.support.reconciler import (
    ACTOR,
    FAILING_CA_MESSAGE,
    FAILING_CA_SOURCE,
    FakeClock,
    add_local_ca_profile,
    events_of,
    fake_time_local_ca_source,
    held_leases,
    real_now,
    request,
    whole_seconds,
)

SCRIPT = "local-ca"
PROFILE = "corp"
CERT = "web1"
SCRIPT_TIMEOUT_S = 30
DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)
SECOND = dt.timedelta(seconds=1)
LEAF_BACKDATE = dt.timedelta(seconds=30)  # the bundled script's not_before = now - 30 s


@dataclass
class Loop:
    """An App on a fake clock, a reconciler on it, and the CA its profile uses."""

    app: App
    clock: FakeClock
    reconciler: Reconciler
    ca: LocalCA
    fake_now_file: Path

    def run_pass(self) -> int:
        return self.reconciler.run_once()

    def add_profile(self, *, source: str | None = None, **renewal: object) -> None:
        add_local_ca_profile(
            self.app, self.ca, profile=PROFILE, script=SCRIPT,
            source=fake_time_local_ca_source() if source is None else source,
            timeout_s=SCRIPT_TIMEOUT_S, validity_days="90", fake_now_file=str(self.fake_now_file),
            **renewal,  # type: ignore[arg-type]
        )

    def set_script(self, source: str) -> None:
        update_script(self.app, SCRIPT, source, timeout_s=SCRIPT_TIMEOUT_S, actor=ACTOR)

    def attempts(self) -> list[Attempt]:
        return list(reversed(list_attempts(self.app, CERT)))  # oldest first


@pytest.fixture
def loop(migrated_settings: Settings, tmp_path: Path) -> Iterator[Loop]:
    fake_now_file = tmp_path / "shared-with-scripts" / "fake-now"
    fake_now_file.parent.mkdir()
    clock = FakeClock(whole_seconds(real_now()), fake_now_file)
    ca = create_local_ca(tmp_path / "ca", "certpilot reconciler test CA", clock.now() - DAY)
    with App(migrated_settings, clock=clock, random_fraction=lambda: 0.5) as app:
        reconciler = Reconciler(app)
        try:
            yield Loop(app, clock, reconciler, ca, fake_now_file)
        finally:
            reconciler.stop()
            reconciler.run_forever()  # returns at once: shuts its threads down, releases leases


def test_pending_certificate_is_issued_on_the_first_pass_and_renewed_at_two_thirds(loop: Loop) -> None:
    loop.add_profile()
    request(loop.app, CERT, profile=PROFILE)
    t0 = loop.clock.now()
    assert get_certificate(loop.app, CERT).status.phase is Phase.PENDING

    assert loop.run_pass() == 1
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.revision, status.failures, status.last_error) == (Phase.ISSUED, 1, 0, None)
    assert (status.not_before, status.not_after) == (t0 - LEAF_BACKDATE, t0 + 90 * DAY)
    renew_at = renewal_time(status.not_before, status.not_after, RenewalSettings())
    assert renew_at == status.not_before + (status.not_after - status.not_before) * 2 / 3
    assert status.renew_at == renew_at
    assert status.next_action_at == renew_at, "the loop should look next when renewal falls due"
    assert [e.details["revision"] for e in events_of(loop.app, CERT, EventKind.CERT_ISSUED)] == [1]
    first = list_revisions(loop.app, CERT)
    assert [r.revision for r in first] == [1]

    # passes before the renewal time do nothing at all
    for when in (t0, t0 + 30 * DAY, renew_at - SECOND):
        loop.clock.set(when)
        assert loop.run_pass() == 0, f"a pass at {when} leased a certificate that is not due"
    assert len(loop.attempts()) == 1
    assert get_certificate(loop.app, CERT).status.revision == 1

    loop.clock.set(renew_at)
    assert loop.run_pass() == 1
    revisions = list_revisions(loop.app, CERT)
    assert [r.revision for r in revisions] == [2, 1]
    renewed, old = revisions
    assert old == first[0], "the old revision must stay in the history unchanged"
    assert renewed.public_key_sha256 != old.public_key_sha256, "a renewal must use a new key pair"
    assert renewed.key_id != old.key_id and renewed.serial != old.serial
    assert (renewed.not_before, renewed.not_after) == (renew_at - LEAF_BACKDATE, renew_at + 90 * DAY)
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.revision, status.fingerprint_sha256) == (
        Phase.ISSUED, 2, renewed.fingerprint_sha256)
    assert status.next_action_at == renewal_time(renewed.not_before, renewed.not_after, RenewalSettings())
    assert [e.details["revision"] for e in events_of(loop.app, CERT, EventKind.CERT_RENEWED)] == [2]
    assert [(a.kind, a.outcome, a.revision) for a in loop.attempts()] == [
        ("issue", Outcome.ISSUED, 1), ("renew", Outcome.ISSUED, 2)]
    # a healthy certificate renewed on time gives no expiry warnings
    assert events_of(loop.app, CERT, EventKind.CERT_EXPIRING) == []

    assert loop.run_pass() == 0, "the renewed certificate is not due again"
    assert held_leases(loop.app) == []


def test_expiry_warnings_fire_once_per_warning_day_and_expiry_once(loop: Loop) -> None:
    # renewal far away (one day before expiry): the warnings are what the loop does
    loop.add_profile(renew_before_days=1, warning_days=[30, 7, 1])
    request(loop.app, CERT, profile=PROFILE)
    assert loop.run_pass() == 1
    not_after = get_certificate(loop.app, CERT).status.not_after
    assert not_after == loop.clock.now() + 90 * DAY

    def warnings() -> list[tuple[object, object]]:
        return [(e.details["warning_day"], e.details["days_left"])
                for e in events_of(loop.app, CERT, EventKind.CERT_EXPIRING)]

    loop.clock.set(not_after - 31 * DAY)
    assert loop.run_pass() == 0
    assert warnings() == []
    assert get_certificate(loop.app, CERT).status.expiry_status is ExpiryStatus.GOOD

    loop.clock.set(not_after - 29.5 * DAY)
    assert loop.run_pass() == 1
    assert warnings() == [(30, 29)]
    status = get_certificate(loop.app, CERT).status
    assert (status.expiry_status, status.revision, status.phase) == (ExpiryStatus.WARNING, 1, Phase.ISSUED)
    assert status.next_action_at == not_after - 7 * DAY, "the loop should look next at the 7-day mark"
    assert loop.run_pass() == 0
    assert warnings() == [(30, 29)], "a second pass must not repeat the warning"

    loop.clock.set(not_after - 6.5 * DAY)
    assert loop.run_pass() == 1
    assert loop.run_pass() == 0
    assert warnings() == [(30, 29), (7, 6)]
    assert len(loop.attempts()) == 1, "no renewal is due yet"

    # the CA goes down and the certificate runs out
    loop.set_script(FAILING_CA_SOURCE)
    expired_at = loop.clock.set(not_after + dt.timedelta(hours=1))
    assert loop.run_pass() == 1
    expired = events_of(loop.app, CERT, EventKind.CERT_EXPIRED)
    assert len(expired) == 1
    assert expired[0].details["not_after"] == not_after.isoformat()
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.expiry_status, status.revision) == (Phase.EXPIRED, ExpiryStatus.EXPIRED, 1)
    # the renewal it then tried failed, and waits the minimum backoff
    assert [(a.kind, a.outcome) for a in loop.attempts()[1:]] == [("renew", Outcome.FAILED)]
    assert backoff_delay(1, now=expired_at, not_after=not_after, random_fraction=0.5) == MINUTE
    assert status.next_action_at == expired_at + MINUTE

    assert loop.run_pass() == 0
    loop.clock.advance(2 * MINUTE)
    assert loop.run_pass() == 1
    assert len(loop.attempts()) == 3
    assert len(events_of(loop.app, CERT, EventKind.CERT_EXPIRED)) == 1, "CERT_EXPIRED is recorded once"
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.revision, status.failures) == (Phase.EXPIRED, 1, 2)
    assert warnings() == [(30, 29), (7, 6)], "no expiry warning after the certificate expired"


def test_failed_renewal_keeps_the_served_revision_and_backs_off_as_the_policy_says(loop: Loop) -> None:
    loop.add_profile(warning_days=[])  # no expiry warnings mixed into the passes
    request(loop.app, CERT, profile=PROFILE)
    assert loop.run_pass() == 1
    served = get_certificate(loop.app, CERT).status
    revision_1 = list_revisions(loop.app, CERT)

    loop.set_script(FAILING_CA_SOURCE)
    loop.clock.set(served.renew_at)
    attempt_times: list[dt.datetime] = []
    for failures in (1, 2, 3):
        now = loop.clock.now()
        assert loop.run_pass() == 1
        attempt_times.append(now)
        status = get_certificate(loop.app, CERT).status
        assert status.failures == failures
        assert FAILING_CA_MESSAGE in (status.last_error or "")
        # the served certificate is untouched
        assert (status.phase, status.revision, status.fingerprint_sha256, status.not_after) == (
            Phase.ISSUED, 1, served.fingerprint_sha256, served.not_after)
        assert list_revisions(loop.app, CERT) == revision_1
        delay = backoff_delay(failures, now=now, not_after=served.not_after, random_fraction=0.5)
        assert delay == 5 * MINUTE * 2 ** (failures - 1), "random_fraction 0.5 means no jitter"
        assert status.next_action_at == now + delay
        # a pass before the retry time does not attempt
        loop.clock.set(now + delay - SECOND)
        assert loop.run_pass() == 0
        assert len(loop.attempts()) == 1 + failures
        loop.clock.set(now + delay)

    renewals = loop.attempts()[1:]
    assert [a.started_at for a in renewals] == attempt_times
    assert [b - a for a, b in zip(attempt_times, attempt_times[1:])] == [5 * MINUTE, 10 * MINUTE]
    assert [(a.kind, a.outcome) for a in renewals] == [("renew", Outcome.FAILED)] * 3
    failed_events = events_of(loop.app, CERT, EventKind.CERT_RENEW_FAILED)
    assert [e.details["failures"] for e in failed_events] == [1, 2, 3]

    # a manual renewal skips the 20-minute wait, even while the CA still fails
    loop.clock.set(attempt_times[-1] + MINUTE)
    request_renewal(loop.app, CERT, actor=ACTOR)
    assert loop.run_pass() == 1
    assert get_certificate(loop.app, CERT).status.failures == 4
    assert loop.attempts()[-1].started_at == loop.clock.now()

    # the CA is back; asked once more, the certificate is renewed at once
    loop.set_script(fake_time_local_ca_source())
    loop.clock.advance(MINUTE)
    request_renewal(loop.app, CERT, actor=ACTOR)
    assert loop.run_pass() == 1
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.revision, status.failures, status.last_error) == (Phase.ISSUED, 2, 0, None)
    renewed, old = list_revisions(loop.app, CERT)
    assert old == revision_1[0]
    assert renewed.public_key_sha256 != old.public_key_sha256
    assert renewed.issued_at == loop.clock.now()
    assert [e.details["revision"] for e in events_of(loop.app, CERT, EventKind.CERT_RENEWED)] == [2]


def test_failed_first_issuance_is_retried_with_the_same_backoff(loop: Loop) -> None:
    loop.add_profile(source=FAILING_CA_SOURCE)
    request(loop.app, CERT, profile=PROFILE)
    t0 = loop.clock.now()
    attempt_times: list[dt.datetime] = []
    for failures in (1, 2, 3):
        now = loop.clock.now()
        assert loop.run_pass() == 1
        attempt_times.append(now)
        status = get_certificate(loop.app, CERT).status
        assert (status.phase, status.revision, status.failures) == (Phase.FAILED, None, failures)
        assert FAILING_CA_MESSAGE in (status.last_error or "")
        delay = backoff_delay(failures, now=now, not_after=None, random_fraction=0.5)
        assert delay == 5 * MINUTE * 2 ** (failures - 1)
        assert status.next_action_at == now + delay
        loop.clock.set(now + delay - SECOND)
        assert loop.run_pass() == 0, "a pass before the retry time must not attempt"
        loop.clock.set(now + delay)

    assert attempt_times == [t0, t0 + 5 * MINUTE, t0 + 15 * MINUTE]
    assert [(a.kind, a.outcome, a.started_at) for a in loop.attempts()] == [
        ("issue", Outcome.FAILED, at) for at in attempt_times]
    assert [e.details["failures"] for e in events_of(loop.app, CERT, EventKind.CERT_ISSUE_FAILED)] == [1, 2, 3]

    # the CA is fixed: the next retry, when it falls due, issues revision 1
    loop.set_script(fake_time_local_ca_source())
    assert loop.clock.now() == t0 + 35 * MINUTE
    assert loop.run_pass() == 1
    status = get_certificate(loop.app, CERT).status
    assert (status.phase, status.revision, status.failures, status.last_error) == (Phase.ISSUED, 1, 0, None)
    assert [e.details["revision"] for e in events_of(loop.app, CERT, EventKind.CERT_ISSUED)] == [1]


def test_run_forever_wakes_for_a_new_certificate_and_stops_cleanly(migrated_settings: Settings, tmp_path: Path) -> None:
    """The unmodified bundled script, the system clock, and `run_forever`: a new
    certificate wakes a loop that would otherwise sleep 30 s; `stop()` ends it cleanly."""
    settings = migrated_settings.model_copy(update={"reconcile_interval_s": 30.0})
    ca = create_local_ca(tmp_path / "ca", "certpilot reconciler test CA", real_now())
    with App(settings) as app:
        add_local_ca_profile(app, ca, profile=PROFILE, script=SCRIPT, source=bundled_local_ca_source(),
                             timeout_s=SCRIPT_TIMEOUT_S, validity_days="90")
        reconciler = Reconciler(app)
        thread = threading.Thread(target=reconciler.run_forever, name="renewal-loop")
        thread.start()
        try:
            wait_for(lambda: reconciler.passes >= 1, timeout_s=10, what="the first pass")
            request(app, CERT, profile=PROFILE)
            wait_for(lambda: get_certificate(app, CERT).status.revision == 1, timeout_s=10,
                     what="issuance after wake()")
        finally:
            reconciler.stop()
            thread.join(timeout=15)
        assert not thread.is_alive(), "run_forever did not return after stop()"
        status = get_certificate(app, CERT).status
        assert (status.phase, status.expiry_status) == (Phase.ISSUED, ExpiryStatus.GOOD)
        assert status.not_after - status.not_before == 90 * DAY + LEAF_BACKDATE
        assert held_leases(app) == []


# --- leases held by other workers --------------------------------------------------

OTHER_WORKER = "other-host:4242:0badc0de"


def hold_lease(app: App, name: str, *, owner: str, until: dt.datetime) -> None:
    """What another worker's claim leaves in the database."""
    with app.db.transaction() as session:
        schedule.claim(session, name, owner=owner, now=app.clock.now(), lease_until=until)


def test_a_certificate_leased_by_another_worker_is_taken_over_only_when_the_lease_expires(loop: Loop) -> None:
    loop.add_profile()
    request(loop.app, CERT, profile=PROFILE)
    lease_until = loop.clock.now() + 10 * MINUTE
    hold_lease(loop.app, CERT, owner=OTHER_WORKER, until=lease_until)

    for when in (loop.clock.now(), lease_until - SECOND):
        loop.clock.set(when)
        assert loop.run_pass() == 0, "a live lease of another worker must be respected"
    assert loop.attempts() == []
    assert [(lease.owner, lease.expires_at) for lease in held_leases(loop.app)] == [(OTHER_WORKER, lease_until)]

    loop.clock.set(lease_until + SECOND)
    assert loop.run_pass() == 1
    assert get_certificate(loop.app, CERT).status.revision == 1
    assert [a.outcome for a in loop.attempts()] == [Outcome.ISSUED]
    assert held_leases(loop.app) == [], "the lease taken over is released after the work"


def test_the_loop_sleeps_while_another_worker_holds_the_only_due_certificate(
    migrated_settings: Settings, tmp_path: Path
) -> None:
    """DESIGN §5: the interval is the longest the loop sleeps; it wakes earlier when
    something falls due. A certificate another worker is working on is not due for this
    one before the lease runs out: the loop must not poll the database in a tight loop."""
    interval_s = migrated_settings.reconcile_interval_s
    clock = FakeClock(whole_seconds(real_now()))
    ca = create_local_ca(tmp_path / "ca", "certpilot reconciler test CA", clock.now())
    with App(migrated_settings, clock=clock, random_fraction=lambda: 0.5) as app:
        add_local_ca_profile(app, ca, profile=PROFILE, script=SCRIPT, source=bundled_local_ca_source(),
                             timeout_s=SCRIPT_TIMEOUT_S, validity_days="90")
        request(app, CERT, profile=PROFILE)
        hold_lease(app, CERT, owner=OTHER_WORKER, until=clock.now() + 10 * MINUTE)
        reconciler = Reconciler(app)
        thread = threading.Thread(target=reconciler.run_forever, name="renewal-loop")
        observed_s = 2.0
        thread.start()
        try:
            wait_for(lambda: reconciler.passes >= 1, timeout_s=10, what="the first pass")
            first = reconciler.passes
            time.sleep(observed_s)
            passes = reconciler.passes - first
        finally:
            reconciler.stop()
            thread.join(timeout=15)
        assert not thread.is_alive()
        assert list_attempts(app, CERT) == []
        assert passes <= observed_s / interval_s + 2, (
            f"{passes} passes in {observed_s:.0f} s with reconcile_interval_s={interval_s}: the loop polls "
            "without sleeping while another worker holds the only due certificate"
        )
