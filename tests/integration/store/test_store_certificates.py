"""store.certificates: a page of the list reads (with Core) exactly what reading each
certificate by name reads (through the ORM), whatever the filters; on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from certpilot.config import Settings
from certpilot.domain.model import Certificate, Phase, ProfileParam, make_subject
from certpilot.issuers.runner import Failed, Issued, ScriptCall, ScriptResult
from certpilot.pki.local_ca import LocalCA
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_certificates, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.store.database import create_db_engine, upgrade

SCRIPT = "def certificate_request(csr, common_name, args_dict):\n    pass\n"


class ChosenAnswers:
    """An issuer in this process: signs with the test CA, or fails for names in `failing`."""

    def __init__(self, ca: LocalCA) -> None:
        self.ca = ca
        self.failing: set[str] = set()

    def call(self, call: ScriptCall) -> ScriptResult:
        if call.common_name.split(".")[0] in self.failing:  # the tests name certificates by their CN
            return Failed("the CA said no")
        from certpilot.services.setup import bundled_local_ca_source

        namespace: dict[str, object] = {}
        exec(bundled_local_ca_source(), namespace)
        sign: Callable[..., str] = namespace["certificate_request"]  # type: ignore[assignment]
        return Issued(sign(call.csr_pem, call.common_name, dict(call.args)))

    def describe(self) -> str:
        return "answers chosen by the test"

    def limitations(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def app(settings: Settings, test_ca: LocalCA) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    issuer = ChosenAnswers(test_ca)
    ca_params = [ProfileParam("ca_cert", test_ca.cert_path.read_text()),
                 ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
                 ProfileParam("ca_key_password", test_ca.password, sensitive=True)]
    with App(settings, issuer=issuer) as app:
        add_script(app, "s", SCRIPT, actor="t")
        create_profile(app, "corp", script="s", actor="t", params=ca_params)
        create_profile(app, "team", script="s", actor="t", renew_before_days=5, warning_days=[10, 3], params=[
            *ca_params,
            ProfileParam("ticket", None, dynamic=True),
            ProfileParam("api_key", None, sensitive=True, dynamic=True),
        ])
        for i in range(6):
            request_certificate(app, f"c{i}", profile="corp", subject=make_subject(f"c{i}.example.test"),
                                subject_alt_names=[f"DNS:alt{i}.example.test", "IP:192.0.2.7"], actor="t")
        for i in range(4):
            request_certificate(app, f"t{i}", profile="team", subject=make_subject(f"t{i}.example.test"),
                                dynamic_params={"ticket": f"T-{i}", "api_key": f"secret-{i}"}, actor="t")
        issuer.failing = {"c1", "t2"}
        for name in ("c0", "c1", "c2", "c3", "t0", "t1", "t2"):  # c4, c5, t3 stay pending
            issuance.attempt(app, name)
        yield app


def _by_name(app: App, names: list[str]) -> list[Certificate]:
    return [get_certificate(app, name) for name in sorted(names)]


ALL = ["c0", "c1", "c2", "c3", "c4", "c5", "t0", "t1", "t2", "t3"]


def test_a_listed_certificate_is_the_certificate_read_by_name(app: App) -> None:
    listed = list_certificates(app)
    assert [c.name for c in listed] == ALL
    assert listed == _by_name(app, ALL)
    issued = {c.name: c for c in listed if c.status.revision is not None}
    assert sorted(issued) == ["c0", "c2", "c3", "t0", "t1"]
    assert issued["c0"].status.not_after is not None and issued["c0"].status.renew_at is not None
    t0 = next(c for c in listed if c.name == "t0")
    assert t0.spec.dynamic_params == {"ticket": "T-0", "api_key": "***"}, "sensitive values stay masked in a list"
    assert t0.sensitive_params == frozenset({"api_key"})
    failed = {c.name: c for c in listed if c.status.failures}
    assert sorted(failed) == ["c1", "t2"] and failed["c1"].status.last_error


@pytest.mark.parametrize("phase", list(Phase))
def test_the_phase_filter_keeps_what_reading_by_name_shows_in_that_phase(app: App, phase: Phase) -> None:
    expected = [c for c in _by_name(app, ALL) if c.status.phase == phase]
    assert list_certificates(app, phase=phase) == expected


def test_profile_filter_paging_and_expiry_filter(app: App) -> None:
    assert list_certificates(app, profile="team") == _by_name(app, ["t0", "t1", "t2", "t3"])
    pages, after = [], None
    while True:
        page = list_certificates(app, after_name=after, limit=3)
        pages.append([c.name for c in page])
        if len(page) < 3:
            break
        after = page[-1].name
    assert pages == [ALL[0:3], ALL[3:6], ALL[6:9], ALL[9:]]
    assert list_certificates(app, expiring_within_days=3650) == _by_name(app, ["c0", "c2", "c3", "t0", "t1"])
    assert list_certificates(app, expiring_within_days=0) == []
    assert list_certificates(app, profile="team", after_name="t0", limit=1) == _by_name(app, ["t1"])
