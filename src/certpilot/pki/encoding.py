"""Export encodings: private key PEM and PKCS#12 bundles."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from certpilot.pki.certificate import split_pem_certificates


def private_key_pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def pkcs12_bundle(name: str, leaf_pem: str, chain_pem: str, key: PrivateKeyTypes | None, password: bytes | None) -> bytes:
    """A PKCS#12 file with the leaf, the chain and (if given) the key."""
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode("ascii"))
    chain = [x509.load_pem_x509_certificate(b.encode("ascii")) for b in split_pem_certificates(chain_pem)]
    encryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, leaf, chain or None, encryption)  # type: ignore[arg-type]
