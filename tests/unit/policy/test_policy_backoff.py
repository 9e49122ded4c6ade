"""backoff_delay / next_retry_at: the table from DESIGN.md section 3, and properties."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from certpilot.policy import backoff_delay, next_retry_at

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MID = 0.5  # no jitter
MIN = dt.timedelta(minutes=1)
DAY = dt.timedelta(hours=24)


def minutes(value: float) -> dt.timedelta:
    return dt.timedelta(minutes=value)


@pytest.mark.parametrize(
    ("failures", "not_after", "random_fraction", "expected"),
    [
        (1, None, MID, minutes(5)),
        (2, None, MID, minutes(10)),
        (3, None, MID, minutes(20)),
        (9, None, MID, minutes(1280)),
        (10, None, MID, DAY),
        (10**6, None, MID, DAY),
        (1, None, 0.0, minutes(4.5)),
        (1, None, 0.75, minutes(5.25)),
        (10, None, 0.0, DAY * 0.9),
        (10, NOW + dt.timedelta(days=2), MID, dt.timedelta(hours=12)),
        (10, NOW + dt.timedelta(days=30), MID, DAY),
        (1, NOW + minutes(8), MID, minutes(2)),
        (1, NOW + minutes(2), MID, MIN),
        (1, NOW - dt.timedelta(days=1), MID, MIN),
    ],
    ids=[
        "first-failure-5-min",
        "second-failure-10-min",
        "third-failure-20-min",
        "ninth-failure-1280-min",
        "tenth-failure-capped-at-24h",
        "huge-count-no-overflow",
        "jitter-low-end-minus-10-percent",
        "jitter-three-quarters-plus-5-percent",
        "jitter-applies-to-cap",
        "quarter-of-two-days-left",
        "lifetime-far-away-no-cap",
        "quarter-of-8-minutes-left",
        "floor-one-minute-near-expiry",
        "floor-one-minute-after-expiry",
    ],
)
def test_backoff_delay(failures, not_after, random_fraction, expected):
    delay = backoff_delay(failures, now=NOW, not_after=not_after, random_fraction=random_fraction)
    assert delay == expected


def test_next_retry_at_is_now_plus_delay():
    assert next_retry_at(3, now=NOW, not_after=None, random_fraction=MID) == NOW + minutes(20)


@pytest.mark.parametrize(
    ("failures", "random_fraction"),
    [(0, MID), (-1, MID), (1, 1.0), (1, -0.1)],
    ids=["zero-failures", "negative-failures", "fraction-one", "fraction-negative"],
)
def test_backoff_rejects_bad_arguments(failures, random_fraction):
    with pytest.raises(ValueError):
        backoff_delay(failures, now=NOW, not_after=None, random_fraction=random_fraction)


_failures = st.integers(min_value=1, max_value=10_000)
_fractions = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
_remaining = st.timedeltas(min_value=-dt.timedelta(days=10), max_value=dt.timedelta(days=800))


@given(failures=_failures, random_fraction=_fractions, remaining=st.none() | _remaining)
def test_delay_is_bounded(failures, random_fraction, remaining):
    not_after = None if remaining is None else NOW + remaining
    delay = backoff_delay(failures, now=NOW, not_after=not_after, random_fraction=random_fraction)
    assert MIN <= delay <= DAY * 1.1


@given(failures=_failures, random_fraction=_fractions)
def test_delay_within_ten_percent_of_base(failures, random_fraction):
    base = min(minutes(5) * 2 ** min(failures - 1, 20), DAY)
    delay = backoff_delay(failures, now=NOW, not_after=None, random_fraction=random_fraction)
    assert base * 0.9 <= delay <= base * 1.1


@given(first=_failures, second=_failures, random_fraction=_fractions)
def test_delay_non_decreasing_in_failures(first, second, random_fraction):
    fewer, more = sorted((first, second))
    kwargs = {"now": NOW, "not_after": None, "random_fraction": random_fraction}
    assert backoff_delay(fewer, **kwargs) <= backoff_delay(more, **kwargs)


@given(failures=_failures, random_fraction=_fractions, remaining=_remaining)
def test_retry_never_past_expiry(failures, random_fraction, remaining):
    assume(remaining > minutes(4))
    not_after = NOW + remaining
    retry_at = next_retry_at(failures, now=NOW, not_after=not_after, random_fraction=random_fraction)
    assert NOW < retry_at <= not_after
    assert retry_at - NOW <= remaining / 4 or retry_at - NOW == MIN


@given(failures=_failures, low=_fractions, high=_fractions)
def test_delay_non_decreasing_in_random_fraction(failures, low, high):
    low, high = sorted((low, high))
    kwargs = {"now": NOW, "not_after": None}
    assert backoff_delay(failures, random_fraction=low, **kwargs) <= backoff_delay(
        failures, random_fraction=high, **kwargs
    )
