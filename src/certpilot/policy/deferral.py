"""When a deferred request is polled next, and when it is given up.

A CA that answers `Pending(retry_after_s, cookie)` names its own wait; the wait is
clamped to `[min_poll_s, max_poll_s]` (a CA asking for 0 s must not be hammered,
one asking for a week is still looked at daily), and never runs past the
deferral's deadline: `deferred_since` plus the profile's `max_pending_days`.
"""

from __future__ import annotations

import datetime as dt

MIN_POLL_S = 30
MAX_POLL_S = 24 * 3600


def deferral_deadline(deferred_since: dt.datetime, max_pending_days: int) -> dt.datetime:
    """The instant after which a deferral fails."""
    return deferred_since + dt.timedelta(days=max_pending_days)


def clamp_poll_s(retry_after_s: int, *, min_poll_s: float = MIN_POLL_S, max_poll_s: float = MAX_POLL_S) -> float:
    """The CA's `retry_after_s` held within `[min_poll_s, max_poll_s]`."""
    return float(min(max(retry_after_s, min_poll_s), max_poll_s))


def next_poll_at(
    retry_after_s: int, now: dt.datetime, *, deferred_since: dt.datetime, max_pending_days: int,
    min_poll_s: float = MIN_POLL_S, max_poll_s: float = MAX_POLL_S,
) -> dt.datetime:
    """When to poll a request the CA has just answered `Pending(retry_after_s)` to: the
    clamped wait from `now`, but no later than the deferral's deadline."""
    wait = clamp_poll_s(retry_after_s, min_poll_s=min_poll_s, max_poll_s=max_poll_s)
    return min(now + dt.timedelta(seconds=wait), deferral_deadline(deferred_since, max_pending_days))


def is_deferral_overdue(deferred_since: dt.datetime, max_pending_days: int, now: dt.datetime) -> bool:
    """The CA has had its `max_pending_days` and not issued."""
    return now >= deferral_deadline(deferred_since, max_pending_days)
