"""Expiry: how long a certificate has left, its expiry status, and which warning
days it has crossed.

A warning day d is crossed once at most d days remain (`not_after - now <= d days`,
measured exactly, not in whole days); expiry is reached at `now >= not_after`.
Pure: `now` is always a parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable

from certpilot.domain.model import ExpiryStatus

ONE_DAY = dt.timedelta(days=1)


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days until `not_after`, rounded down; negative once expired
    (-1 during the first day after expiry)."""
    return (not_after - now) // ONE_DAY


def is_expired(not_after: dt.datetime, now: dt.datetime) -> bool:
    """True from the instant `not_after` is reached."""
    return now >= not_after


def is_expiring_within(not_after: dt.datetime, now: dt.datetime, days: int) -> bool:
    """True when at most `days` days remain, expired certificates included
    (`cert list --expiring-within DAYS`)."""
    return not_after - now <= dt.timedelta(days=days)


def warning_threshold_at(not_after: dt.datetime, day: int) -> dt.datetime:
    """The instant the warning day `day` is crossed: `not_after - day days`."""
    return not_after - dt.timedelta(days=day)


def expiry_status(
    not_after: dt.datetime, now: dt.datetime, warning_days: Iterable[int]
) -> ExpiryStatus:
    """EXPIRED when `now >= not_after`; WARNING when at most `max(warning_days)` days
    remain; else GOOD (always GOOD before expiry when `warning_days` is empty)."""
    if is_expired(not_after, now):
        return ExpiryStatus.EXPIRED
    widest = max(warning_days, default=None)
    if widest is not None and is_expiring_within(not_after, now, widest):
        return ExpiryStatus.WARNING
    return ExpiryStatus.GOOD


def newly_crossed_warnings(
    not_after: dt.datetime,
    now: dt.datetime,
    warning_days: Iterable[int],
    already_warned: Collection[int],
) -> tuple[int, ...]:
    """Warning days crossed by `now` and not in `already_warned`, largest first.

    When several are crossed at once (the controller was down, or a short-lived
    certificate), all of them are returned so the caller can record them all;
    the caller emits one CERT_EXPIRING event per day returned. Expired
    certificates are not filtered out here: `decide` does not warn after expiry.
    """
    return tuple(
        sorted(
            (
                day
                for day in set(warning_days)
                if day not in already_warned and is_expiring_within(not_after, now, day)
            ),
            reverse=True,
        )
    )


def next_warning_at(
    not_after: dt.datetime,
    now: dt.datetime,
    warning_days: Iterable[int],
    already_warned: Collection[int],
) -> dt.datetime | None:
    """The earliest future instant at which a not-yet-warned day is crossed, or None."""
    upcoming = [
        warning_threshold_at(not_after, day)
        for day in set(warning_days)
        if day not in already_warned
    ]
    return min((at for at in upcoming if at > now), default=None)


def applicable_warning_days(
    warning_days: Iterable[int], not_before: dt.datetime, not_after: dt.datetime
) -> tuple[int, ...]:
    """The warning days that can mean something for this lifetime: a day at or past
    the whole lifetime would fire at issuance (a 7-day certificate warned "30 days
    left" the moment it is issued), so it is left out."""
    lifetime = not_after - not_before
    return tuple(d for d in warning_days if dt.timedelta(days=d) < lifetime)
