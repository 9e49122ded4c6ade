"""Test certificates made in-test with pyca/cryptography: a CA, and leaves it signs.

Every helper takes the moment to build around (`now`) so nothing reads the clock,
and every knob a check looks at (key, names, validity, issuer) can be chosen.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def pem(self) -> str:
        return to_pem(self.cert)


def make_ca(
    common_name: str = "Test CA",
    *,
    now: dt.datetime = NOW,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    lifetime: dt.timedelta = dt.timedelta(days=3650),
) -> CA:
    """A self-signed CA certificate valid from an hour before `now`."""
    key = key or ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CA(cert, key)


def make_leaf(
    ca: CA,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    common_name: str | None = "leaf.example.com",
    dns_names: Sequence[str] = ("leaf.example.com",),
    ip_addresses: Sequence[str] = (),
    emails: Sequence[str] = (),
    with_san: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    now: dt.datetime = NOW,
    issuer_name: x509.Name | None = None,
) -> x509.Certificate:
    """A leaf signed by `ca` for `key` (fresh EC key if None).

    `with_san=False` leaves out the SAN extension (a CN-only certificate);
    `issuer_name` overrides the issuer field, for a leaf that lies about its issuer.
    """
    key = key or ec_key()
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name is not None else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=90))
    )
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    general += [x509.RFC822Name(e) for e in emails]
    if with_san and general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def to_pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def spki_sha256(key: CertificateIssuerPrivateKeyTypes) -> str:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo, computed here independently of src."""
    import hashlib

    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()
