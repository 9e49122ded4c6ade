"""Issuance against a fake `Issuer` (no script process): the protocol lets a test drive
the whole attempt (key, CSR, checks, storage, schedule) with a plain function, and see
exactly what a script would have been given."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest

from certpilot.config import Settings
from certpilot.domain.model import Outcome, Phase, ProfileParam, make_subject
from certpilot.issuers.runner import Failed, Issued, ScriptCall, ScriptResult
from certpilot.pki.local_ca import LocalCA
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.store.database import create_db_engine, upgrade


class FakeIssuer:
    """Signs with the test CA in this process and remembers every call."""

    def __init__(self, answer: Callable[[ScriptCall], ScriptResult]) -> None:
        self.answer = answer
        self.calls: list[ScriptCall] = []
        self.closed = False

    def call(self, call: ScriptCall) -> ScriptResult:
        self.calls.append(call)
        return self.answer(call)

    def describe(self) -> str:
        return "a fake issuer in the test process"

    def limitations(self) -> list[str]:
        return []

    def close(self) -> None:
        self.closed = True


def sign_with(ca: LocalCA) -> Callable[[ScriptCall], ScriptResult]:
    def answer(call: ScriptCall) -> ScriptResult:
        namespace: dict[str, object] = {}
        from certpilot.services.setup import bundled_local_ca_source

        exec(bundled_local_ca_source(), namespace)  # the real script's logic, run here
        pem = namespace["certificate_request"](call.csr_pem, call.common_name, dict(call.args))  # type: ignore[operator]
        return Issued(pem)

    return answer


@pytest.fixture
def fake_app(settings: Settings, test_ca: LocalCA) -> Iterator[tuple[App, FakeIssuer]]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    fake = FakeIssuer(sign_with(test_ca))
    with App(settings, issuer=fake) as app:
        add_script(app, "local-ca", "def certificate_request(csr, common_name, args_dict):\n    pass\n", actor="t")
        create_profile(app, "corp", script="local-ca", actor="t", concurrency=3, allow_read=["/srv/ca"], params=[
            ProfileParam("ca_cert", test_ca.cert_path.read_text()),
            ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
            ProfileParam("ca_key_password", test_ca.password, sensitive=True),
        ])
        yield app, fake
    assert fake.closed, "the app closes the issuer it was given"


def test_an_attempt_through_a_fake_issuer_stores_the_checked_revision(fake_app: tuple[App, FakeIssuer]) -> None:
    app, fake = fake_app
    request_certificate(app, "web1", profile="corp", subject=make_subject("web1.example.test"), actor="t")

    report = issuance.attempt(app, "web1")

    assert (report.outcome, report.revision) == (Outcome.ISSUED, 1)
    cert = get_certificate(app, "web1")
    assert cert.status.phase is Phase.ISSUED
    assert cert.status.next_action_at is not None and cert.status.next_action_at > app.clock.now()
    (call,) = fake.calls
    assert (call.profile, call.concurrency, call.allow_read) == ("corp", 3, ("/srv/ca",))
    assert call.common_name == "web1.example.test" and "BEGIN CERTIFICATE REQUEST" in call.csr_pem
    assert call.args["ca_key_password"] in call.secrets and call.args["ca_key"] in call.secrets
    assert call.args["ca_cert"] not in call.secrets  # not sensitive: shown, never masked


def test_a_fake_issuer_failure_is_a_recorded_failed_attempt(fake_app: tuple[App, FakeIssuer]) -> None:
    app, fake = fake_app
    fake.answer = lambda call: Failed("CA says no")
    request_certificate(app, "web2", profile="corp", subject=make_subject("web2.example.test"), actor="t")
    before = app.clock.now()

    report = issuance.attempt(app, "web2")

    assert (report.outcome, report.error, report.failures) == (Outcome.FAILED, "CA says no", 1)
    status = get_certificate(app, "web2").status
    assert status.phase is Phase.FAILED and status.last_error == "CA says no"
    assert status.next_action_at is not None and status.next_action_at >= before + dt.timedelta(minutes=4)
