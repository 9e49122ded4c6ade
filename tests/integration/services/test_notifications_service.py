"""Notifications against real receivers on loopback, on SQLite and PostgreSQL: a webhook
(http.server) and an SMTP server (aiosmtpd: plain, STARTTLS, implicit TLS, with a login).
The outbox row is written in its event's transaction; failures notify on the first and at
each doubling; a receiver that is down gets the message later; exactly one delivery per
event across concurrent workers; dropped after 3 days; never a secret in a body."""

from __future__ import annotations

import datetime as dt
import email
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from certpilot.config import Settings
from certpilot.domain.model import DeploySettings, EventKind, NotifySettings, make_subject
from certpilot.issuers.runner import Failed, ScriptCall, ScriptResult
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services import notifications
from certpilot.services.app import App
from certpilot.services.certificates import certificate_events, get_certificate, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.store.database import create_db_engine, upgrade
from certpilot.store.events import record_event
from certpilot.store.tables import NotificationRow
from tests.integration.services.test_issuance_fake_issuer import FakeIssuer, sign_with
from tests.support.receivers import SmtpSink, Webhook, webhook
from tests.support.reconciler import FakeClock, local_ca_params, real_now, whole_seconds

ACTOR = "test:notify"
SMTP_PASSWORD = "smtp-pa55word-n0t-for-bodies"


class SwitchableIssuer(FakeIssuer):
    """Fails with the CA's words (quoting a secret, as careless CAs do) until told to sign."""

    def __init__(self, ca: LocalCA) -> None:
        self.sign = sign_with(ca)
        self.failing = True
        super().__init__(self._answer)
        self.ca = ca

    def _answer(self, call: ScriptCall) -> ScriptResult:
        if self.failing:
            return Failed(f"CA unavailable: 503 (tried with password {self.ca.password})")
        return self.sign(call)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(whole_seconds(real_now()))


@pytest.fixture
def issuer(test_ca: LocalCA) -> SwitchableIssuer:
    return SwitchableIssuer(test_ca)


@pytest.fixture
def notify_app(settings: Settings, issuer: SwitchableIssuer, clock: FakeClock) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings, issuer=issuer, clock=clock, random_fraction=lambda: 0.5) as app:
        add_script(app, "local-ca", "def certificate_request(csr, common_name, args_dict):\n    pass\n", actor=ACTOR)
        yield app


def make_profile(app: App, ca: LocalCA, *, url: str | None = None, mail: str | None = None,
                 deploy: DeploySettings | None = None) -> None:
    create_profile(app, "corp", script="local-ca", params=local_ca_params(ca), actor=ACTOR,
                   notify=NotifySettings(url, mail), deploy=deploy)


def secrets_of(ca: LocalCA, receiver: Webhook | None = None) -> list[str]:
    """Every sensitive value of the profile, the CA key's lines, the webhook's path, the SMTP password."""
    values = [ca.password, SMTP_PASSWORD]
    values += [line for line in ca.key_path.read_text().splitlines() if "-----" not in line and len(line) > 20]
    if receiver is not None:
        values.append(receiver.path.rsplit("/", 1)[-1])
    return values


def assert_no_secret(bodies: list[bytes], secrets: list[str]) -> None:
    assert bodies, "nothing was delivered, so nothing was checked"
    for body in bodies:
        for secret in secrets:
            assert secret.encode() not in body, f"a secret reached a notification: {body[:300]!r}"


def fail_times(app: App, clock: FakeClock, name: str, times: int) -> None:
    for _ in range(times):
        Reconciler(app).run_once()
        clock.advance(dt.timedelta(hours=25))  # past any backoff


def test_failures_notify_first_and_at_each_doubling_with_one_sentence_and_no_secret(
    notify_app: App, test_ca: LocalCA, clock: FakeClock
) -> None:
    with webhook() as receiver:
        make_profile(notify_app, test_ca, url=receiver.url)
        request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"),
                            actor=ACTOR)
        fail_times(notify_app, clock, "web1", 5)  # each loop pass delivers what its events queued
        assert notifications.deliver_due(notify_app, owner="w1") == 0, "delivered once, by the loop"

        messages = receiver.messages()
        assert [(m["event"], m["details"]["failures"]) for m in messages] == [
            ("CERT_ISSUE_FAILED", 1), ("CERT_ISSUE_FAILED", 2), ("CERT_ISSUE_FAILED", 4)]
        for m in messages:
            assert set(m) == {"event", "certificate", "profile", "at", "details", "text"}
            assert (m["certificate"], m["profile"]) == ("web1", "corp")
            assert m["text"].startswith("certpilot could not issue certificate web1") and m["text"].endswith(".")
            assert "\n" not in m["text"]
            dt.datetime.fromisoformat(m["at"].replace("Z", "+00:00"))
        assert_no_secret(receiver.bodies, secrets_of(test_ca, receiver))


