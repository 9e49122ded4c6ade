"""Renewal time: when a certificate with a given validity should be renewed.

Pure: no clock, no I/O. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt

from certpilot.domain.model import RenewalSettings

#: Share of the lifetime after which a certificate is renewed when the profile
#: names neither `renew_before_days` nor `renew_before_percent`.
DEFAULT_RENEW_AT_FRACTION = 2 / 3


def renewal_time(
    not_before: dt.datetime, not_after: dt.datetime, settings: RenewalSettings
) -> dt.datetime:
    """When a certificate valid from `not_before` to `not_after` falls due for renewal.

    - `settings.renew_before_days` set: `not_after - renew_before_days`;
    - else `settings.renew_before_percent` P set: `not_before + (1 - P/100) * lifetime`;
    - else `not_before + 2/3 * lifetime`.

    The result is always clamped to `[not_before, not_after]`, so a setting longer
    than the lifetime means "renew as soon as it is issued". A certificate whose
    `not_after` is not after `not_before` is due at its `not_after`. Raises nothing.
    """
    if not_after <= not_before:
        return not_after
    lifetime = not_after - not_before
    if settings.renew_before_days is not None:
        due = not_after - dt.timedelta(days=settings.renew_before_days)
    elif settings.renew_before_percent is not None:
        due = not_before + lifetime * (1 - settings.renew_before_percent / 100)
    else:
        due = not_before + lifetime * DEFAULT_RENEW_AT_FRACTION
    return min(max(due, not_before), not_after)
