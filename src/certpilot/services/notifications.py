"""Notifications: a webhook POST and an e-mail for the events people must hear about.

    event recorded -> outbox row in the same transaction (store.outbox) -> a renewal
    loop leases due rows (as certificates are leased) -> POST / SMTP -> delivered,
    or retried with backoff until the receiver answers 2xx, for 3 days, then dropped
    (a NOTIFICATION_DROPPED event says so)

Bodies carry the event as recorded (errors there are already scrubbed) and are
scrubbed again at delivery against the profile's sensitive values.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from sqlalchemy.orm import Session

from certpilot.clock import monotonic_s
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import SENSITIVE_MASK, EventKind, NotifySettings
from certpilot.issuers.capture import scrub
from certpilot.policy.notification import DEFERRAL_NOTICE_AFTER, is_given_up, retry_delay
from certpilot.services.app import App
from certpilot.store import outbox
from certpilot.store import profiles as profile_repo
from certpilot.store.events import record_event
from certpilot.store.tables import ProfileRow

log = logging.getLogger("certpilot.notifications")

MAX_URL_CHARS = 2048
_EMAIL_RE = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")


def check_notify(url: str | None, email: str | None) -> NotifySettings:
    """Notification targets as given, validated: an http(s) URL with a host (or `***`: keep
    the stored one), an e-mail address. Empty strings count as absent. Raises InvalidInput."""
    url = url.strip() if isinstance(url, str) and url.strip() else None
    email = email.strip() if isinstance(email, str) and email.strip() else None
    if url is not None and url != SENSITIVE_MASK:
        if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
            raise InvalidInput("notify_url is too long or contains spaces or control characters",
                               field="notify_url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput("notify_url must be an http:// or https:// URL with a host", field="notify_url")
    if email is not None and (len(email) > 320 or not email.isascii() or not _EMAIL_RE.fullmatch(email)):
        raise InvalidInput(f"notify_email {email!r} is not an e-mail address", field="notify_email")
    return NotifySettings(url=url, email=email)


# --- delivery --------------------------------------------------------------------------

DELIVERY_TIMEOUT_S = 10.0
LEASE_S = 120  # a lease outlives one delivery (both timeouts) by far
BATCH = 50
MAX_ERROR_CHARS = 500
DEFERRAL_CHECK_EVERY_S = 60.0


class DeliveryFailed(Exception):
    """A receiver did not take a notification; the message is recorded (never a secret)."""


def _hidden_values(app: App, session: Session, profile_id: int) -> list[str]:
    """Every sensitive value a notification of this profile could carry by accident."""
    profile = session.get(ProfileRow, profile_id)
    if profile is None:
        return []
    values = [v for v in (p.value for p in profile_repo.get_profile(session, profile.name, app.sealer).params
                          if p.sensitive) if v]
    url = profile_repo.notify_of(profile, app.sealer).url
    if url:
        values.append(url)
    return values


def send_webhook(url: str, body: bytes, *, timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
    """POST `body` (JSON); anything but a 2xx raises DeliveryFailed. Redirects are not followed."""
    try:
        response = httpx.post(url, content=body, timeout=timeout_s, follow_redirects=False,
                              headers={"Content-Type": "application/json", "User-Agent": "certpilot"})
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"the webhook receiver could not be reached: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"the webhook receiver answered HTTP {response.status_code}")


@dataclass(frozen=True)
class SmtpTarget:
    """A parsed CERTPILOT_SMTP_URL."""

    tls: str  # "starttls" (when offered) or "implicit"
    host: str
    port: int
    username: str | None
    password: str | None
    sender: str
    cafile: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://[user:pass@]host[:port][?from=ADDR&cafile=PATH]` or `smtps://…`. Raises InvalidInput."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise InvalidInput("CERTPILOT_SMTP_URL must look like smtp://host:port or smtps://user:pass@host",
                           field="smtp_url")
    query = dict(parse_qsl(parts.query))
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError:
        raise InvalidInput("CERTPILOT_SMTP_URL has an invalid port", field="smtp_url") from None
    return SmtpTarget(
        tls="implicit" if parts.scheme == "smtps" else "starttls", host=parts.hostname, port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sender=query.get("from") or f"certpilot@{socket.getfqdn() or 'localhost'}",
        cafile=query.get("cafile"),
    )


def send_email(smtp_url: str, to: str, subject: str, text: str, *, timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
    """Send a plain-text mail; STARTTLS whenever the server offers it (smtp://), TLS from the
    first byte (smtps://), login when the URL carries a user. Raises DeliveryFailed."""
    target = parse_smtp_url(smtp_url)
    context = ssl.create_default_context(cafile=target.cafile)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = target.sender, to, subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain="certpilot")
    message.set_content(text)
    try:
        if target.tls == "implicit":
            client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout_s, context=context)
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=timeout_s)
        with client:
            client.ehlo()
            if target.tls == "starttls" and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if target.username is not None:
                client.login(target.username, target.password or "")
            client.send_message(message)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"the mail server answered {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"the mail could not be sent: {type(exc).__name__}") from None


