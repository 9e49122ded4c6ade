"""Building a CSR from a subject, its alternative names and a private key."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certpilot.domain.model import SanKind, Subject, SubjectAltName

_SUBJECT_OIDS = (
    ("country", NameOID.COUNTRY_NAME),
    ("state", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME),
    ("organization", NameOID.ORGANIZATION_NAME),
    ("organizational_unit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("common_name", NameOID.COMMON_NAME),
    ("email_address", NameOID.EMAIL_ADDRESS),
)


def x509_name(subject: Subject) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(oid, getattr(subject, attr)) for attr, oid in _SUBJECT_OIDS if getattr(subject, attr)]
    )


def general_names(sans: tuple[SubjectAltName, ...]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for san in sans:
        if san.kind is SanKind.DNS:
            result.append(x509.DNSName(san.value))
        elif san.kind is SanKind.IP:
            result.append(x509.IPAddress(ipaddress.ip_address(san.value)))
        elif san.kind is SanKind.EMAIL:
            result.append(x509.RFC822Name(san.value))
        else:
            result.append(x509.UniformResourceIdentifier(san.value))
    return result


def build_csr(
    private_key: CertificateIssuerPrivateKeyTypes,
    subject: Subject,
    sans: tuple[SubjectAltName, ...],
) -> str:
    """The CSR as PEM text, signed with SHA-256 by `private_key`."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509_name(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names(sans)), critical=False)
    csr = builder.sign(private_key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
