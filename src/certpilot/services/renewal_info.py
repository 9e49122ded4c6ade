"""Asking the CA for its suggested renewal window (ACME Renewal Information, RFC 9773).

The policy's CHECK_RENEWAL_INFO: where a certificate's script defines
`certificate_renewal_info(cert_pem, args_dict[, context])`, the loop calls it after each
new revision and again at the CA's Retry-After (clamped, `policy.renewal_info`). The
answer is validated here, where it enters: None (the CA offers no window: asked again
after `MAX_CHECK_S`), or a window whose uniformly drawn time becomes the renewal time.
A failed check keeps what was known and is retried after `ERROR_RETRY_S`; it never
touches issuance (no failure count, no backoff).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from certpilot.domain.model import Certificate, Profile
from certpilot.issuer import DEFAULT_RENEWAL_INFO_RETRY_AFTER_S
from certpilot.issuers.messages import OPERATION_RENEWAL_INFO
from certpilot.issuers.runner import Failed, RenewalInfoAnswer, ScriptCall, ScriptResult
from certpilot.policy.renewal_info import (
    ERROR_RETRY_S,
    MAX_CHECK_S,
    SuggestedWindow,
    next_check_at,
    time_in_window,
)
from certpilot.services import scheduling
from certpilot.services.app import App
from certpilot.services.issuance import STATE_SCRUB_MIN_CHARS
from certpilot.store import renewal_info as store
from certpilot.store import schedule, script_state
from certpilot.store import certificates as repo
from certpilot.store import profiles as profile_repo
from certpilot.store import scripts as script_repo
from certpilot.store.renewal_info import RenewalInfoRecord

log = logging.getLogger("certpilot.renewal_info")

ERROR_CHARS = 1000
URL_CHARS = 2048


@dataclass(frozen=True)
class Answer:
    """A validated `certificate_renewal_info` answer; `window` None: the CA suggests none."""

    window: SuggestedWindow | None
    retry_after_s: float
    explanation_url: str | None = None


def _instant(value: Any, what: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"the renewal window's {what} is not an RFC 3339 time: {value[:64]!r}") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ValueError(f"the renewal window's {what} must be a time with its time zone")
    return value.astimezone(dt.timezone.utc)


def parse_answer(window: dict[str, Any] | None) -> Answer:
    """The script's answer (as the host sent it) validated; raises ValueError."""
    if window is None:
        return Answer(None, MAX_CHECK_S)
    if not isinstance(window, dict):
        raise ValueError("certificate_renewal_info must return None, a RenewalWindow or a dict")
    retry = window.get("retry_after_s")
    if retry is None:
        retry = DEFAULT_RENEWAL_INFO_RETRY_AFTER_S
    if isinstance(retry, bool) or not isinstance(retry, (int, float)):
        raise ValueError(f"the renewal window's retry_after_s must be a number of seconds, not {retry!r}")
    url = window.get("explanation_url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))
                            or len(url) > URL_CHARS):
        raise ValueError("the renewal window's explanation_url must be an http(s) URL")
    return Answer(SuggestedWindow(_instant(window.get("start"), "start"), _instant(window.get("end"), "end")),
                  float(retry), url)


def _args(cert: Certificate, profile: Profile) -> dict[str, str]:
    values = cert.spec.dynamic_params
    return {p.name: (values.get(p.name, "") if p.dynamic else p.value or "") for p in profile.params}


def _secrets(cert: Certificate, profile: Profile, state: dict[str, str]) -> tuple[str, ...]:
    """Masked in what the call says, as for an issuance (see `issuance._secrets`)."""
    values = [p.value for p in profile.params if p.sensitive and p.value]
    values += [cert.spec.dynamic_params[n] for n in cert.sensitive_params]
    values += [v for v in state.values() if len(v) >= STATE_SCRUB_MIN_CHARS]
    return tuple(v for v in values if v)


