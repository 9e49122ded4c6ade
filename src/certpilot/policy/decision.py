"""The next action for one certificate, decided from a snapshot and `now`.

`decide` runs an ordered chain of small pure checks over one `CertificateSnapshot`;
the first check that fires returns the `Decision`. When none fires the result is
`Action.NOTHING` with `at` set to the earliest future instant at which something
falls due. The chain, in order:

1. MARK_EXPIRED  the served revision has expired and no CERT_EXPIRED is recorded
                 (cheap bookkeeping; it comes first so a later renewal cannot hide
                 that the served certificate did expire)
2. RENEW/ISSUE   a manual renewal was requested: now, skipping any backoff (and
                 abandoning a deferred request)
3. GIVE_UP       a deferred request has waited the profile's `max_pending_days`:
                 it is recorded as failed (backoff, then a fresh submission)
4. POLL          a deferred request's poll time has come
5. ISSUE         no revision yet (pending or failed) and not backing off
   DEPLOY        the served revision is not deployed yet (a profile with a deploy
                 root) and its deployment is not backing off (a backoff of its own)
6. RENEW         the renewal time has passed and not backing off (the time drawn in the
                 CA's suggested window when there is one, see `policy.renewal_info`)
   CHECK_RENEWAL_INFO  the CA's renewal window is to be asked for (after a new revision,
                 then at the CA's Retry-After); never for an expired or deferred one
7. WARN          warning days were newly crossed; this comes after RENEW so a
                 healthy certificate that renews on time (by default at 2/3 of its
                 lifetime, which is exactly the 30-day mark for a 90-day
                 certificate) produces no CERT_EXPIRING noise: warnings fire when
                 the renewal is not happening (not yet due, backing off, deferred).
                 While the time drawn in the CA's window is still ahead the renewal
                 is on time: no warning until that time has passed
8. NOTHING       reason BACKOFF_WAITING, DEFERRED_WAITING or NOT_DUE

A certificate is deferred while `deferred_since` is set (or its phase is
`deferred`): the CA holds a request of ours and neither ISSUE nor RENEW fires.

MARK_EXPIRED, WARN and GIVE_UP are bookkeeping: the caller records them and calls `decide`
again with the updated snapshot. Never raises for an expected outcome.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from certpilot.domain.model import Phase, RenewalSettings
from certpilot.policy.deferral import deferral_deadline, is_deferral_overdue
from certpilot.policy.expiry import applicable_warning_days, is_expired, newly_crossed_warnings, next_warning_at
from certpilot.policy.renewal import renewal_time
from certpilot.policy.renewal_info import effective_renewal_time


class Action(str, enum.Enum):
    ISSUE = "issue"  # obtain the first revision (new key, CSR, script)
    RENEW = "renew"  # obtain the next revision with a new key
    POLL = "poll"  # ask the issuer again about a deferred request
    GIVE_UP = "give_up"  # record a deferred request that waited too long as failed
    DEPLOY = "deploy"  # write the served revision to the profile's deploy root, run its command
    CHECK_RENEWAL_INFO = "check_renewal_info"  # ask the CA for its suggested renewal window (RFC 9773)
    WARN = "warn"  # record one CERT_EXPIRING per day in `Decision.warn_days`
    MARK_EXPIRED = "mark_expired"  # record CERT_EXPIRED, set phase expired
    NOTHING = "nothing"  # look again at `Decision.at`


class Reason(str, enum.Enum):
    """Stable codes: safe to store, log and show."""

    EXPIRED = "expired"
    RENEWAL_REQUESTED = "renewal_requested"
    DEFERRED_POLL_DUE = "deferred_poll_due"
    DEFERRAL_TOO_LONG = "deferral_too_long"
    NO_REVISION = "no_revision"
    RETRY_AFTER_FAILURE = "retry_after_failure"
    RENEWAL_DUE = "renewal_due"
    RENEWAL_WINDOW = "renewal_window"  # the time drawn in the renewal window the CA suggested has come
    RENEWAL_INFO_DUE = "renewal_info_due"
    DEPLOY_DUE = "deploy_due"
    DEPLOY_RETRY = "deploy_retry"
    WARNING_DAY_CROSSED = "warning_day_crossed"
    BACKOFF_WAITING = "backoff_waiting"
    DEFERRED_WAITING = "deferred_waiting"
    NOT_DUE = "not_due"


@dataclass(frozen=True)
class CertificateSnapshot:
    """What `decide` needs to know about one certificate.

    `not_before`/`not_after` are the current revision's validity (both set exactly
    when `has_revision`). `failures` counts consecutive failed attempts and
    `retry_at` is the stored retry time; together they say whether the
    certificate is backing off. `deferred_poll_at` is when a deferred request is
    polled next (None: `retry_at` is used; both None: poll now); `deferred_since`
    when the CA first deferred it (None for a deferral of unknown age: never given up).
    `warned_days` are the warning days already recorded for this revision.
    `renewal_info_renew_at` is the time drawn in the CA's suggested renewal window for
    the current revision (None: no window, the profile's rule decides);
    `renewal_info_check_at` when the CA is asked for it next (None: never).
    Raises ValueError for an inconsistent snapshot.
    """

    phase: Phase
    has_revision: bool
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    renewal: RenewalSettings
    failures: int = 0
    retry_at: dt.datetime | None = None
    renewal_requested: bool = False
    deferred_poll_at: dt.datetime | None = None
    deferred_since: dt.datetime | None = None
    warned_days: frozenset[int] = frozenset()
    expired_event_recorded: bool = False
    # deployment: the served revision is not deployed yet (the profile has a deploy root);
    # a failed deployment waits for `deploy_retry_at`, a backoff of its own
    deploy_pending: bool = False
    deploy_retry_at: dt.datetime | None = None
    # ACME Renewal Information (RFC 9773), see `policy.renewal_info`
    renewal_info_renew_at: dt.datetime | None = None
    renewal_info_check_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.has_revision and (self.not_before is None or self.not_after is None):
            raise ValueError("a snapshot with a revision needs not_before and not_after")
        if self.failures < 0:
            raise ValueError(f"failures must be >= 0, got {self.failures}")

    @property
    def renew_at(self) -> dt.datetime | None:
        """The current revision's renewal time (the CA's window decides where it gave one),
        or None without a revision."""
        if self.not_before is None or self.not_after is None:
            return None
        return effective_renewal_time(renewal_time(self.not_before, self.not_after, self.renewal),
                                      self.renewal_info_renew_at, self.not_after)

    @property
    def warning_days(self) -> tuple[int, ...]:
        """The profile's warning days that fit in the current revision's lifetime."""
        if self.not_before is None or self.not_after is None:
            return ()
        return applicable_warning_days(self.renewal.warning_days, self.not_before, self.not_after)

    @property
    def poll_at(self) -> dt.datetime | None:
        """When a deferred request is polled next; None means now."""
        return self.deferred_poll_at if self.deferred_poll_at is not None else self.retry_at


@dataclass(frozen=True)
class Decision:
    """`at`: for NOTHING, when to look again (None: nothing will ever fall due);
    None for every other action, which is due now. `warn_days`: for WARN, the days
    crossed, largest first."""

    action: Action
    reason: Reason
    at: dt.datetime | None = None
    warn_days: tuple[int, ...] = ()


def is_backing_off(snapshot: CertificateSnapshot, now: dt.datetime) -> bool:
    """True while a failed certificate waits for its stored retry time."""
    return (
        snapshot.failures > 0
        and snapshot.retry_at is not None
        and now < snapshot.retry_at
    )


def _is_deferred(s: CertificateSnapshot) -> bool:
    return s.phase is Phase.DEFERRED or s.deferred_since is not None


def _deadline(s: CertificateSnapshot) -> dt.datetime | None:
    if s.deferred_since is None:
        return None
    return deferral_deadline(s.deferred_since, s.renewal.max_pending_days)


def _is_served_and_expired(s: CertificateSnapshot, now: dt.datetime) -> bool:
    return s.has_revision and s.not_after is not None and is_expired(s.not_after, now)


def _check_expired(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if _is_served_and_expired(s, now) and not s.expired_event_recorded:
        return Decision(Action.MARK_EXPIRED, Reason.EXPIRED)
    return None


def _check_manual_request(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if s.renewal_requested:
        return Decision(Action.RENEW if s.has_revision else Action.ISSUE, Reason.RENEWAL_REQUESTED)
    return None


def _check_deferral_too_long(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if (_is_deferred(s) and s.deferred_since is not None
            and is_deferral_overdue(s.deferred_since, s.renewal.max_pending_days, now)):
        return Decision(Action.GIVE_UP, Reason.DEFERRAL_TOO_LONG)
    return None


def _check_deferred_poll(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if _is_deferred(s) and (s.poll_at is None or s.poll_at <= now):
        return Decision(Action.POLL, Reason.DEFERRED_POLL_DUE)
    return None


def _check_first_issue(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if s.has_revision or _is_deferred(s) or is_backing_off(s, now):
        return None
    reason = Reason.RETRY_AFTER_FAILURE if s.failures else Reason.NO_REVISION
    return Decision(Action.ISSUE, reason)


def _check_deploy(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    """Deploy the served revision; comes before RENEW so that a renewal that keeps failing
    never keeps the current revision from the servers, and a failing deployment never
    causes a re-issue (its retries are its own)."""
    if not (s.has_revision and s.deploy_pending):
        return None
    if s.deploy_retry_at is not None and now < s.deploy_retry_at:
        return None
    return Decision(Action.DEPLOY, Reason.DEPLOY_RETRY if s.deploy_retry_at is not None else Reason.DEPLOY_DUE)


def _check_renewal_due(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    renew_at = s.renew_at
    if renew_at is None or _is_deferred(s) or is_backing_off(s, now) or now < renew_at:
        return None
    if s.failures:
        reason = Reason.RETRY_AFTER_FAILURE
    else:
        reason = Reason.RENEWAL_WINDOW if s.renewal_info_renew_at is not None else Reason.RENEWAL_DUE
    return Decision(Action.RENEW, reason)


def _is_renewal_info_checked(s: CertificateSnapshot, now: dt.datetime) -> bool:
    """RFC 9773 §4.3: never for an expired certificate; nor while the CA holds a request."""
    return (s.renewal_info_check_at is not None and s.has_revision and not _is_deferred(s)
            and not _is_served_and_expired(s, now))


def _check_renewal_info(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if _is_renewal_info_checked(s, now) and s.renewal_info_check_at is not None and s.renewal_info_check_at <= now:
        return Decision(Action.CHECK_RENEWAL_INFO, Reason.RENEWAL_INFO_DUE)
    return None


def _is_waiting_for_the_cas_window(s: CertificateSnapshot, now: dt.datetime) -> bool:
    """The CA suggested a later renewal (RFC 9773) and its time has not come: the renewal is
    on time, so crossing a warning day is not announced (it is, once the time has passed)."""
    renew_at = s.renew_at
    return s.renewal_info_renew_at is not None and renew_at is not None and now < renew_at


def _check_warning(s: CertificateSnapshot, now: dt.datetime) -> Decision | None:
    if not s.has_revision or s.not_after is None or is_expired(s.not_after, now):
        return None
    if _is_waiting_for_the_cas_window(s, now):
        return None
    crossed = newly_crossed_warnings(s.not_after, now, s.warning_days, s.warned_days)
    if crossed:
        return Decision(Action.WARN, Reason.WARNING_DAY_CROSSED, warn_days=crossed)
    return None


_Check = Callable[[CertificateSnapshot, dt.datetime], Decision | None]

CHECKS: tuple[_Check, ...] = (
    _check_expired,
    _check_manual_request,
    _check_deferral_too_long,
    _check_deferred_poll,
    _check_first_issue,
    _check_deploy,
    _check_renewal_due,
    _check_renewal_info,
    _check_warning,
)


def _wait(s: CertificateSnapshot, now: dt.datetime) -> Decision:
    """NOTHING, with the earliest future instant at which a check may fire."""
    candidates: list[dt.datetime | None] = []
    if _is_deferred(s):
        reason = Reason.DEFERRED_WAITING
        candidates.append(s.poll_at)
        candidates.append(_deadline(s))
    elif is_backing_off(s, now):
        reason = Reason.BACKOFF_WAITING
        candidates.append(s.retry_at)
    else:
        reason = Reason.NOT_DUE
        candidates.append(s.renew_at)
    if s.has_revision and s.not_after is not None and not is_expired(s.not_after, now):
        candidates.append(s.not_after)
        if _is_waiting_for_the_cas_window(s, now):
            candidates.append(s.renew_at)  # warnings are looked at again once its time has passed
        else:
            candidates.append(next_warning_at(s.not_after, now, s.warning_days, s.warned_days))
    if s.has_revision and s.deploy_pending:
        candidates.append(s.deploy_retry_at)
    if _is_renewal_info_checked(s, now):
        candidates.append(s.renewal_info_check_at)
    future = [at for at in candidates if at is not None and at > now]
    return Decision(Action.NOTHING, reason, at=min(future, default=None))


def decide(snapshot: CertificateSnapshot, now: dt.datetime) -> Decision:
    """The next action for `snapshot` at `now`: the first check in `CHECKS` that
    fires, else NOTHING with the time of the next look. Raises nothing."""
    for check in CHECKS:
        decision = check(snapshot, now)
        if decision is not None:
            return decision
    return _wait(snapshot, now)
