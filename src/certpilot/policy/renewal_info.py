"""The CA's suggested renewal window (ACME Renewal Information, RFC 9773).

Where a certificate's script defines `certificate_renewal_info`, the controller asks
the CA for a window after each new revision and again when the CA's Retry-After has
passed (clamped to `[min_check_s, max_check_s]`). Rules, all pure:

- the renewal time is a uniformly random instant in the window (RFC 9773 §4.2), drawn
  once per window: a re-check that returns the same window keeps the time drawn before,
  so that asking often does not pull the renewal earlier;
- when a window is known it decides, instead of the profile's renew-before rule (the
  CA may know that the certificate is about to be revoked), but never later than the
  certificate's `not_after`; a window in the past means "renew now";
- without a window (the CA offers none, or was never asked) the profile's rule stands.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

MIN_CHECK_S = 3600  # the soonest the CA is asked again, whatever its Retry-After says
MAX_CHECK_S = 24 * 3600  # the longest between two checks (also when the CA offered no window)
ERROR_RETRY_S = MIN_CHECK_S  # after a check that failed


@dataclass(frozen=True)
class SuggestedWindow:
    """`start` <= `end`, both timezone-aware. Raises ValueError otherwise."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a renewal window needs timezone-aware start and end")
        if self.end < self.start:
            raise ValueError(f"a renewal window ends ({self.end.isoformat()}) before it starts "
                             f"({self.start.isoformat()})")

    def contains(self, at: dt.datetime) -> bool:
        return self.start <= at <= self.end


def clamp_check_s(retry_after_s: float, *, min_check_s: float = MIN_CHECK_S, max_check_s: float = MAX_CHECK_S) -> float:
    """The CA's Retry-After held within `[min_check_s, max_check_s]`."""
    return float(min(max(retry_after_s, min_check_s), max_check_s))


def next_check_at(retry_after_s: float, now: dt.datetime, *, min_check_s: float = MIN_CHECK_S,
                  max_check_s: float = MAX_CHECK_S) -> dt.datetime:
    """When to ask the CA again after an answer carrying `retry_after_s`."""
    return now + dt.timedelta(seconds=clamp_check_s(retry_after_s, min_check_s=min_check_s, max_check_s=max_check_s))


def time_in_window(window: SuggestedWindow, *, random_fraction: float,
                   previous: dt.datetime | None = None) -> dt.datetime:
    """The renewal time for `window`: `previous` when it lies inside the window (drawn
    for it before), else `start + random_fraction * (end - start)`. `random_fraction`
    in [0, 1); raises ValueError outside it."""
    if not 0.0 <= random_fraction < 1.0:
        raise ValueError(f"random_fraction must be in [0, 1), got {random_fraction}")
    if previous is not None and window.contains(previous):
        return previous
    return window.start + (window.end - window.start) * random_fraction


def effective_renewal_time(profile_renew_at: dt.datetime, window_renew_at: dt.datetime | None,
                           not_after: dt.datetime) -> dt.datetime:
    """When the certificate is renewed: the time drawn in the CA's window when there is
    one (never after `not_after`), else the profile's own renewal time."""
    if window_renew_at is None:
        return profile_renew_at
    return min(window_renew_at, not_after)
