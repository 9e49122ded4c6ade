"""The five checks on what an issuer script returned (DESIGN §2).

`check_issued` returns the parsed leaf and chain, or raises `IssuerFailed` with
outcome `invalid` and a message naming the check that failed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certpilot.domain.errors import IssuerFailed
from certpilot.domain.model import SanKind, SubjectAltName
from certpilot.pki.certificate import CertificateFacts, facts, public_key_sha256, split_pem_certificates, to_pem

CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedCertificate:
    leaf_pem: str
    chain_pem: str
    facts: CertificateFacts


def _invalid(message: str) -> IssuerFailed:
    return IssuerFailed(message, outcome="invalid")


def parse_returned_pem(text: object) -> list[x509.Certificate]:
    """Check 1: the script's return value parses as PEM X.509 certificates."""
    if not isinstance(text, str):
        raise _invalid(f"check 1 (PEM): the script returned {type(text).__name__}, not PEM text")
    try:
        blocks = split_pem_certificates(text)
    except ValueError as exc:
        raise _invalid(f"check 1 (PEM): {exc}") from exc
    if not blocks:
        raise _invalid("check 1 (PEM): the script's return value holds no PEM certificate")
    certs = []
    for index, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block.encode("ascii")))
        except ValueError as exc:
            which = "the leaf" if index == 0 else f"chain certificate {index}"
            raise _invalid(f"check 1 (PEM): {which} does not parse as X.509: {exc}") from exc
    return certs


def _leaf_names(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [name.lower().rstrip(".") for name in ext.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return dns, ips


def _leaf_common_names(leaf: x509.Certificate) -> list[str]:
    return [str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def _normal_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def dns_name_covered(requested: str, presented: list[str]) -> bool:
    """`requested` is in `presented`, exactly or under a one-label wildcard."""
    requested = requested.lower().rstrip(".")
    if requested in presented:
        return True
    head, _, rest = requested.partition(".")
    return bool(rest) and not requested.startswith("*.") and f"*.{rest}" in presented


def check_issued(
    pem_text: object,
    *,
    expected_public_key_sha256: str,
    requested_names: tuple[SubjectAltName, ...],
    now: dt.datetime,
) -> IssuedCertificate:
    certs = parse_returned_pem(pem_text)
    leaf, chain = certs[0], certs[1:]

    # 2. the leaf certifies the key of this CSR
    if public_key_sha256(leaf.public_key()) != expected_public_key_sha256:
        raise _invalid("check 2 (key): the returned certificate is for another key, not the key of this CSR")

    # 3. every requested DNS name and IP is covered
    dns, ips = _leaf_names(leaf)
    wanted = [s for s in requested_names if s.kind in (SanKind.DNS, SanKind.IP)]
    if not dns and not ips and len(wanted) == 1:  # a single-name request may be answered by CN alone
        dns = _leaf_common_names(leaf)
        ips = [_normal_ip(cn) for cn in dns if _normal_ip(cn)]
    missing = [
        str(s)
        for s in wanted
        if (s.kind is SanKind.DNS and not dns_name_covered(s.value, dns))
        or (s.kind is SanKind.IP and str(ipaddress.ip_address(s.value)) not in ips)
    ]
    if missing:
        raise _invalid("check 3 (names): the returned certificate does not cover " + ", ".join(missing))

    # 4. valid now, allowing for clock skew
    if leaf.not_valid_after_utc <= now:
        raise _invalid(
            f"check 4 (validity): the returned certificate expired at {leaf.not_valid_after_utc.isoformat()}"
        )
    if leaf.not_valid_before_utc > now + CLOCK_SKEW:
        raise _invalid(
            f"check 4 (validity): the returned certificate is not valid before {leaf.not_valid_before_utc.isoformat()}"
        )

    # 5. the first chain certificate signed the leaf
    if chain:
        try:
            leaf.verify_directly_issued_by(chain[0])
        except (ValueError, TypeError, InvalidSignature) as exc:
            reason = str(exc) or type(exc).__name__
            raise _invalid(
                f"check 5 (chain): the leaf is not signed by the first chain certificate ({reason})"
            ) from exc

    return IssuedCertificate(
        leaf_pem=to_pem(leaf),
        chain_pem="".join(to_pem(c) for c in chain),
        facts=facts(leaf),
    )
