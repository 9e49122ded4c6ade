"""Building a CSR from a subject, its alternative names and a private key."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from certpilot.domain.model import KeySpec, SanKind, Subject, SubjectAltName

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


_SIGNATURE_ALGORITHMS = {"p256": "sha256_ecdsa", "p384": "sha384_ecdsa", "p521": "sha512_ecdsa", None: "sha256_rsa"}


def build_csr_with_signer(
    public_key: PublicKeyTypes,
    sign: Callable[[bytes], bytes],
    key_spec: KeySpec,
    subject: Subject,
    sans: tuple[SubjectAltName, ...],
) -> str:
    """The CSR as PEM text, for a key that signs elsewhere (an HSM): the request info is
    encoded here and `sign(tbs_der)` returns the DER signature over it."""
    from asn1crypto import algos, core, csr, keys, x509 as asn1_x509

    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    attributes = []
    if sans:
        extension = x509.SubjectAlternativeName(general_names(sans))
        attributes.append({
            "type": "extension_request",
            "values": [[{"extn_id": "subject_alt_name", "critical": False,
                         "extn_value": asn1_x509.GeneralNames.load(extension.public_bytes())}]],
        })
    info = csr.CertificationRequestInfo({
        "version": "v1",
        "subject": asn1_x509.Name.load(x509_name(subject).public_bytes()),
        "subject_pk_info": keys.PublicKeyInfo.load(spki),
        "attributes": attributes,
    })
    algorithm = _SIGNATURE_ALGORITHMS[key_spec.curve if key_spec.algorithm == "ec" else None]
    request = csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
        "signature": core.OctetBitString(sign(info.dump())),
    })
    loaded = x509.load_der_x509_csr(request.dump())
    if not loaded.is_signature_valid:
        raise ValueError("the signer's signature over the CSR does not verify")
    return loaded.public_bytes(serialization.Encoding.PEM).decode("ascii")