def _deliver_one(app: App, pending: outbox.Pending, targets: tuple[str, bytes | None, str | None] | None,
                 hidden: list[str]) -> None:
    if targets is None:
        raise DeliveryFailed("the profile was removed")
    profile, url_sealed, address = targets
    payload = json.loads(scrub(json.dumps(pending.payload), hidden))  # belt and braces: never a secret
    if pending.channel == outbox.WEBHOOK:
        if url_sealed is None:
            raise DeliveryFailed("the profile no longer has a webhook URL")
        url = app.sealer.open_text(url_sealed, profile_repo.notify_url_identity(profile))
        send_webhook(url, json.dumps(payload).encode())
    elif pending.channel == outbox.EMAIL:
        if address is None:
            raise DeliveryFailed("the profile no longer has a mail address")
        if not app.settings.smtp_url:
            raise DeliveryFailed("CERTPILOT_SMTP_URL is not set: no mail can be sent")
        body = payload["text"] + "\n\n" + json.dumps(
            {k: payload[k] for k in ("event", "certificate", "profile", "at", "details")}, indent=2) + "\n"
        send_email(app.settings.smtp_url, address, str(payload["text"])[:200], body)
    else:
        raise DeliveryFailed(f"unknown channel {pending.channel!r}")


def deliver_due(app: App, *, owner: str, limit: int = BATCH) -> int:
    """Lease due notifications, deliver each, record the outcome. Returns how many were
    delivered. Exactly one delivery per event and channel across workers: a row is sent
    only by its lease holder, and marked in the transaction after the send."""
    now = app.clock.now()
    with app.db.read() as session:  # most passes find nothing: no write lock for that
        if not outbox.is_any_due(session, now):
            return 0
    with app.db.transaction() as session:
        claimed = outbox.claim_due(session, owner=owner, now=now,
                                   lease_until=now + dt.timedelta(seconds=LEASE_S), limit=limit)
        context = {}
        for pending in claimed:
            if pending.profile_id is not None and pending.profile_id not in context:
                context[pending.profile_id] = (outbox.profile_targets(session, pending.profile_id),
                                               _hidden_values(app, session, pending.profile_id))
    delivered = 0
    for pending in claimed:
        targets, hidden = context.get(pending.profile_id, (None, [])) if pending.profile_id else (None, [])
        try:
            _deliver_one(app, pending, targets, hidden)
        except (DeliveryFailed, InvalidInput) as exc:
            _record_failure(app, pending, owner, scrub(str(exc), hidden)[:MAX_ERROR_CHARS])
            continue
        except Exception as exc:  # a broken target must not stop the others
            log.exception("notification %d could not be delivered", pending.id)
            _record_failure(app, pending, owner, f"delivery failed: {type(exc).__name__}")
            continue
        with app.db.transaction() as session:
            if outbox.mark_delivered(session, pending.id, owner=owner, now=app.clock.now()):
                delivered += 1
    return delivered


def _record_failure(app: App, pending: outbox.Pending, owner: str, error: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        if is_given_up(pending.created_at, now):
            if outbox.mark_dropped(session, pending.id, owner=owner, error=error, now=now):
                record_event(session, at=now, actor=f"controller:{owner}", kind=EventKind.NOTIFICATION_DROPPED,
                             object_type="certificate", object_name=str(pending.payload.get("certificate")),
                             details={"event": pending.payload.get("event"), "channel": pending.channel,
                                      "attempts": pending.attempts + 1, "error": error})
                log.error("notification %d (%s) dropped after 3 days: %s", pending.id, pending.channel, error)
            return
        outbox.mark_failed(session, pending.id, owner=owner, error=error,
                           next_attempt_at=now + retry_delay(pending.attempts + 1))
    log.warning("notification %d (%s) not delivered, retried later: %s", pending.id, pending.channel, error)


def record_overdue_deferrals(app: App, *, actor: str) -> int:
    """A CERT_DEFERRAL_OVERDUE event (and so a notification) for each deferral that has waited
    more than a day, once per deferral. Returns how many were recorded."""
    now = app.clock.now()
    with app.db.read() as session:  # usually none: no write lock for that
        if not outbox.overdue_deferrals(session, older_than=now - DEFERRAL_NOTICE_AFTER, lock=False):
            return 0
    with app.db.transaction() as session:
        overdue = outbox.overdue_deferrals(session, older_than=now - DEFERRAL_NOTICE_AFTER)
        for name, since in overdue:
            record_event(session, at=now, actor=actor, kind=EventKind.CERT_DEFERRAL_OVERDUE,
                         object_type="certificate", object_name=name,
                         details={"deferred_since": since.isoformat(),
                                  "waiting_hours": int((now - since).total_seconds() // 3600)})
    return len(overdue)


class Dispatcher:
    """Delivers the outbox in a thread of its own, so that a slow receiver never holds up
    the renewal loop; `poke()` starts a round unless one is running."""

    def __init__(self, app: App, owner: str) -> None:
        self.app, self.owner = app, owner
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._deferrals_checked_at: float | None = None

    def poke(self) -> None:
        with self._lock:
            if self._running is not None and self._running.is_alive():
                return
            self._running = threading.Thread(target=self._round, name="notifications", daemon=True)
            self._running.start()

    def _round(self) -> None:
        try:
            if self._deferrals_checked_at is None or monotonic_s() - self._deferrals_checked_at >= DEFERRAL_CHECK_EVERY_S:
                self._deferrals_checked_at = monotonic_s()
                record_overdue_deferrals(self.app, actor=f"controller:{self.owner}")
            while deliver_due(self.app, owner=self.owner) >= BATCH:
                pass
        except Exception:
            log.exception("delivering notifications failed; trying again at the next pass")

    def wait(self, timeout_s: float = 60.0) -> None:
        """Until the round in progress (if any) has ended."""
        with self._lock:
            running = self._running
        if running is not None:
            running.join(timeout_s)


def list_notifications(app: App) -> list[outbox.NotificationFact]:
    with app.db.read() as session:
        return outbox.list_notifications(session)
