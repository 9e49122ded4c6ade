"""Backoff after failed issuance attempts: how long to wait before the next try.

n consecutive failures wait `min(5 min * 2^(n-1), 24 h)` with +-10 % jitter, never
longer than a quarter of the certificate's remaining lifetime and never shorter
than one minute. The jitter comes from an injected random fraction in [0, 1),
so the functions stay pure and tests can pin it.
"""

from __future__ import annotations

import datetime as dt

BASE_DELAY = dt.timedelta(minutes=5)
MAX_DELAY = dt.timedelta(hours=24)
MIN_DELAY = dt.timedelta(minutes=1)
JITTER_FRACTION = 0.10
#: Share of the remaining lifetime that one wait may use at most.
REMAINING_LIFETIME_SHARE = 0.25

# 5 min * 2^9 already exceeds 24 h; capping the exponent keeps huge n cheap and
# free of overflow.
_MAX_EXPONENT = 16


def backoff_delay(
    failures: int,
    *,
    now: dt.datetime,
    not_after: dt.datetime | None,
    random_fraction: float,
) -> dt.timedelta:
    """The wait after `failures` (>= 1) consecutive failed attempts.

    `random_fraction` in [0, 1) maps linearly to a jitter factor in [0.9, 1.1).
    With `not_after` (the expiry of the certificate still served), the wait is at
    most a quarter of `not_after - now`; the result is never below one minute.
    Raises ValueError when `failures < 1` or `random_fraction` is outside [0, 1).
    """
    if failures < 1:
        raise ValueError(f"failures must be >= 1, got {failures}")
    if not 0.0 <= random_fraction < 1.0:
        raise ValueError(f"random_fraction must be in [0, 1), got {random_fraction}")
    base = min(BASE_DELAY * (2 ** min(failures - 1, _MAX_EXPONENT)), MAX_DELAY)
    jitter_factor = 1.0 + JITTER_FRACTION * (2.0 * random_fraction - 1.0)
    delay = base * jitter_factor
    if not_after is not None:
        delay = min(delay, (not_after - now) * REMAINING_LIFETIME_SHARE)
    return max(delay, MIN_DELAY)


def next_retry_at(
    failures: int,
    *,
    now: dt.datetime,
    not_after: dt.datetime | None,
    random_fraction: float,
) -> dt.datetime:
    """`now + backoff_delay(...)`: when the next attempt may start. Raises as `backoff_delay`."""
    return now + backoff_delay(
        failures, now=now, not_after=not_after, random_fraction=random_fraction
    )
