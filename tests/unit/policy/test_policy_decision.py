"""decide: one row per branch of the check chain, with the expected typed verdict."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certpilot.domain.model import Phase, RenewalSettings
from certpilot.policy import Action, CertificateSnapshot, Decision, Reason, decide

UTC = dt.timezone.utc
NB = dt.datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + dt.timedelta(days=90)  # default renewal at NB + 60 d = NA - 30 d


def day(n: float) -> dt.datetime:
    """NB + n days."""
    return NB + dt.timedelta(days=n)


ISSUED = CertificateSnapshot(
    phase=Phase.ISSUED, has_revision=True, not_before=NB, not_after=NA, renewal=RenewalSettings()
)
PENDING = CertificateSnapshot(
    phase=Phase.PENDING, has_revision=False, not_before=None, not_after=None, renewal=RenewalSettings()
)


def snap(base: CertificateSnapshot, **changes: object) -> CertificateSnapshot:
    return dataclasses.replace(base, **changes)


CASES = [
    # (id, snapshot, now, expected decision)
    (
        "deferral-past-max-pending-days-gives-up",
        snap(PENDING, phase=Phase.DEFERRED, deferred_since=day(0), deferred_poll_at=day(31)),
        day(30),
        Decision(Action.GIVE_UP, Reason.DEFERRAL_TOO_LONG),
    ),
    (
        "deferral-within-max-pending-days-waits-for-its-poll",
        snap(PENDING, phase=Phase.DEFERRED, deferred_since=day(0), deferred_poll_at=day(29)),
        day(28),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(29)),
    ),
    (
        "deferral-wakes-at-its-deadline-when-the-poll-is-later",
        snap(PENDING, phase=Phase.DEFERRED, deferred_since=day(0), deferred_poll_at=day(40),
             renewal=RenewalSettings(max_pending_days=3)),
        day(1),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(3)),
    ),
    (
        "deferral-gives-up-after-the-profiles-max-pending-days",
        snap(PENDING, phase=Phase.DEFERRED, deferred_since=day(0), deferred_poll_at=day(40),
             renewal=RenewalSettings(max_pending_days=3)),
        day(3),
        Decision(Action.GIVE_UP, Reason.DEFERRAL_TOO_LONG),
    ),
    (
        "deferral-of-an-expired-certificate-keeps-polling",
        snap(ISSUED, phase=Phase.EXPIRED, expired_event_recorded=True, deferred_since=day(89),
             deferred_poll_at=day(91)),
        day(91),
        Decision(Action.POLL, Reason.DEFERRED_POLL_DUE),
    ),
    (
        "manual-request-beats-an-overdue-deferral",
        snap(PENDING, phase=Phase.DEFERRED, deferred_since=day(0), renewal_requested=True),
        day(40),
        Decision(Action.ISSUE, Reason.RENEWAL_REQUESTED),
    ),
    ("pending-issues", PENDING, day(0), Decision(Action.ISSUE, Reason.NO_REVISION)),
    (
        "failed-retry-due-issues",
        snap(PENDING, phase=Phase.FAILED, failures=2, retry_at=day(0)),
        day(0),
        Decision(Action.ISSUE, Reason.RETRY_AFTER_FAILURE),
    ),
    (
        "failed-backing-off-waits",
        snap(PENDING, phase=Phase.FAILED, failures=2, retry_at=day(1)),
        day(0),
        Decision(Action.NOTHING, Reason.BACKOFF_WAITING, at=day(1)),
    ),
    (
        "manual-request-skips-issue-backoff",
        snap(PENDING, phase=Phase.FAILED, failures=3, retry_at=day(1), renewal_requested=True),
        day(0),
        Decision(Action.ISSUE, Reason.RENEWAL_REQUESTED),
    ),
    (
        "manual-request-renews-fresh-cert",
        snap(ISSUED, renewal_requested=True),
        day(1),
        Decision(Action.RENEW, Reason.RENEWAL_REQUESTED),
    ),
    (
        "manual-request-skips-renew-backoff",
        snap(ISSUED, renewal_requested=True, failures=4, retry_at=day(70)),
        day(65),
        Decision(Action.RENEW, Reason.RENEWAL_REQUESTED),
    ),
    (
        "manual-request-abandons-deferred",
        snap(ISSUED, phase=Phase.DEFERRED, renewal_requested=True, deferred_poll_at=day(62)),
        day(61),
        Decision(Action.RENEW, Reason.RENEWAL_REQUESTED),
    ),
    (
        "fresh-cert-waits-for-renewal-time",
        ISSUED,
        day(1),
        Decision(Action.NOTHING, Reason.NOT_DUE, at=day(60)),
    ),
    (
        "renewal-due-renews",
        ISSUED,
        day(60),
        Decision(Action.RENEW, Reason.RENEWAL_DUE),
    ),
    (
        "renewal-due-beats-coinciding-30-day-warning",
        ISSUED,
        day(61),
        Decision(Action.RENEW, Reason.RENEWAL_DUE),
    ),
    (
        "renewal-retry-due",
        snap(ISSUED, failures=1, retry_at=day(61)),
        day(61),
        Decision(Action.RENEW, Reason.RETRY_AFTER_FAILURE),
    ),
    (
        "renewal-backing-off-warns-crossed-day",
        snap(ISSUED, failures=1, retry_at=day(62)),
        day(61),
        Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=(30,)),
    ),
    (
        "renewal-backing-off-after-warning-waits",
        snap(ISSUED, failures=1, retry_at=day(62), warned_days=frozenset({30})),
        day(61),
        Decision(Action.NOTHING, Reason.BACKOFF_WAITING, at=day(62)),
    ),
    (
        "backoff-wait-shortened-by-next-warning",
        snap(ISSUED, failures=5, retry_at=day(85), warned_days=frozenset({30})),
        day(80),
        Decision(Action.NOTHING, Reason.BACKOFF_WAITING, at=day(83)),
    ),
    (
        "several-warnings-at-once",
        snap(ISSUED, failures=9, retry_at=day(89) + dt.timedelta(hours=20)),
        day(89) + dt.timedelta(hours=12),
        Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=(30, 7, 1)),
    ),
    (
        "warning-before-late-renewal",
        snap(ISSUED, renewal=RenewalSettings(renew_before_days=7)),
        day(60),
        Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=(30,)),
    ),
    (
        "warned-waits-for-late-renewal",
        snap(ISSUED, renewal=RenewalSettings(renew_before_days=7), warned_days=frozenset({30})),
        day(60),
        Decision(Action.NOTHING, Reason.NOT_DUE, at=day(83)),
    ),
    (
        "expired-unrecorded-marked-first",
        snap(ISSUED, renewal_requested=True, failures=3, retry_at=day(95)),
        day(90),
        Decision(Action.MARK_EXPIRED, Reason.EXPIRED),
    ),
    (
        "expired-recorded-renews",
        snap(ISSUED, phase=Phase.EXPIRED, expired_event_recorded=True),
        day(91),
        Decision(Action.RENEW, Reason.RENEWAL_DUE),
    ),
    (
        "expired-recorded-no-warnings",
        snap(ISSUED, phase=Phase.EXPIRED, expired_event_recorded=True, failures=2, retry_at=day(92)),
        day(91),
        Decision(Action.NOTHING, Reason.BACKOFF_WAITING, at=day(92)),
    ),
    (
        "deferred-poll-due",
        snap(PENDING, phase=Phase.DEFERRED, deferred_poll_at=day(1)),
        day(1),
        Decision(Action.POLL, Reason.DEFERRED_POLL_DUE),
    ),
    (
        "deferred-without-poll-time-polls-now",
        snap(PENDING, phase=Phase.DEFERRED),
        day(1),
        Decision(Action.POLL, Reason.DEFERRED_POLL_DUE),
    ),
    (
        "deferred-falls-back-to-next-action-at",
        snap(PENDING, phase=Phase.DEFERRED, retry_at=day(2)),
        day(1),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(2)),
    ),
    (
        "deferred-first-issue-waits",
        snap(PENDING, phase=Phase.DEFERRED, deferred_poll_at=day(2)),
        day(1),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(2)),
    ),
    (
        "deferred-renewal-does-not-renew-again",
        snap(ISSUED, phase=Phase.DEFERRED, deferred_poll_at=day(65), warned_days=frozenset({30})),
        day(64),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(65)),
    ),
    (
        "deferred-renewal-still-warns",
        snap(ISSUED, phase=Phase.DEFERRED, deferred_poll_at=day(88), warned_days=frozenset({30})),
        day(84),
        Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=(7,)),
    ),
    (
        "deferred-renewal-still-marks-expired",
        snap(ISSUED, phase=Phase.DEFERRED, deferred_poll_at=day(95), warned_days=frozenset({30, 7, 1})),
        day(90),
        Decision(Action.MARK_EXPIRED, Reason.EXPIRED),
    ),
    (
        "deferred-wait-ends-at-expiry",
        snap(ISSUED, phase=Phase.DEFERRED, deferred_poll_at=day(95), warned_days=frozenset({30, 7, 1})),
        day(89.5),
        Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=NA),
    ),
    (
        "renewing-after-crash-continues",
        snap(ISSUED, phase=Phase.RENEWING),
        day(60),
        Decision(Action.RENEW, Reason.RENEWAL_DUE),
    ),
    (
        "no-warning-days-waits-for-renewal",
        snap(ISSUED, renewal=RenewalSettings(renew_before_days=1, warning_days=())),
        day(80),
        Decision(Action.NOTHING, Reason.NOT_DUE, at=day(89)),
    ),
]


@pytest.mark.parametrize(("snapshot", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(snapshot, now, expected):
    assert decide(snapshot, now) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"has_revision": True},
        {"has_revision": True, "not_before": NB},
        {"failures": -1},
    ],
    ids=["revision-without-validity", "revision-without-not-after", "negative-failures"],
)
def test_inconsistent_snapshot_rejected(changes):
    with pytest.raises(ValueError):
        snap(PENDING, **changes)


def test_renew_at_exposes_renewal_time():
    assert ISSUED.renew_at == day(60)
    assert PENDING.renew_at is None


def test_reason_codes_are_stable():
    assert {r.value for r in Reason} == {
        "expired",
        "renewal_requested",
        "deferred_poll_due",
        "deferral_too_long",
        "no_revision",
        "retry_after_failure",
        "renewal_due",
        "renewal_window",
        "renewal_info_due",
        "deploy_due",
        "deploy_retry",
        "warning_day_crossed",
        "backoff_waiting",
        "deferred_waiting",
        "not_due",
    }


def test_walk_through_a_lifetime_reaches_each_step_once():
    """Follow the verdicts of a certificate whose renewals keep failing, applying each
    bookkeeping action, and check the events come in the expected order."""
    s = snap(ISSUED, failures=1, retry_at=day(60))
    now, seen = day(59), []
    while now < day(100) and len(seen) < 50:
        d = decide(s, now)
        seen.append((d.action, d.warn_days))
        if d.action is Action.WARN:
            s = snap(s, warned_days=s.warned_days | set(d.warn_days))
        elif d.action is Action.MARK_EXPIRED:
            s = snap(s, phase=Phase.EXPIRED, expired_event_recorded=True)
        elif d.action is Action.RENEW:
            # the attempt fails: wait until the next threshold the test cares about
            s = snap(s, failures=s.failures + 1, retry_at=now + dt.timedelta(days=100))
        else:
            assert d.at is not None
            now = d.at
    assert seen == [
        (Action.NOTHING, ()),
        (Action.RENEW, ()),
        (Action.WARN, (30,)),
        (Action.NOTHING, ()),
        (Action.WARN, (7,)),
        (Action.NOTHING, ()),
        (Action.WARN, (1,)),
        (Action.NOTHING, ()),
        (Action.MARK_EXPIRED, ()),
        (Action.NOTHING, ()),
    ]
    assert now == day(160)  # after expiry only the backoff remains to wait for



def test_a_seven_day_certificate_is_not_warned_thirty_days_ahead_at_issuance():
    week = CertificateSnapshot(phase=Phase.ISSUED, has_revision=True, not_before=NB,
                               not_after=NB + dt.timedelta(days=7), renewal=RenewalSettings())
    assert decide(week, NB + dt.timedelta(minutes=1)).action is Action.NOTHING


def test_a_seven_day_certificate_still_gets_its_one_day_warning():
    late_renewal = RenewalSettings(renew_before_percent=1.0)  # renews only in the last 1.7 h
    week = CertificateSnapshot(phase=Phase.ISSUED, has_revision=True, not_before=NB,
                               not_after=NB + dt.timedelta(days=7), renewal=late_renewal)
    decision = decide(week, NB + dt.timedelta(days=6, hours=1))
    assert (decision.action, decision.warn_days) == (Action.WARN, (1,))