def _call(app: App, session: Any, name: str, now: dt.datetime) -> tuple[ScriptCall, RenewalInfoRecord] | None:
    cert = repo.get_certificate(session, name, now, app.sealer)
    revision = repo.current_revision(session, name)
    if revision is None:
        return None
    profile = profile_repo.get_profile(session, cert.spec.profile, app.sealer)
    script = script_repo.get_script(session, profile.script)
    state = script_state.load(session, profile.name, app.sealer)
    call = ScriptCall(
        script_name=script.name, source=script.source, timeout_s=script.timeout_s, csr_pem="",
        common_name=cert.spec.subject.common_name, args=_args(cert, profile),
        secrets=_secrets(cert, profile, state),
        context={"certificate_name": name, "profile_name": profile.name,
                 "subject_alt_names": [str(s) for s in cert.spec.subject_alt_names],
                 "key_algorithm": str(cert.spec.key), "previous_certificate": None},
        profile=profile.name, concurrency=profile.sandbox.concurrency,
        allow_read=profile.sandbox.allow_read, allow_write=profile.sandbox.allow_write,
        operation=OPERATION_RENEWAL_INFO, state=state,
        certificate_pem=revision.leaf_pem.rstrip() + "\n" + revision.chain_pem,
    )
    return call, store.load(session, name)


def outcome(result: ScriptResult, known: RenewalInfoRecord, now: dt.datetime, *, random_fraction: float,
            min_check_s: float) -> RenewalInfoRecord:
    """What a check's result makes of the record: a window and the time drawn in it, no
    window, or the error with the window known before kept."""
    try:
        if isinstance(result, Failed):
            raise ValueError(result.error)
        if not isinstance(result, RenewalInfoAnswer):
            raise ValueError("certificate_renewal_info answered neither None nor a renewal window")
        answer = parse_answer(result.window)
    except ValueError as exc:
        return RenewalInfoRecord(known.window_start, known.window_end, known.renew_at, now,
                                 next_check_at(ERROR_RETRY_S, now, min_check_s=min_check_s),
                                 known.explanation_url, str(exc)[:ERROR_CHARS] or "the check failed")
    check_at = next_check_at(answer.retry_after_s, now, min_check_s=min_check_s)
    if answer.window is None:
        return RenewalInfoRecord(checked_at=now, check_at=check_at)
    renew_at = time_in_window(answer.window, random_fraction=random_fraction, previous=known.renew_at)
    return RenewalInfoRecord(answer.window.start, answer.window.end, renew_at, now, check_at,
                             answer.explanation_url)


def check_leased(app: App, name: str, *, owner: str) -> None:
    """Ask the CA for `name`'s renewal window and record the answer; the caller holds the
    lease (it is extended for the script's timeout). Raises `NotFound`."""
    now = app.clock.now()
    with app.db.transaction() as session:
        timeout_s = script_repo.timeout_of_certificate_script(session, name)
        schedule.claim(session, name, owner=owner, now=now,
                       lease_until=now + dt.timedelta(seconds=timeout_s + app.settings.lease_margin_s))
        prepared = _call(app, session, name, now)
        if prepared is None:  # no revision (any more): nothing to ask about
            store.save(session, name, RenewalInfoRecord())
            scheduling.reschedule(session, name, now)
            return
    call, known = prepared
    try:
        result: ScriptResult = app.runner.call(call)
    except Exception as exc:  # the runner itself broke: a failed check, retried later
        result = Failed(f"the script runner failed: {exc}")
    now = app.clock.now()
    record = outcome(result, known, now, random_fraction=app.random_fraction(),
                     min_check_s=app.settings.renewal_info_min_check_s)
    with app.db.transaction() as session:
        if result.state_changes is not None:
            script_state.apply(session, call.profile, app.sealer, result.state_changes, now)
        store.save(session, name, record)
        scheduling.reschedule(session, name, now)
    if record.error:
        log.warning("%s: asking the CA for its renewal window failed: %s", name, record.error)
    elif record.window_start is not None:
        log.info("%s: the CA suggests renewing between %s and %s; renewing at %s", name,
                 record.window_start.isoformat(), record.window_end.isoformat() if record.window_end else "?",
                 record.renew_at.isoformat() if record.renew_at else "?")
