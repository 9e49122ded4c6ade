"""Which events people hear about, in what words, and how a delivery is retried.

Pure: no clock, no I/O. Failures notify on the first failure and then each time the
count of consecutive failures doubles (1, 2, 4, 8, ...), not on every retry; expiry
warnings, expiry, and deferrals still waiting after a day notify once each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

FAILURE_KINDS = frozenset({"CERT_ISSUE_FAILED", "CERT_RENEW_FAILED", "CERT_DEPLOY_FAILED"})
ALWAYS_KINDS = frozenset({"CERT_EXPIRING", "CERT_EXPIRED", "CERT_DEFERRAL_OVERDUE"})

FIRST_RETRY = dt.timedelta(seconds=30)
MAX_RETRY = dt.timedelta(hours=1)
GIVE_UP_AFTER = dt.timedelta(days=3)
DEFERRAL_NOTICE_AFTER = dt.timedelta(days=1)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def is_notified(kind: str, details: Mapping[str, object]) -> bool:
    """Whether an event of `kind` with `details` is sent to the profile's receivers."""
    if kind in ALWAYS_KINDS:
        return True
    if kind in FAILURE_KINDS:
        failures = details.get("failures")
        return isinstance(failures, int) and is_power_of_two(failures)
    return False


def retry_delay(attempts: int) -> dt.timedelta:
    """The wait after `attempts` (>= 1) failed deliveries: 30 s doubling, at most an hour."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    return min(FIRST_RETRY * (2 ** min(attempts - 1, 16)), MAX_RETRY)


def is_given_up(created_at: dt.datetime, now: dt.datetime) -> bool:
    """A notification not delivered within three days is dropped."""
    return now - created_at >= GIVE_UP_AFTER


def summary_text(kind: str, certificate: str, profile: str | None, details: Mapping[str, object]) -> str:
    """One readable sentence (the `text` of a webhook message, the subject of a mail)."""
    text = " ".join(_summary(kind, certificate, profile, details).split())  # one line
    return text if text.endswith((".", "!", "?")) else text + "."


def _summary(kind: str, certificate: str, profile: str | None, details: Mapping[str, object]) -> str:
    failures = details.get("failures")
    error = str(details.get("error") or "").strip().splitlines()
    reason = f": {error[0][:300]}" if error else ""
    times = f" ({failures} failures in a row)" if isinstance(failures, int) and failures > 1 else ""
    where = f" (profile {profile})" if profile else ""
    if kind == "CERT_ISSUE_FAILED":
        return f"certpilot could not issue certificate {certificate}{where}{times}{reason}"
    if kind == "CERT_RENEW_FAILED":
        return (f"certpilot could not renew certificate {certificate}{where}{times}; the current revision is "
                f"still served{reason}")
    if kind == "CERT_DEPLOY_FAILED":
        return f"certpilot could not deploy revision {details.get('revision')} of certificate {certificate}{times}{reason}"
    if kind == "CERT_EXPIRING":
        return f"Certificate {certificate}{where} expires in {details.get('days_left')} day(s), on {details.get('not_after')}."
    if kind == "CERT_EXPIRED":
        return f"Certificate {certificate}{where} has expired (not after {details.get('not_after')})."
    if kind == "CERT_DEFERRAL_OVERDUE":
        return (f"The CA has kept the request for certificate {certificate}{where} waiting since "
                f"{details.get('deferred_since')}.")
    return f"certpilot: {kind} for certificate {certificate}{where}."
