"""Reading certificates: PEM splitting, fingerprints, public-key digests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

_PEM_CERT_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----", re.MULTILINE
)


def split_pem_certificates(text: str) -> list[str]:
    """Every CERTIFICATE block of `text`, in order, normalised to end with a newline."""
    return [block.strip() + "\n" for block in _PEM_CERT_RE.findall(text)]


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def public_key_sha256(key: PublicKeyTypes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: identifies a key pair across certificates."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass(frozen=True)
class CertificateFacts:
    """What certpilot stores about an issued leaf."""

    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    public_key_sha256: str


def facts(cert: x509.Certificate) -> CertificateFacts:
    return CertificateFacts(
        serial=serial_hex(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint_sha256(cert),
        public_key_sha256=public_key_sha256(cert.public_key()),
    )
