"""Pure decisions about a certificate's life: renewal time, backoff, expiry, next action.

Nothing here reads the clock, touches I/O or draws random numbers: `now` and the
random fraction for jitter are always parameters.
"""

from certpilot.policy.backoff import backoff_delay, next_retry_at
from certpilot.policy.decision import (
    Action,
    CertificateSnapshot,
    Decision,
    Reason,
    decide,
    is_backing_off,
)
from certpilot.policy.expiry import (
    applicable_warning_days,
    days_left,
    expiry_status,
    is_expired,
    is_expiring_within,
    newly_crossed_warnings,
    next_warning_at,
    warning_threshold_at,
)
from certpilot.policy.renewal import renewal_time

__all__ = [
    "applicable_warning_days",
    "Action",
    "CertificateSnapshot",
    "Decision",
    "Reason",
    "backoff_delay",
    "days_left",
    "decide",
    "expiry_status",
    "is_backing_off",
    "is_expired",
    "is_expiring_within",
    "newly_crossed_warnings",
    "next_retry_at",
    "next_warning_at",
    "renewal_time",
    "warning_threshold_at",
]
