"""The in-process bound: the crypto of one issuance with no certpilot around it.

Per certificate, in this thread only (so on one core at a time):

    key generation -> CSR build + signature -> PEM
    -> CA side: parse the CSR PEM, verify its signature, build the leaf with the
       extensions the bundled local-CA script adds, sign it with the CA key
       (loaded once), PEM of leaf + CA
    -> checks: parse leaf and chain from PEM, compare the leaf's public key with
       the CSR's, read the SANs and validity, verify the leaf's signature with
       the CA certificate, fingerprint and key digest of the leaf.

It is the work certpilot cannot avoid when it issues through the local CA; what
is not here (database, sealing, the worker process, the script re-reading the CA
files, ORM) is certpilot's overhead. Only pyca/cryptography is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes

    @classmethod
    def load(cls, cert_path: str, key_path: str, password: str) -> CA:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=password.encode())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(x509.load_pem_x509_certificate(cert_pem), key, cert_pem)


def generate_key(key_spec: str):
    if key_spec == "rsa:2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_spec == "ec:p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"the bound knows no key {key_spec!r}")


def _spki_sha256(public_key) -> str:
    return hashlib.sha256(public_key.public_bytes(DER, SPKI)).hexdigest()


def issue_once(ca: CA, key_spec: str, host: str) -> str:
    """One certificate's crypto; returns the leaf's fingerprint."""
    # 1. key and CSR (what the controller does)
    key = generate_key(key_spec)
    csr_pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(PEM)
    )
    expected = _spki_sha256(key.public_key())

    # 2. the CA signs (what the bundled local-CA script does, CA key already in memory)
    request = x509.load_pem_x509_csr(csr_pem)
    if not request.is_signature_valid:
        raise RuntimeError("CSR signature does not verify")
    now = dt.datetime.now(dt.timezone.utc)
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    leaf = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca.cert.subject)
        .public_key(request.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - dt.timedelta(seconds=30))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()), critical=False)
        .add_extension(san, critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    returned = leaf.public_bytes(PEM) + ca.cert_pem

    # 3. parse and check the result (what certpilot's checks do)
    end = b"-----END CERTIFICATE-----\n"
    leaf_pem, chain_pem = returned.split(end, 1)
    parsed = x509.load_pem_x509_certificate(leaf_pem + end)
    chain = x509.load_pem_x509_certificate(chain_pem)
    if _spki_sha256(parsed.public_key()) != expected:
        raise RuntimeError("leaf is for another key")
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if host not in names.get_values_for_type(x509.DNSName):
        raise RuntimeError("leaf does not cover the host")
    if not parsed.not_valid_before_utc <= now + dt.timedelta(minutes=5) < parsed.not_valid_after_utc:
        raise RuntimeError("leaf not valid now")
    parsed.verify_directly_issued_by(chain)
    parsed.public_bytes(PEM), chain.public_bytes(PEM)  # certpilot stores normalised PEM
    return hashlib.sha256(parsed.public_bytes(DER)).hexdigest()


def run(ca: CA, key_spec: str, count: int, tag: str) -> tuple[float, float]:
    """Issue `count` certificates back to back; returns (wall seconds, CPU seconds of this process)."""
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(count):
        issue_once(ca, key_spec, f"h{i}.{tag}.bound.test")
    return time.perf_counter() - started, time.process_time() - cpu