def test_the_outbox_row_lives_and_dies_with_its_event(notify_app: App, test_ca: LocalCA, clock: FakeClock) -> None:
    make_profile(notify_app, test_ca, url="http://127.0.0.1:9/hook")
    request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"), actor=ACTOR)

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        with notify_app.db.transaction() as session:
            record_event(session, at=clock.now(), actor=ACTOR, kind=EventKind.CERT_EXPIRING,
                         object_type="certificate", object_name="web1", details={"days_left": 7})
            session.flush()
            assert session.scalars(select(NotificationRow)).all(), "queued in the event's transaction"
            raise Abort()
    with notify_app.db.read() as session:
        assert session.scalars(select(NotificationRow)).all() == [], "rolled back with the event"
    with notify_app.db.transaction() as session:
        record_event(session, at=clock.now(), actor=ACTOR, kind=EventKind.CERT_EXPIRED,
                     object_type="certificate", object_name="web1", details={})
        record_event(session, at=clock.now(), actor=ACTOR, kind=EventKind.CERT_ISSUED,
                     object_type="certificate", object_name="web1", details={})
    with notify_app.db.read() as session:
        assert [r.channel for r in session.scalars(select(NotificationRow))] == ["webhook"], "expiry only"


def test_a_receiver_that_is_down_gets_it_later_and_three_days_of_errors_drop_it(
    notify_app: App, test_ca: LocalCA, clock: FakeClock
) -> None:
    receiver = Webhook().start()
    try:
        make_profile(notify_app, test_ca, url=receiver.url)
        receiver.stop()  # down
        request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"),
                            actor=ACTOR)
        Reconciler(notify_app).run_once()
        assert notifications.deliver_due(notify_app, owner="w1") == 0
        [row] = notifications.list_notifications(notify_app)
        assert (row.attempts, row.delivered_at) == (1, None)
        assert row.last_error is not None and "could not be reached" in row.last_error
        assert receiver.path.rsplit("/", 1)[-1] not in row.last_error

        receiver.start()  # back, on the same port
        assert notifications.deliver_due(notify_app, owner="w1") == 0, "not before its retry time"
        clock.advance(dt.timedelta(seconds=31))
        assert notifications.deliver_due(notify_app, owner="w1") == 1
        assert [m["event"] for m in receiver.messages()] == ["CERT_ISSUE_FAILED"]

        receiver.status = 500  # answers, but not 2xx: retried until three days have passed
        clock.advance(dt.timedelta(hours=25))
        Reconciler(notify_app).run_once()  # failure 2: notifies
        tries = 0
        while notifications.list_notifications(notify_app)[0].dropped_at is None and tries < 200:
            notifications.deliver_due(notify_app, owner="w1")
            clock.advance(dt.timedelta(hours=1))
            tries += 1
        latest = notifications.list_notifications(notify_app)[0]
        assert latest.dropped_at is not None and latest.delivered_at is None
        assert latest.last_error == "the webhook receiver answered HTTP 500"
        assert 70 <= latest.attempts <= 80, "hourly retries (after the first doublings) for three days"
        dropped = [e for e in certificate_events(notify_app, "web1") if e.kind == "NOTIFICATION_DROPPED"]
        assert [(e.details["event"], e.details["channel"]) for e in dropped] == [("CERT_ISSUE_FAILED", "webhook")]
        assert len(receiver.messages()) == 1
        assert len(notifications.list_notifications(notify_app)) == 2, "a dropped notice notifies no one"
    finally:
        receiver.stop()


