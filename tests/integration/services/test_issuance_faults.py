"""Issuance through the bundled local-CA script, then every way a script can fail
(DESIGN §2 and §3): the failure is a recorded attempt with the right outcome and a
message saying what went wrong, the revision being served is untouched, the
password never leaks, and the pool keeps working for the next renewal.

Runs on SQLite and PostgreSQL (the `app` fixture).
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from dataclasses import dataclass, field

import pytest

from certpilot.domain.model import KeySpec, Outcome, Phase, ProfileParam, Revision, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import (
    certificate_events,
    get_certificate,
    list_attempts,
    list_revisions,
    request_certificate,
    request_renewal,
)
from certpilot.services.issuance import attempt
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script, update_script
from certpilot.services.setup import bundled_local_ca_source

SCRIPT = "local-ca"
PROFILE = "corp"
CERT = "web1"
GOOD_TIMEOUT_S = 20
OUTPUT_LIMIT_BYTES = 70 * 1024
MIN_RETRY_DELAY = dt.timedelta(seconds=55)  # DESIGN §3: never sooner than 1 minute
MIN_LEAK_CHARS = 8  # a run this long of the password counts as a leak

# Helpers the faulty scripts share: they read the test CA through args_dict, like the
# bundled script, so they can return certificates that are wrong in one way only.
PRELUDE = '''
import datetime
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _ca(args_dict):
    ca_cert = x509.load_pem_x509_certificate(args_dict["ca_cert"].encode())
    ca_key = serialization.load_pem_private_key(args_dict["ca_key"].encode(), password=args_dict["ca_key_password"].encode())
    return ca_cert, ca_key


def _pem(*certs):
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _leaf(csr, args_dict, *, public_key=None, names=None, not_before=None, not_after=None):
    """A leaf signed by the test CA: for the CSR's key and names unless told otherwise."""
    request = x509.load_pem_x509_csr(csr.encode())
    ca_cert, ca_key = _ca(args_dict)
    if names is None:
        subject = request.subject
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    else:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key or request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or _now() - datetime.timedelta(minutes=1))
        .not_valid_after(not_after or _now() + datetime.timedelta(days=30))
        .add_extension(sans, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return leaf, ca_cert


def _impostor_ca(name):
    """A self-signed CA certificate with `name` as subject, but another key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
'''


@dataclass(frozen=True)
class Fault:
    body: str  # the faulty certificate_request, using PRELUDE's helpers
    outcome: Outcome
    error_says: tuple[str, ...]
    timeout_s: int = 10
    output_says: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        return PRELUDE + textwrap.dedent(self.body)


FAULTS = {
    "hangs": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            time.sleep(100)
        """,
        Outcome.TIMEOUT, ("timeout",), timeout_s=2,
    ),
    "raises": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            raise RuntimeError("CA unavailable: maintenance window until 04:00")
        """,
        Outcome.FAILED, ("CA unavailable: maintenance window until 04:00",),
    ),
    "exits-with-stderr": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            sys.stderr.write("CA said no: request violates policy 7\\n")
            sys.exit(3)
        """,
        Outcome.FAILED, ("CA said no: request violates policy 7", "exit status 3"),
    ),
    "os-exit": Fault(
        """
        import os
        def certificate_request(csr, common_name, args_dict):
            os._exit(7)
        """,
        Outcome.FAILED, ("status 7",),
    ),
    "prints-megabytes": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            line = "z" * 1023 + "\\n"
            for stream in (sys.stdout, sys.stderr):
                for _ in range(5 * 1024):
                    stream.write(line)
            raise RuntimeError("gave up after a lot of output")
        """,
        Outcome.FAILED, ("gave up after a lot of output",), output_says=("omitted",),
    ),
    "prints-the-password": Fault(
        """
        def certificate_request(csr, common_name, args_dict, context):
            password = args_dict["ca_key_password"]
            print("stdout: using CA key password", password, flush=True)
            print("stderr: using CA key password", password, file=sys.stderr, flush=True)
            context.log("log: using CA key password " + password)
            raise RuntimeError("the CA rejected password " + password)
        """,
        Outcome.FAILED, ("the CA rejected password ***",),
        output_says=("stdout: using CA key password ***", "stderr: using CA key password ***",
                     "log: using CA key password ***"),
    ),
    "prints-the-password-on-every-line": Fault(
        # a chatty client (think `curl -v`): megabytes with the secret on every line,
        # so the kept head and tail of the output cut through it
        """
        def certificate_request(csr, common_name, args_dict):
            password = args_dict["ca_key_password"]
            sys.stdout.write((password + "\\n") * 200000)
            sys.stderr.write(("pw=" + password + "\\n") * 200000)
            raise RuntimeError("the CA rejected the password")
        """,
        Outcome.FAILED, ("the CA rejected the password",), output_says=("omitted", "***"),
    ),
    "returns-not-pem": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            return "<html><body>502 Bad Gateway</body></html>"
        """,
        Outcome.INVALID, ("check 1",),
    ),
    "returns-none": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            _leaf(csr, args_dict)  # forgets to return it
        """,
        Outcome.INVALID, ("check 1",),
    ),
    "certificate-for-another-key": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            other = ec.generate_private_key(ec.SECP256R1()).public_key()
            return _pem(*_leaf(csr, args_dict, public_key=other))
        """,
        Outcome.INVALID, ("check 2", "another key"),
    ),
    "certificate-for-other-names": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            return _pem(*_leaf(csr, args_dict, names=["other.example.test"]))
        """,
        Outcome.INVALID, ("check 3", "www.example.test"),
    ),
    "expired-certificate": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            now = _now()
            return _pem(*_leaf(csr, args_dict, not_before=now - datetime.timedelta(days=10),
                               not_after=now - datetime.timedelta(days=1)))
        """,
        Outcome.INVALID, ("check 4", "expired"),
    ),
    "not-yet-valid-certificate": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            now = _now()
            return _pem(*_leaf(csr, args_dict, not_before=now + datetime.timedelta(days=1),
                               not_after=now + datetime.timedelta(days=30)))
        """,
        Outcome.INVALID, ("check 4", "not valid before"),
    ),
    "chain-did-not-sign-the-leaf": Fault(
        """
        def certificate_request(csr, common_name, args_dict):
            leaf, ca_cert = _leaf(csr, args_dict)
            return _pem(leaf, _impostor_ca(ca_cert.subject))
        """,
        Outcome.INVALID, ("check 5",),
    ),
}


def set_up_profile(app: App, ca: LocalCA, source: str, timeout_s: int = GOOD_TIMEOUT_S) -> None:
    add_script(app, SCRIPT, source, timeout_s=timeout_s, actor="t")
    create_profile(
        app, PROFILE, script=SCRIPT, actor="t",
        params=[
            ProfileParam("ca_cert", ca.cert_path.read_text()),
            ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
            ProfileParam("ca_key_password", ca.password, sensitive=True),
            ProfileParam("validity_days", "90"),  # no expiry warning falls due at once
        ],
    )
    request_certificate(
        app, CERT, profile=PROFILE, subject=make_subject("web1.example.test"),
        subject_alt_names=["DNS:www.example.test"], key=KeySpec.parse("ec:p256"), actor="t",
    )


def restore_good_script(app: App) -> None:
    update_script(app, SCRIPT, bundled_local_ca_source(), timeout_s=GOOD_TIMEOUT_S, actor="t")


def assert_password_never_shown(app: App, password: str, report_error: str | None) -> None:
    cert = get_certificate(app, CERT)
    shown = [report_error or "", cert.status.last_error or ""]
    for a in list_attempts(app, CERT):
        shown += [a.error or "", a.output or ""]
    for e in certificate_events(app, CERT):
        shown.append(json.dumps(dict(e.details), default=str) + e.actor)
    for text in shown:
        assert password not in text
        leaked = [password[i : i + MIN_LEAK_CHARS] for i in range(len(password) - MIN_LEAK_CHARS + 1)
                  if password[i : i + MIN_LEAK_CHARS] in text]
        assert not leaked, f"pieces of the password are shown: {leaked}"


@pytest.fixture
def revision_1(app: App, test_ca: LocalCA) -> Revision:
    set_up_profile(app, test_ca, bundled_local_ca_source())
    report = attempt(app, CERT)
    assert (report.outcome, report.revision, report.error) == (Outcome.ISSUED, 1, None)
    (revision,) = list_revisions(app, CERT)
    return revision


def test_the_bundled_script_issues_revision_1(app: App, revision_1: Revision) -> None:
    cert = get_certificate(app, CERT)
    assert cert.status.phase is Phase.ISSUED
    assert (cert.status.revision, cert.status.failures, cert.status.last_error) == (1, 0, None)
    assert cert.status.fingerprint_sha256 == revision_1.fingerprint_sha256
    assert cert.status.next_action_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)
    assert list_attempts(app, CERT)[0].outcome is Outcome.ISSUED


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_a_failed_renewal_keeps_serving_revision_1(
    app: App, test_ca: LocalCA, revision_1: Revision, fault: Fault
) -> None:
    update_script(app, SCRIPT, fault.source, timeout_s=fault.timeout_s, actor="t")
    request_renewal(app, CERT, actor="t")

    report = attempt(app, CERT)
    after = dt.datetime.now(dt.timezone.utc)

    assert report.outcome is fault.outcome, report.error
    assert report.error
    for words in fault.error_says:
        assert words.lower() in report.error.lower(), f"{words!r} not in {report.error!r}"
    assert (report.revision, report.failures) == (1, 1)

    cert = get_certificate(app, CERT)
    assert cert.status.phase is Phase.ISSUED
    assert cert.status.revision == 1
    assert cert.status.fingerprint_sha256 == revision_1.fingerprint_sha256
    assert cert.status.failures == 1
    assert cert.status.last_error == report.error
    assert cert.status.next_action_at >= after + MIN_RETRY_DELAY
    assert list_revisions(app, CERT) == [revision_1]

    latest, first = list_attempts(app, CERT)
    assert first.outcome is Outcome.ISSUED
    assert (latest.kind, latest.outcome, latest.error, latest.revision) == ("renew", fault.outcome, report.error, None)
    assert latest.finished_at is not None
    assert len((latest.output or "").encode()) <= OUTPUT_LIMIT_BYTES
    for words in fault.output_says:
        assert words in (latest.output or ""), f"{words!r} not in the attempt's output"

    failed = [e for e in certificate_events(app, CERT) if e.kind == "CERT_RENEW_FAILED"]
    assert len(failed) == 1
    assert failed[0].details["outcome"] == fault.outcome.value
    assert_password_never_shown(app, test_ca.password, report.error)

    # the good script again: the same pool issues revision 2 with a new key pair
    restore_good_script(app)
    request_renewal(app, CERT, actor="t")
    report = attempt(app, CERT)
    assert (report.outcome, report.revision, report.error) == (Outcome.ISSUED, 2, None)
    newest, oldest = list_revisions(app, CERT)
    assert (newest.revision, oldest) == (2, revision_1)
    assert newest.public_key_sha256 != revision_1.public_key_sha256
    cert = get_certificate(app, CERT)
    assert cert.status.phase is Phase.ISSUED
    assert (cert.status.revision, cert.status.failures, cert.status.last_error) == (2, 0, None)
    assert cert.status.fingerprint_sha256 == newest.fingerprint_sha256


FIRST_ISSUE_FAULTS = ["raises", "returns-not-pem", "certificate-for-another-key"]


@pytest.mark.parametrize("fault_id", FIRST_ISSUE_FAULTS)
def test_a_failed_first_issuance_leaves_phase_failed_and_no_revision(
    app: App, test_ca: LocalCA, fault_id: str
) -> None:
    fault = FAULTS[fault_id]
    set_up_profile(app, test_ca, fault.source, timeout_s=fault.timeout_s)

    report = attempt(app, CERT)
    after = dt.datetime.now(dt.timezone.utc)

    assert report.outcome is fault.outcome, report.error
    for words in fault.error_says:
        assert words.lower() in report.error.lower()
    assert (report.revision, report.failures) == (None, 1)
    cert = get_certificate(app, CERT)
    assert cert.status.phase is Phase.FAILED
    assert cert.status.revision is None
    assert cert.status.fingerprint_sha256 is None
    assert (cert.status.failures, cert.status.last_error) == (1, report.error)
    assert cert.status.next_action_at >= after + MIN_RETRY_DELAY
    assert list_revisions(app, CERT) == []
    (only,) = list_attempts(app, CERT)
    assert (only.kind, only.outcome, only.revision) == ("issue", fault.outcome, None)
    assert [e.kind for e in certificate_events(app, CERT)].count("CERT_ISSUE_FAILED") == 1
    assert_password_never_shown(app, test_ca.password, report.error)

    restore_good_script(app)
    report = attempt(app, CERT)
    assert (report.outcome, report.revision) == (Outcome.ISSUED, 1)
    cert = get_certificate(app, CERT)
    assert (cert.status.phase, cert.status.revision, cert.status.failures) == (Phase.ISSUED, 1, 0)
    assert len(list_revisions(app, CERT)) == 1
