"""ACME Renewal Information (RFC 9773) pieces that need no server: the bundled acme script's
certificate identifier, what the host sends for a script's answer, which scripts define
the hook, and how the controller validates and records an answer."""

from __future__ import annotations

import datetime as dt

import pytest
from acme.client import _renewal_info_path_component
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certpilot.issuer import DEFAULT_RENEWAL_INFO_RETRY_AFTER_S, RenewalWindow
from certpilot.issuers.bundled import acme_client, bundled_source
from certpilot.issuers.host import window_message
from certpilot.issuers.runner import Failed, RenewalInfoAnswer
from certpilot.issuers.script_functions import defines_renewal_info
from certpilot.policy.renewal_info import ERROR_RETRY_S, MAX_CHECK_S
from certpilot.services.renewal_info import outcome, parse_answer
from certpilot.store.renewal_info import RenewalInfoRecord

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")


def _certificate(serial: int, key_identifier: bytes = RFC_AKI) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(T0).not_valid_after(T0 + dt.timedelta(days=90))
            .add_extension(x509.AuthorityKeyIdentifier(key_identifier, None, None), critical=False)
            .sign(key, hashes.SHA256()))


def test_certificate_id_of_the_rfc_example() -> None:
    """RFC 9773 §4.1: keyIdentifier 69:88:5B:…:D4 and serial 00:87:65:43:21."""
    assert acme_client.renewal_certificate_id(_certificate(0x87654321)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize(
    ("serial", "encoded"),
    [
        pytest.param(0x1234, "EjQ", id="high-bit-clear-no-leading-zero"),
        pytest.param(0x80, "AIA", id="high-bit-set-gets-a-leading-zero"),
        pytest.param(0x7F, "fw", id="one-byte"),
    ],
)
def test_certificate_id_serial_is_the_der_integer_content(serial: int, encoded: str) -> None:
    assert acme_client.renewal_certificate_id(_certificate(serial)).split(".")[1] == encoded


def test_certificate_id_agrees_with_the_acme_library() -> None:
    for serial in (1, 255, 256, 2**159 - 1, 2**63 + 12345):
        cert = _certificate(serial, key_identifier=bytes(range(20)))
        assert acme_client.renewal_certificate_id(cert) == _renewal_info_path_component(cert)


def test_the_host_sends_a_window_object_or_dict_as_rfc3339() -> None:
    window = RenewalWindow(T0, T0 + dt.timedelta(days=1), retry_after_s=60)
    expected = {"start": "2030-01-01T00:00:00+00:00", "end": "2030-01-02T00:00:00+00:00", "retry_after_s": 60,
                "explanation_url": None}
    assert window_message(window) == expected
    assert window_message({"start": T0, "end": T0 + dt.timedelta(days=1), "retry_after_s": 60}) == expected
    assert window_message(None) is None
    with pytest.raises(TypeError, match="return None, a RenewalWindow or a dict"):
        window_message("tomorrow")


@pytest.mark.parametrize(
    ("source", "defined"),
    [
        pytest.param("def certificate_renewal_info(cert_pem, args_dict):\n    return None\n", True, id="def"),
        pytest.param("def _ari(c, a):\n    pass\ncertificate_renewal_info = _ari\n", True, id="assigned"),
        pytest.param("from helpers import certificate_renewal_info\n", True, id="imported"),
        pytest.param("def certificate_request(csr, cn, args):\n    pass\n", False, id="absent"),
        pytest.param("def f():\n    def certificate_renewal_info():\n        pass\n", False, id="nested-only"),
        pytest.param("def certificate_renewal_info(:\n", False, id="does-not-parse"),
    ],
)
def test_which_scripts_define_the_hook(source: str, defined: bool) -> None:
    assert defines_renewal_info(source) is defined


def test_the_bundled_acme_script_defines_the_hook_and_local_ca_does_not() -> None:
    assert defines_renewal_info(bundled_source("acme"))
    assert not defines_renewal_info(bundled_source("local-ca"))


def test_an_answer_is_validated() -> None:
    answer = parse_answer({"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z", "retry_after_s": 7200})
    assert (answer.window.start, answer.window.end, answer.retry_after_s) == (  # type: ignore[union-attr]
        T0, T0 + dt.timedelta(days=1), 7200)
    assert parse_answer({"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}).retry_after_s == \
        DEFAULT_RENEWAL_INFO_RETRY_AFTER_S
    assert parse_answer(None).window is None and parse_answer(None).retry_after_s == MAX_CHECK_S


@pytest.mark.parametrize(
    ("window", "message"),
    [
        pytest.param({"start": "soon", "end": "2030-01-02T00:00:00Z"}, "not an RFC 3339 time", id="bad-time"),
        pytest.param({"start": "2030-01-01T00:00:00", "end": "2030-01-02T00:00:00Z"}, "time zone", id="naive"),
        pytest.param({"start": "2030-01-03T00:00:00Z", "end": "2030-01-02T00:00:00Z"}, "before it starts",
                     id="reversed"),
        pytest.param({"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z", "retry_after_s": "1h"},
                     "number of seconds", id="bad-retry"),
        pytest.param({"start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z",
                      "explanation_url": "javascript:alert(1)"}, "http", id="bad-url"),
    ],
)
def test_a_bad_answer_is_refused(window: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_answer(window)


WINDOW = {"start": "2030-02-01T00:00:00Z", "end": "2030-02-03T00:00:00Z", "retry_after_s": 7200}


def test_outcome_draws_a_time_and_asks_again_at_the_retry_after() -> None:
    record = outcome(RenewalInfoAnswer(WINDOW), RenewalInfoRecord(), T0, random_fraction=0.5, min_check_s=3600)
    assert record.renew_at == dt.datetime(2030, 2, 2, tzinfo=UTC)
    assert (record.checked_at, record.check_at, record.error) == (T0, T0 + dt.timedelta(hours=2), None)


def test_outcome_of_a_failed_check_keeps_the_window_known_and_retries() -> None:
    known = outcome(RenewalInfoAnswer(WINDOW), RenewalInfoRecord(), T0, random_fraction=0.5, min_check_s=3600)
    later = T0 + dt.timedelta(hours=2)
    failed = outcome(Failed("ACME renewal information: connection refused"), known, later, random_fraction=0.1,
                     min_check_s=3600)
    assert (failed.window_start, failed.renew_at) == (known.window_start, known.renew_at)
    assert failed.error == "ACME renewal information: connection refused"
    assert failed.check_at == later + dt.timedelta(seconds=ERROR_RETRY_S)


def test_outcome_without_a_window_forgets_the_old_one() -> None:
    known = outcome(RenewalInfoAnswer(WINDOW), RenewalInfoRecord(), T0, random_fraction=0.5, min_check_s=3600)
    none = outcome(RenewalInfoAnswer(None), known, T0, random_fraction=0.5, min_check_s=3600)
    assert (none.window_start, none.renew_at, none.check_at) == (None, None, T0 + dt.timedelta(seconds=MAX_CHECK_S))
