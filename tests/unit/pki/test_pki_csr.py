"""build_csr: the CSR carries the subject, the SANs in order, the key, and a valid signature."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import SubjectAltName, make_sans, make_subject
from certpilot.pki.csr import build_csr
from tests.unit.pki.certs_for_tests import ec_key, rsa_key, spki_sha256


def _load(pem: str) -> x509.CertificateSigningRequest:
    assert pem.startswith("-----BEGIN CERTIFICATE REQUEST-----\n")
    assert pem.rstrip().endswith("-----END CERTIFICATE REQUEST-----")
    return x509.load_pem_x509_csr(pem.encode("ascii"))


def _san_strings(csr: x509.CertificateSigningRequest) -> list[str]:
    ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ext.critical is False
    out = []
    for name in ext.value:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"EMAIL:{name.value}")
        else:
            out.append(f"URI:{name.value}")
    return out


@pytest.mark.parametrize(
    "make_key",
    [ec_key, lambda: ec.generate_private_key(ec.SECP384R1()), lambda: ec.generate_private_key(ec.SECP521R1()), rsa_key],
    ids=["ec-p256", "ec-p384", "ec-p521", "rsa-2048"],
)
def test_csr_is_signed_by_and_for_the_key(make_key):
    key = make_key()
    pem = build_csr(key, make_subject("web1.example.com"), make_sans("web1.example.com", []))
    csr = _load(pem)
    assert csr.is_signature_valid
    assert spki_sha256(key) == spki_sha256_of_public(csr.public_key())
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    assert isinstance(csr.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))


def spki_sha256_of_public(public_key) -> str:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    ("subject_kwargs", "expected"),
    [
        ({"common_name": "web1.example.com"}, [(NameOID.COMMON_NAME, "web1.example.com")]),
        (
            {
                "common_name": "web1.example.com",
                "organization": "Example AG",
                "organizational_unit": "Ops",
                "locality": "Zürich",
                "state": "ZH",
                "country": "ch",
                "email_address": "ops@example.com",
            },
            [
                (NameOID.COUNTRY_NAME, "CH"),
                (NameOID.STATE_OR_PROVINCE_NAME, "ZH"),
                (NameOID.LOCALITY_NAME, "Zürich"),
                (NameOID.ORGANIZATION_NAME, "Example AG"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "Ops"),
                (NameOID.COMMON_NAME, "web1.example.com"),
                (NameOID.EMAIL_ADDRESS, "ops@example.com"),
            ],
        ),
        (
            {"common_name": "web1", "organization": "", "country": "DE"},
            [(NameOID.COUNTRY_NAME, "DE"), (NameOID.COMMON_NAME, "web1")],
        ),
    ],
    ids=["cn-only", "every-field-in-x509-order", "absent-fields-left-out"],
)
def test_csr_subject(subject_kwargs, expected):
    subject = make_subject(**subject_kwargs)
    csr = _load(build_csr(ec_key(), subject, ()))
    assert [(a.oid, a.value) for a in csr.subject] == expected


@pytest.mark.parametrize(
    ("common_name", "sans", "expected"),
    [
        ("web1.example.com", [], ["DNS:web1.example.com"]),
        (
            "web1.example.com",
            ["www.example.com", "*.api.example.com"],
            ["DNS:web1.example.com", "DNS:www.example.com", "DNS:*.api.example.com"],
        ),
        ("10.1.2.3", ["IP:2001:db8::1"], ["IP:10.1.2.3", "IP:2001:db8::1"]),
        (
            "svc",
            ["EMAIL:ops@example.com", "URI:spiffe://cluster.local/ns/a/sa/b"],
            ["DNS:svc", "EMAIL:ops@example.com", "URI:spiffe://cluster.local/ns/a/sa/b"],
        ),
    ],
    ids=["cn-as-dns-san", "dns-and-wildcard-in-order", "ipv4-and-ipv6", "email-and-uri"],
)
def test_csr_subject_alt_names_in_order(common_name, sans, expected):
    csr = _load(build_csr(ec_key(), make_subject(common_name), make_sans(common_name, sans)))
    assert _san_strings(csr) == expected


def test_csr_ip_san_is_an_ip_address_not_a_dns_name():
    csr = _load(build_csr(ec_key(), make_subject("10.0.0.1"), make_sans("10.0.0.1", [])))
    ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert ext.get_values_for_type(x509.DNSName) == []


def test_csr_without_sans_has_no_san_extension():
    csr = _load(build_csr(ec_key(), make_subject("legacy-device"), ()))
    with pytest.raises(x509.ExtensionNotFound):
        csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    "san_text",
    [
        "EMAIL:jörg@example.com",
        "URI:https://bücher.example/",
        "jörg@example.com",
        "DNS:web1.example.com",
        "URI:https://example.com/a?b=c#d",
    ],
    ids=["non-ascii-email", "non-ascii-uri", "bare-non-ascii-email", "plain-dns", "uri-with-query"],
)
def test_every_san_that_parses_can_go_into_a_csr(san_text):
    """Validate once, where data enters: a SAN accepted by parse must not break the CSR later."""
    try:
        san = SubjectAltName.parse(san_text)
    except InvalidInput:
        return  # refused at the edge: fine
    csr = _load(build_csr(ec_key(), make_subject("svc"), (san,)))
    assert len(_san_strings(csr)) == 1
