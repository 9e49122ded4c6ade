"""check_issued: the five checks of DESIGN.md section 2 on what an issuer script returned."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from certpilot.domain.errors import IssuerFailed
from certpilot.domain.model import SubjectAltName
from certpilot.pki.checks import CLOCK_SKEW, check_issued, dns_name_covered
from tests.unit.pki.certs_for_tests import NOW, ec_key, make_ca, make_leaf, rsa_key, spki_sha256, to_pem

MIN = dt.timedelta(minutes=1)
SEC = dt.timedelta(seconds=1)

# One CA and one key for the whole module: EC key generation is cheap, but the
# table below is long and these are only inputs.
CA = make_ca("Checks Test CA")
OTHER_CA = make_ca("Checks Test CA")  # same name, different key
KEY = ec_key()


def _check(pem, names=("leaf.example.com",), key=KEY, now=NOW):
    requested = tuple(SubjectAltName.parse(n) for n in names)
    return check_issued(pem, expected_public_key_sha256=spki_sha256(key), requested_names=requested, now=now)


def _fails(pem, check_label, **kwargs):
    with pytest.raises(IssuerFailed) as info:
        _check(pem, **kwargs)
    assert info.value.outcome == "invalid"
    assert str(info.value).startswith(check_label), str(info.value)
    return str(info.value)


def _leaf(**kwargs):
    kwargs.setdefault("key", KEY)
    return make_leaf(CA, **kwargs)


# --- passing cases ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pem_factory", "names"),
    [
        (lambda: to_pem(_leaf()), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(), CA.cert), ("leaf.example.com",)),
        (lambda: "some text the CA printed\n" + to_pem(_leaf(), CA.cert) + "\ntrailer\n", ("leaf.example.com",)),
        (lambda: to_pem(_leaf()).replace("\n", "\r\n"), ("leaf.example.com",)),
        (
            lambda: to_pem(_leaf(dns_names=("leaf.example.com", "www.example.com"), ip_addresses=("10.0.0.1",))),
            ("leaf.example.com", "www.example.com", "IP:10.0.0.1"),
        ),
        (lambda: to_pem(_leaf(dns_names=("*.example.com",))), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(dns_names=("*.example.com",))), ("*.example.com",)),
        (lambda: to_pem(_leaf(dns_names=("LEAF.Example.COM",))), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(dns_names=("leaf.example.com.",))), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(dns_names=(), ip_addresses=("2001:db8::1",))), ("IP:2001:db8:0:0::1",)),
        (lambda: to_pem(_leaf(with_san=False, common_name="leaf.example.com")), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(with_san=False, common_name="Leaf.Example.com")), ("leaf.example.com",)),
        (lambda: to_pem(_leaf(with_san=False, common_name="10.0.0.1")), ("10.0.0.1",)),
        (lambda: to_pem(_leaf(with_san=False)), ("leaf.example.com", "EMAIL:ops@example.com")),
        (lambda: to_pem(_leaf(dns_names=("leaf.example.com",))), ("leaf.example.com", "URI:https://leaf.example.com/")),
        (lambda: to_pem(_leaf(dns_names=("a.example.com", "leaf.example.com", "b.example.com"))), ("leaf.example.com",)),
    ],
    ids=[
        "leaf-alone",
        "leaf-and-ca",
        "text-around-the-pem",
        "crlf-line-endings",
        "several-dns-and-ip",
        "wildcard-covers-one-label",
        "wildcard-requested-exactly",
        "san-case-insensitive",
        "san-trailing-dot",
        "ipv6-normalised",
        "cn-only-single-name",
        "cn-only-case-insensitive",
        "cn-only-single-ip",
        "email-sans-are-not-checked",
        "uri-sans-are-not-checked",
        "more-names-than-requested",
    ],
)
def test_check_issued_accepts(pem_factory, names):
    pem = pem_factory()
    result = _check(pem, names=names)
    leaf = x509.load_pem_x509_certificate(result.leaf_pem.encode())
    assert spki_sha256(KEY) == result.facts.public_key_sha256
    assert result.facts.serial == format(leaf.serial_number, "x")
    assert result.leaf_pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert result.leaf_pem.count("BEGIN CERTIFICATE") == 1


def test_check_issued_returns_leaf_chain_and_facts():
    leaf = _leaf()
    intermediate = make_leaf(CA, common_name="Intermediate", dns_names=())
    result = _check(to_pem(leaf, CA.cert, intermediate))
    assert result.leaf_pem == to_pem(leaf)
    assert result.chain_pem == to_pem(CA.cert, intermediate)
    assert result.facts.not_before == leaf.not_valid_before_utc
    assert result.facts.not_after == leaf.not_valid_after_utc
    assert len(result.facts.fingerprint_sha256) == 64


def test_check_issued_accepts_an_rsa_leaf_under_an_rsa_ca():
    rsa_ca = make_ca("RSA CA", key=rsa_key())
    key = rsa_key()
    leaf = make_leaf(rsa_ca, key=key)
    result = _check(to_pem(leaf, rsa_ca.cert), key=key)
    assert result.chain_pem == to_pem(rsa_ca.cert)


# --- check 1: PEM ---------------------------------------------------------------------


def _corrupt_base64(pem: str) -> str:
    """The PEM with one base64 character replaced by one that is not base64."""
    lines = pem.splitlines(keepends=True)
    lines[2] = "!" + lines[2][1:]
    return "".join(lines)


def _truncate_base64(pem: str) -> str:
    """A syntactically tidy PEM block whose DER is cut short."""
    lines = pem.splitlines(keepends=True)
    return "".join(lines[:3] + lines[-1:])


@pytest.mark.parametrize(
    "pem_factory",
    [
        lambda: "",
        lambda: "no certificate here",
        lambda: None,
        lambda: to_pem(_leaf()).encode(),
        lambda: ["-----BEGIN CERTIFICATE-----"],
        lambda: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        lambda: _truncate_base64(to_pem(_leaf())),
        lambda: to_pem(_leaf()) + _truncate_base64(to_pem(CA.cert)),
        lambda: to_pem(_leaf()) + _corrupt_base64(to_pem(CA.cert)),
        lambda: _corrupt_base64(to_pem(_leaf())) + to_pem(CA.cert),
        lambda: to_pem(_leaf()) + to_pem(CA.cert).split("-----END")[0],
        lambda: ec_key_pem(),
    ],
    ids=[
        "empty",
        "plain-text",
        "none",
        "bytes-not-text",
        "list-not-text",
        "der-garbage",
        "leaf-der-truncated",
        "chain-der-truncated",
        "chain-base64-corrupted",
        "leaf-base64-corrupted",
        "chain-block-unterminated",
        "private-key-only",
    ],
)
def test_check_1_pem(pem_factory):
    _fails(pem_factory(), "check 1 (PEM)")


def ec_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    return KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_check_1_names_the_bad_chain_certificate():
    message = _fails(to_pem(_leaf(), CA.cert) + _truncate_base64(to_pem(CA.cert)), "check 1 (PEM)")
    assert "chain certificate 2" in message


# --- check 2: key -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pem_factory",
    [
        lambda: to_pem(_leaf(key=ec_key())),
        lambda: to_pem(_leaf(key=rsa_key())),
        lambda: to_pem(CA.cert, _leaf()),
    ],
    ids=["other-ec-key", "other-rsa-key", "chain-first-leaf-second"],
)
def test_check_2_key(pem_factory):
    _fails(pem_factory(), "check 2 (key)")


# --- check 3: names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf_kwargs", "names", "missing"),
    [
        ({"dns_names": ("other.example.com",)}, ("leaf.example.com",), "DNS:leaf.example.com"),
        (
            {"dns_names": ("leaf.example.com",)},
            ("leaf.example.com", "www.example.com"),
            "DNS:www.example.com",
        ),
        ({"dns_names": ("*.example.com",)}, ("a.b.example.com",), "DNS:a.b.example.com"),
        ({"dns_names": ("*.example.com",)}, ("example.com",), "DNS:example.com"),
        ({"dns_names": ("www.example.com",)}, ("*.example.com",), "DNS:*.example.com"),
        ({"dns_names": ("leaf.example.com",)}, ("leaf.example.com", "IP:10.0.0.1"), "IP:10.0.0.1"),
        ({"dns_names": ("10.0.0.1",)}, ("IP:10.0.0.1",), "IP:10.0.0.1"),
        ({"dns_names": (), "ip_addresses": ("10.0.0.2",)}, ("IP:10.0.0.1",), "IP:10.0.0.1"),
        (
            {"with_san": False, "common_name": "leaf.example.com"},
            ("leaf.example.com", "www.example.com"),
            "DNS:www.example.com",
        ),
        (
            {"dns_names": ("other.example.com",), "common_name": "leaf.example.com"},
            ("leaf.example.com",),
            "DNS:leaf.example.com",
        ),
        (
            {"with_san": False, "common_name": "*.example.com"},
            ("a.example.com", "b.example.com"),
            "DNS:a.example.com, DNS:b.example.com",
        ),
        ({"with_san": False, "common_name": "other.example.com"}, ("leaf.example.com",), "DNS:leaf.example.com"),
        ({"with_san": False, "common_name": None}, ("leaf.example.com",), "DNS:leaf.example.com"),
    ],
    ids=[
        "other-name",
        "second-name-missing",
        "wildcard-covers-one-label-only",
        "wildcard-does-not-cover-apex",
        "wildcard-request-needs-wildcard",
        "ip-missing",
        "ip-as-dns-san-does-not-count",
        "other-ip",
        "cn-fallback-only-for-single-name",
        "cn-ignored-when-san-present",
        "wildcard-cn-not-used-for-two-names",
        "cn-only-wrong-name",
        "no-san-no-cn",
    ],
)
def test_check_3_names(leaf_kwargs, names, missing):
    message = _fails(to_pem(_leaf(**leaf_kwargs)), "check 3 (names)", names=names)
    assert missing in message


# --- check 4: validity -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("not_before", "not_after", "ok"),
    [
        (NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1), True),
        (NOW, NOW + dt.timedelta(days=1), True),
        (NOW + CLOCK_SKEW - SEC, NOW + dt.timedelta(days=1), True),
        (NOW + CLOCK_SKEW, NOW + dt.timedelta(days=1), True),
        (NOW + CLOCK_SKEW + SEC, NOW + dt.timedelta(days=1), False),
        (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=2), False),
        (NOW - dt.timedelta(days=2), NOW + SEC, True),
        (NOW - dt.timedelta(days=2), NOW, False),
        (NOW - dt.timedelta(days=2), NOW - SEC, False),
        (NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1), False),
    ],
    ids=[
        "well-inside",
        "starts-now",
        "starts-within-skew",
        "starts-at-skew-edge",
        "starts-just-past-skew",
        "starts-tomorrow",
        "expires-in-a-second",
        "expires-now",
        "expired-a-second-ago",
        "expired-yesterday",
    ],
)
def test_check_4_validity(not_before, not_after, ok):
    pem = to_pem(_leaf(not_before=not_before, not_after=not_after), CA.cert)
    if ok:
        assert _check(pem).facts.not_after == not_after
    else:
        _fails(pem, "check 4 (validity)")


def test_clock_skew_is_five_minutes():
    assert CLOCK_SKEW == dt.timedelta(minutes=5)


# --- check 5: chain -------------------------------------------------------------------


def _leaf_with_bad_signature() -> str:
    """The leaf with one byte of its signature flipped."""
    from cryptography.hazmat.primitives import serialization

    der = bytearray(_leaf().public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    cert = x509.load_der_x509_certificate(bytes(der))
    return to_pem(cert)


@pytest.mark.parametrize(
    "pem_factory",
    [
        lambda: to_pem(_leaf(), OTHER_CA.cert),
        lambda: to_pem(make_leaf(OTHER_CA, key=KEY), CA.cert),
        lambda: to_pem(_leaf(), make_ca("Unrelated CA").cert),
        lambda: to_pem(_leaf(issuer_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elsewhere")])), CA.cert),
        lambda: _leaf_with_bad_signature() + CA.pem,
        lambda: to_pem(_leaf(), make_ca("RSA CA", key=rsa_key()).cert),
        lambda: to_pem(_leaf(), _leaf(common_name="sibling.example.com", key=ec_key())),
    ],
    ids=[
        "same-name-other-ca-key",
        "signed-by-other-ca",
        "unrelated-ca",
        "issuer-name-mismatch",
        "tampered-signature",
        "ca-of-other-key-type",
        "sibling-leaf-as-chain",
    ],
)
def test_check_5_chain(pem_factory):
    _fails(pem_factory(), "check 5 (chain)")


def test_check_5_only_looks_at_the_first_chain_certificate():
    # A second chain certificate that signed nothing here does not matter.
    result = _check(to_pem(_leaf(), CA.cert, OTHER_CA.cert))
    assert result.chain_pem == to_pem(CA.cert, OTHER_CA.cert)


def test_checks_run_in_order():
    # wrong key AND wrong names AND expired AND wrong chain: the key check is reported
    pem = to_pem(
        make_leaf(OTHER_CA, key=ec_key(), dns_names=("x.example.com",), not_before=NOW - dt.timedelta(days=2), not_after=NOW - dt.timedelta(days=1)),
        CA.cert,
    )
    _fails(pem, "check 2 (key)")
    # right key, wrong names, expired, wrong chain: names
    pem = to_pem(
        make_leaf(OTHER_CA, key=KEY, dns_names=("x.example.com",), not_before=NOW - dt.timedelta(days=2), not_after=NOW - dt.timedelta(days=1)),
        CA.cert,
    )
    _fails(pem, "check 3 (names)")
    # right key and names, expired, wrong chain: validity
    pem = to_pem(make_leaf(OTHER_CA, key=KEY, not_before=NOW - dt.timedelta(days=2), not_after=NOW - dt.timedelta(days=1)), CA.cert)
    _fails(pem, "check 4 (validity)")


# --- dns_name_covered ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "presented", "expected"),
    [
        ("www.example.com", ["www.example.com"], True),
        ("WWW.Example.com", ["www.example.com"], True),
        ("www.example.com.", ["www.example.com"], True),
        ("www.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], False),
        ("a.b.example.com", ["*.b.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("*.example.com", ["*.example.com"], True),
        ("*.example.com", ["www.example.com"], False),
        ("*.a.example.com", ["*.example.com"], False),
        ("localhost", ["*.localhost"], False),
        ("localhost", ["localhost"], True),
        ("www.example.com", ["www.example.org"], False),
        ("www.example.com", [], False),
        ("wwwexample.com", ["*.example.com"], False),
        ("*.example.com", ["*.com"], False),
    ],
    ids=[
        "exact",
        "requested-upper-case",
        "requested-trailing-dot",
        "wildcard-one-label",
        "wildcard-not-two-labels",
        "deeper-wildcard",
        "wildcard-not-apex",
        "wildcard-exact",
        "wildcard-requested-name-presented",
        "wildcard-requested-wider-wildcard-presented",
        "single-label-not-under-wildcard",
        "single-label-exact",
        "other-domain",
        "nothing-presented",
        "no-dot-boundary",
        "wildcard-requested-not-under-wider-wildcard",
    ],
)
def test_dns_name_covered(requested, presented, expected):
    assert dns_name_covered(requested, presented) is expected
