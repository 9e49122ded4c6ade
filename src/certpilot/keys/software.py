"""Software keys: generated with pyca/cryptography, stored sealed under the master key."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from certpilot.domain.errors import KeyBackendError
from certpilot.domain.model import KeySpec
from certpilot.keys.sealing import Sealer

_CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}


def generate_private_key(spec: KeySpec) -> CertificateIssuerPrivateKeyTypes:
    if spec.algorithm == "rsa":
        assert spec.size is not None
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.size)
    assert spec.curve is not None
    return ec.generate_private_key(_CURVES[spec.curve]())


def key_identity(key_id: str) -> str:
    return f"key:{key_id}:private_key"


def seal_private_key(sealer: Sealer, key: CertificateIssuerPrivateKeyTypes, key_id: str) -> bytes:
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return sealer.seal(der, key_identity(key_id))


def open_private_key(sealer: Sealer, sealed: bytes, key_id: str) -> CertificateIssuerPrivateKeyTypes:
    der = sealer.open(sealed, key_identity(key_id))
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise KeyBackendError(f"key {key_id} does not hold a private key: {exc}") from exc
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise KeyBackendError(f"key {key_id} is of an unsupported type")
    return key
