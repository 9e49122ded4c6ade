"""Reading certificates: PEM splitting, fingerprints, public-key digests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def split_pem_certificates(text: str) -> list[str]:
    """Every CERTIFICATE block of `text`, in order, normalised to end with a newline.
    Raises ValueError for a block without its END line or with a body that is not base64,
    so a damaged block is never silently left out."""
    blocks = []
    start = text.find(_BEGIN)
    while start != -1:
        end = text.find(_END, start)
        if end == -1:
            raise ValueError(f"certificate {len(blocks) + 1} has no END CERTIFICATE line")
        body = "".join(text[start + len(_BEGIN) : end].split())
        if not _BASE64_RE.fullmatch(body) or len(body) % 4:
            raise ValueError(f"certificate {len(blocks) + 1} is not valid base64")
        blocks.append(f"{_BEGIN}\n" + "\n".join(body[i : i + 64] for i in range(0, len(body), 64)) + f"\n{_END}\n")
        next_begin = text.find(_BEGIN, start + len(_BEGIN))
        if next_begin != -1 and next_begin < end:
            raise ValueError(f"certificate {len(blocks)} has no END CERTIFICATE line")
        start = text.find(_BEGIN, end)
    return blocks


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
