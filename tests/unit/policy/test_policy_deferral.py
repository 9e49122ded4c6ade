"""Poll times of a deferred request: the CA's wait, clamped, never past the deadline."""

from __future__ import annotations

import datetime as dt

import pytest

from certpilot.policy.deferral import (
    MAX_POLL_S,
    MIN_POLL_S,
    clamp_poll_s,
    deferral_deadline,
    is_deferral_overdue,
    next_poll_at,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [
        pytest.param(0, MIN_POLL_S, id="zero-is-held-at-the-minimum"),
        pytest.param(-5, MIN_POLL_S, id="negative-is-held-at-the-minimum"),
        pytest.param(300, 300, id="a-sensible-wait-is-kept"),
        pytest.param(7 * 86400, MAX_POLL_S, id="a-week-is-held-at-a-day"),
    ],
)
def test_clamp(retry_after_s: int, expected: float) -> None:
    assert clamp_poll_s(retry_after_s) == expected


def test_clamp_bounds_are_parameters() -> None:
    assert clamp_poll_s(0, min_poll_s=1, max_poll_s=5) == 1
    assert clamp_poll_s(9, min_poll_s=1, max_poll_s=5) == 5


def test_next_poll_is_the_clamped_wait_from_now() -> None:
    now = T0 + dt.timedelta(days=2)
    assert next_poll_at(600, now, deferred_since=T0, max_pending_days=30) == now + dt.timedelta(seconds=600)


def test_next_poll_never_runs_past_the_deadline() -> None:
    now = T0 + dt.timedelta(days=29, hours=23, minutes=59)
    assert next_poll_at(86400, now, deferred_since=T0, max_pending_days=30) == T0 + dt.timedelta(days=30)


def test_overdue_from_the_deadline_on() -> None:
    deadline = deferral_deadline(T0, 2)
    assert deadline == T0 + dt.timedelta(days=2)
    assert not is_deferral_overdue(T0, 2, deadline - dt.timedelta(seconds=1))
    assert is_deferral_overdue(T0, 2, deadline)
