"""Expiry status, days left, warning days crossed, --expiring-within."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpilot.domain.model import ExpiryStatus
from certpilot.policy import (
    days_left,
    expiry_status,
    is_expiring_within,
    newly_crossed_warnings,
    next_warning_at,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WARN = (30, 7, 1)


def left(days: float = 0, **kwargs: float) -> dt.datetime:
    """A not_after that leaves this much time after NOW."""
    return NOW + dt.timedelta(days=days, **kwargs)


@pytest.mark.parametrize(
    ("not_after", "expected"),
    [
        (left(90), 90),
        (left(30, hours=23), 30),
        (left(0, hours=5), 0),
        (left(0), 0),
        (left(0, seconds=-1), -1),
        (left(-2), -2),
        (left(-2, hours=-1), -3),
    ],
    ids=["ninety", "rounds-down", "hours-left-is-zero", "at-expiry", "second-after", "two-days-after", "floor-negative"],
)
def test_days_left(not_after, expected):
    assert days_left(not_after, NOW) == expected


@pytest.mark.parametrize(
    ("not_after", "warning_days", "expected"),
    [
        (left(90), WARN, ExpiryStatus.GOOD),
        (left(30, seconds=1), WARN, ExpiryStatus.GOOD),
        (left(30), WARN, ExpiryStatus.WARNING),
        (left(3), WARN, ExpiryStatus.WARNING),
        (left(0, seconds=1), WARN, ExpiryStatus.WARNING),
        (left(0), WARN, ExpiryStatus.EXPIRED),
        (left(-5), WARN, ExpiryStatus.EXPIRED),
        (left(3), (), ExpiryStatus.GOOD),
        (left(50), (60,), ExpiryStatus.WARNING),
        (left(10), [7, 14], ExpiryStatus.WARNING),
    ],
    ids=[
        "ninety-days-good",
        "just-over-30-days-good",
        "exactly-30-days-warning",
        "three-days-warning",
        "one-second-warning",
        "at-not-after-expired",
        "long-expired",
        "no-warning-days-good-until-expiry",
        "custom-60-day-warning",
        "unsorted-list-uses-max",
    ],
)
def test_expiry_status(not_after, warning_days, expected):
    assert expiry_status(not_after, NOW, warning_days) is expected


@pytest.mark.parametrize(
    ("not_after", "days", "expected"),
    [
        (left(10), 30, True),
        (left(30), 30, True),
        (left(30, seconds=1), 30, False),
        (left(-1), 30, True),
        (left(1), 0, False),
    ],
    ids=["inside", "on-boundary", "just-outside", "expired-included", "zero-window"],
)
def test_is_expiring_within(not_after, days, expected):
    assert is_expiring_within(not_after, NOW, days) is expected


@pytest.mark.parametrize(
    ("not_after", "already", "expected"),
    [
        (left(45), (), ()),
        (left(30), (), (30,)),
        (left(20), (30,), ()),
        (left(6), (30,), (7,)),
        (left(6), (), (30, 7)),
        (left(0, hours=12), (), (30, 7, 1)),
        (left(0, hours=12), (30, 7, 1), ()),
        (left(0, hours=12), (7,), (30, 1)),
    ],
    ids=[
        "none-crossed",
        "first-crossed-on-boundary",
        "already-warned",
        "next-one-crossed",
        "two-crossed-at-once",
        "all-crossed-at-once-descending",
        "all-already-warned",
        "gap-in-warned",
    ],
)
def test_newly_crossed_warnings(not_after, already, expected):
    assert newly_crossed_warnings(not_after, NOW, WARN, frozenset(already)) == expected


def test_newly_crossed_warnings_deduplicates_days():
    assert newly_crossed_warnings(left(5), NOW, (7, 7, 30), set()) == (30, 7)


@pytest.mark.parametrize(
    ("not_after", "already", "expected"),
    [
        (left(90), (), left(60)),
        (left(20), (30,), left(13)),
        (left(20), (), left(13)),
        (left(0, hours=12), (30, 7, 1), None),
    ],
    ids=["first-threshold", "next-after-warned", "past-unwarned-ignored", "nothing-left"],
)
def test_next_warning_at(not_after, already, expected):
    assert next_warning_at(not_after, NOW, WARN, frozenset(already)) == expected


@given(remaining=st.timedeltas(min_value=-dt.timedelta(days=400), max_value=dt.timedelta(days=400)))
def test_status_agrees_with_crossed_warnings(remaining):
    not_after = NOW + remaining
    status = expiry_status(not_after, NOW, WARN)
    crossed = newly_crossed_warnings(not_after, NOW, WARN, ())
    if status is ExpiryStatus.GOOD:
        assert crossed == ()
    else:
        assert crossed[0] == max(WARN)
    assert (status is ExpiryStatus.EXPIRED) == (days_left(not_after, NOW) < 0 or remaining == dt.timedelta(0))


_NB = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("lifetime", "expected"),
    [
        (dt.timedelta(days=90), (30, 7, 1)),
        (dt.timedelta(days=30), (7, 1)),
        (dt.timedelta(days=7), (1,)),
        (dt.timedelta(hours=23), ()),
    ],
    ids=["90-day-keeps-all", "30-day-drops-30", "7-day-keeps-only-1", "under-a-day-none"],
)
def test_applicable_warning_days_drop_days_at_or_past_the_lifetime(lifetime, expected):
    from certpilot.policy import applicable_warning_days

    assert applicable_warning_days((30, 7, 1), _NB, _NB + lifetime) == expected