def test_concurrent_workers_deliver_each_notification_exactly_once(
    notify_app: App, test_ca: LocalCA, clock: FakeClock
) -> None:
    names = [f"web{i:02d}" for i in range(40)]
    receiver = Webhook().start()
    try:
        make_profile(notify_app, test_ca, url=receiver.url)
        receiver.stop()  # so that the loop's own delivery fails and the workers below find all 40 due
        for name in names:
            request_certificate(notify_app, name, profile="corp", subject=make_subject(f"{name}.example.test"),
                                actor=ACTOR)
        loop = Reconciler(notify_app)
        while loop.run_once():  # 40 failures, 40 notifications queued
            pass
        assert len(notifications.list_notifications(notify_app)) == 40
        receiver.start()
        clock.advance(dt.timedelta(minutes=1))

        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def worker(owner: str) -> None:
            try:
                start.wait()
                while notifications.deliver_due(notify_app, owner=owner, limit=3):
                    pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        per_certificate = Counter(m["certificate"] for m in receiver.messages())
        assert per_certificate == Counter({name: 1 for name in names})
        assert all(n.delivered_at is not None for n in notifications.list_notifications(notify_app))
    finally:
        receiver.stop()


def test_deploy_failures_and_expiry_warnings_notify(
    notify_app: App, test_ca: LocalCA, issuer: SwitchableIssuer, clock: FakeClock, tmp_path: Path
) -> None:
    issuer.failing = False
    with webhook() as receiver:
        make_profile(notify_app, test_ca, url=receiver.url,
                     deploy=DeploySettings(root=str(tmp_path / "missing-root")))
        request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"),
                            actor=ACTOR)
        Reconciler(notify_app).run_once()
        Reconciler(notify_app).run_once()  # the deployment fails; the pass delivers its notification
        [deploy] = receiver.messages()
        assert deploy["event"] == "CERT_DEPLOY_FAILED" and "does not exist" in deploy["text"]

        with notify_app.db.transaction() as session:  # as the loop's WARN records it
            record_event(session, at=clock.now(), actor=ACTOR, kind=EventKind.CERT_EXPIRING,
                         object_type="certificate", object_name="web1",
                         details={"days_left": 7, "not_after": "2030-01-01T00:00:00+00:00"})
        notifications.deliver_due(notify_app, owner="w1")
        assert receiver.messages()[-1]["text"] == ("Certificate web1 (profile corp) expires in 7 day(s), "
                                                   "on 2030-01-01T00:00:00+00:00.")


@pytest.mark.parametrize("mode", ["plain", "starttls", "smtps"])
def test_mail_through_a_real_smtp_server(
    mode: str, settings: Settings, issuer: SwitchableIssuer, clock: FakeClock, test_ca: LocalCA, tmp_path: Path
) -> None:
    users = None if mode == "plain" else {"certpilot": SMTP_PASSWORD}
    with SmtpSink(mode=mode, tls_dir=tmp_path / "tls", users=users) as sink:
        url = sink.url(*(("certpilot", SMTP_PASSWORD) if users else ()))
        engine = create_db_engine(settings.effective_database_url)
        upgrade(engine)
        engine.dispose()
        with App(settings.model_copy(update={"smtp_url": url}), issuer=issuer, clock=clock,
                 random_fraction=lambda: 0.5) as app:
            add_script(app, "local-ca", "def certificate_request(csr, common_name, args_dict):\n    pass\n",
                       actor=ACTOR)
            make_profile(app, test_ca, mail="ops@example.test")
            request_certificate(app, "web1", profile="corp", subject=make_subject("web1.example.test"), actor=ACTOR)
            Reconciler(app).run_once()  # the failure, and the pass's delivery
            assert notifications.deliver_due(app, owner="w1") == 0
    [mail] = sink.messages
    assert mail.rcpt_tos == ["ops@example.test"] and mail.mail_from == "certpilot@example.test"
    assert mail.tls is (mode != "plain"), "STARTTLS is used whenever the server offers it"
    assert mail.login == ("certpilot" if users else None)
    message = email.message_from_bytes(mail.data)
    assert message["Subject"].startswith("certpilot could not issue certificate web1")
    body = message.get_payload(decode=True).replace(b"\r\n", b"\n")
    assert json.loads(body.split(b"\n\n", 1)[1])["certificate"] == "web1"
    assert_no_secret([mail.data], secrets_of(test_ca))


