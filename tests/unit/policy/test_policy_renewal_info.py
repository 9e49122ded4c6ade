"""The CA's suggested renewal window (RFC 9773): the time drawn in it, when the CA is asked
again, and how `decide` uses both."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certpilot.domain.model import Phase, RenewalSettings
from certpilot.policy import Action, CertificateSnapshot, Decision, Reason, decide
from certpilot.policy.renewal_info import (
    MAX_CHECK_S,
    MIN_CHECK_S,
    SuggestedWindow,
    clamp_check_s,
    effective_renewal_time,
    next_check_at,
    time_in_window,
)

UTC = dt.timezone.utc
NB = dt.datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + dt.timedelta(days=90)  # the profile's default renewal: NB + 60 d


def day(n: float) -> dt.datetime:
    return NB + dt.timedelta(days=n)


WINDOW = SuggestedWindow(day(70), day(72))


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        pytest.param(0.0, day(70), id="fraction-0-is-the-start"),
        pytest.param(0.5, day(71), id="fraction-half-is-the-middle"),
        pytest.param(0.25, day(70.5), id="fraction-quarter"),
    ],
)
def test_the_time_is_drawn_uniformly_in_the_window(fraction: float, expected: dt.datetime) -> None:
    assert time_in_window(WINDOW, random_fraction=fraction) == expected


def test_a_time_drawn_before_inside_the_window_is_kept() -> None:
    """Asking often must not pull the renewal earlier: the same window keeps its time."""
    assert time_in_window(WINDOW, random_fraction=0.0, previous=day(71.5)) == day(71.5)


def test_a_window_that_moved_draws_again() -> None:
    moved = SuggestedWindow(day(10), day(12))
    assert time_in_window(moved, random_fraction=0.5, previous=day(71.5)) == day(11)


def test_a_window_in_the_past_gives_a_time_in_the_past_so_renewal_is_due_now() -> None:
    past = SuggestedWindow(day(1), day(2))
    snapshot = CertificateSnapshot(phase=Phase.ISSUED, has_revision=True, not_before=NB, not_after=NA,
                                   renewal=RenewalSettings(),
                                   renewal_info_renew_at=time_in_window(past, random_fraction=0.3))
    assert decide(snapshot, day(5)) == Decision(Action.RENEW, Reason.RENEWAL_WINDOW)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        pytest.param(day(2), day(1), "ends", id="end-before-start"),
        pytest.param(day(1).replace(tzinfo=None), day(2), "timezone-aware", id="naive-start"),
    ],
)
def test_an_impossible_window_is_refused(start: dt.datetime, end: dt.datetime, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SuggestedWindow(start, end)


def test_random_fraction_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError):
        time_in_window(WINDOW, random_fraction=1.0)


@pytest.mark.parametrize(
    ("profile", "window", "expected"),
    [
        pytest.param(day(60), None, day(60), id="no-window-the-profile-decides"),
        pytest.param(day(60), day(70), day(70), id="a-later-window-wins"),
        pytest.param(day(60), day(20), day(20), id="an-earlier-window-wins"),
        pytest.param(day(60), day(95), NA, id="never-after-expiry"),
    ],
)
def test_effective_renewal_time(profile: dt.datetime, window: dt.datetime | None, expected: dt.datetime) -> None:
    assert effective_renewal_time(profile, window, NA) == expected


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [
        pytest.param(0, MIN_CHECK_S, id="zero-held-at-an-hour"),
        pytest.param(6 * 3600, 6 * 3600, id="six-hours-kept"),
        pytest.param(30 * 86400, MAX_CHECK_S, id="a-month-held-at-a-day"),
    ],
)
def test_the_cas_retry_after_is_clamped(retry_after_s: int, expected: float) -> None:
    assert clamp_check_s(retry_after_s) == expected


def test_the_clamp_bounds_are_parameters() -> None:
    assert next_check_at(0, day(1), min_check_s=1) == day(1) + dt.timedelta(seconds=1)


ISSUED = CertificateSnapshot(phase=Phase.ISSUED, has_revision=True, not_before=NB, not_after=NA,
                             renewal=RenewalSettings())


def snap(**changes: object) -> CertificateSnapshot:
    return dataclasses.replace(ISSUED, **changes)


CASES = [
    ("check-due-asks-the-ca", snap(renewal_info_check_at=day(1)), day(1),
     Decision(Action.CHECK_RENEWAL_INFO, Reason.RENEWAL_INFO_DUE)),
    ("check-not-due-waits-for-it", snap(renewal_info_check_at=day(3)), day(1),
     Decision(Action.NOTHING, Reason.NOT_DUE, at=day(3))),
    ("no-check-for-a-script-without-the-hook", snap(), day(1),
     Decision(Action.NOTHING, Reason.NOT_DUE, at=day(60))),
    ("window-time-replaces-the-profiles", snap(renewal_info_renew_at=day(70), renewal_info_check_at=day(80)),
     day(50), Decision(Action.NOTHING, Reason.NOT_DUE, at=day(70))),
    ("no-warning-while-the-cas-window-is-ahead", snap(renewal_info_renew_at=day(70), renewal_info_check_at=day(80)),
     day(65), Decision(Action.NOTHING, Reason.NOT_DUE, at=day(70))),
    ("warnings-once-the-windows-time-passed-without-renewal",
     snap(renewal_info_renew_at=day(70), renewal_info_check_at=day(80), failures=1, retry_at=day(75)),
     day(71), Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=(30,))),
    ("window-time-reached-renews", snap(renewal_info_renew_at=day(70), renewal_info_check_at=day(80)),
     day(70), Decision(Action.RENEW, Reason.RENEWAL_WINDOW)),
    ("renewal-due-comes-before-the-check", snap(renewal_info_renew_at=day(2), renewal_info_check_at=day(1)),
     day(3), Decision(Action.RENEW, Reason.RENEWAL_WINDOW)),
    ("check-goes-on-while-backing-off", snap(renewal_info_renew_at=day(2), renewal_info_check_at=day(3),
                                             failures=1, retry_at=day(4)),
     day(3), Decision(Action.CHECK_RENEWAL_INFO, Reason.RENEWAL_INFO_DUE)),
    ("no-check-while-the-ca-holds-a-request", snap(renewal_info_check_at=day(1), phase=Phase.DEFERRED,
                                                   deferred_since=day(0), deferred_poll_at=day(2)),
     day(1), Decision(Action.NOTHING, Reason.DEFERRED_WAITING, at=day(2))),
    ("no-check-after-expiry", snap(renewal_info_check_at=day(100), expired_event_recorded=True,
                                   failures=1, retry_at=day(101)),
     day(100), Decision(Action.NOTHING, Reason.BACKOFF_WAITING, at=day(101))),
]


@pytest.mark.parametrize(("snapshot", "now", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_decide_with_renewal_info(snapshot: CertificateSnapshot, now: dt.datetime, expected: Decision) -> None:
    assert decide(snapshot, now) == expected