def test_a_mail_server_refusing_the_login_is_retried(
    settings: Settings, issuer: SwitchableIssuer, clock: FakeClock, test_ca: LocalCA, tmp_path: Path
) -> None:
    with SmtpSink(mode="starttls", tls_dir=tmp_path / "tls", users={"certpilot": "right"}) as sink:
        engine = create_db_engine(settings.effective_database_url)
        upgrade(engine)
        engine.dispose()
        with App(settings.model_copy(update={"smtp_url": sink.url("certpilot", SMTP_PASSWORD)}), issuer=issuer,
                 clock=clock, random_fraction=lambda: 0.5) as app:
            add_script(app, "local-ca", "def certificate_request(csr, common_name, args_dict):\n    pass\n",
                       actor=ACTOR)
            make_profile(app, test_ca, mail="ops@example.test")
            request_certificate(app, "web1", profile="corp", subject=make_subject("web1.example.test"), actor=ACTOR)
            Reconciler(app).run_once()
            assert notifications.deliver_due(app, owner="w1") == 0
            [row] = notifications.list_notifications(app)
    assert sink.messages == []
    assert row.last_error == "the mail server answered 535" and row.delivered_at is None
    assert SMTP_PASSWORD not in (row.last_error or "")


def test_a_deferral_waiting_over_a_day_notifies_once(notify_app: App, test_ca: LocalCA, clock: FakeClock) -> None:
    from certpilot.store.tables import CertificateStatusRow

    with webhook() as receiver:
        make_profile(notify_app, test_ca, url=receiver.url)
        request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"),
                            actor=ACTOR)
        since = clock.now()
        with notify_app.db.transaction() as session:  # as deferred issuance records it (issue 10)
            session.scalars(select(CertificateStatusRow)).one().deferred_since = since
        assert notifications.record_overdue_deferrals(notify_app, actor=ACTOR) == 0, "not yet a day"
        clock.advance(dt.timedelta(hours=25))
        assert notifications.record_overdue_deferrals(notify_app, actor=ACTOR) == 1
        assert notifications.record_overdue_deferrals(notify_app, actor=ACTOR) == 0, "once per deferral"
        notifications.deliver_due(notify_app, owner="w1")
        [message] = receiver.messages()
        assert message["event"] == "CERT_DEFERRAL_OVERDUE" and message["details"]["waiting_hours"] == 25
        assert message["text"].startswith("The CA has kept the request for certificate web1 (profile corp) waiting")

        clock.advance(dt.timedelta(hours=1))
        with notify_app.db.transaction() as session:  # a later, new deferral notifies again
            session.scalars(select(CertificateStatusRow)).one().deferred_since = clock.now()
        clock.advance(dt.timedelta(days=2))
        assert notifications.record_overdue_deferrals(notify_app, actor=ACTOR) == 1


def test_the_loop_notifies_expiry_warnings_and_expiry_while_renewal_fails(
    notify_app: App, test_ca: LocalCA, issuer: SwitchableIssuer, clock: FakeClock
) -> None:
    issuer.failing = False
    with webhook() as receiver:
        make_profile(notify_app, test_ca, url=receiver.url)
        request_certificate(notify_app, "web1", profile="corp", subject=make_subject("web1.example.test"),
                            actor=ACTOR)
        Reconciler(notify_app).run_once()
        not_after = get_certificate(notify_app, "web1").status.not_after
        assert not_after is not None
        issuer.failing = True  # the CA is gone: every renewal fails from now on
        while clock.now() < not_after + dt.timedelta(days=1):
            clock.advance(dt.timedelta(hours=12))
            loop = Reconciler(notify_app)
            while loop.run_once():  # as a running loop looks again at once after an attempt
                pass
        kinds = [(m["event"], m["details"].get("warning_day"), m["details"].get("failures"))
                 for m in receiver.messages()]
    warnings = [day for kind, day, _ in kinds if kind == "CERT_EXPIRING"]
    assert warnings == [30, 7, 1], "one message per warning day crossed"
    assert [k for k, _, _ in kinds].count("CERT_EXPIRED") == 1
    failures = [n for kind, _, n in kinds if kind == "CERT_RENEW_FAILED"]
    assert failures and all(n & (n - 1) == 0 for n in failures), f"only at powers of two: {failures}"
    recorded = [e.details["failures"] for e in certificate_events(notify_app, "web1") if e.kind == "CERT_RENEW_FAILED"]
    assert len(recorded) > len(failures), "not every retry notifies"
    assert sorted(failures) == sorted(n for n in recorded if n & (n - 1) == 0)
