"""Software keys: generated for every key spec, sealed and opened under their key id."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certpilot.domain.errors import KeyBackendError
from certpilot.domain.model import KeySpec
from certpilot.keys.sealing import Sealer
from certpilot.keys.software import generate_private_key, key_identity, open_private_key, seal_private_key

MASTER = bytes(range(32))


def _private_numbers(key):
    return key.private_numbers()


@pytest.mark.parametrize(
    ("spec_text", "key_type", "size", "curve"),
    [
        ("rsa:2048", rsa.RSAPrivateKey, 2048, None),
        ("rsa:3072", rsa.RSAPrivateKey, 3072, None),
        pytest.param("rsa:4096", rsa.RSAPrivateKey, 4096, None, marks=pytest.mark.slow),
        ("ec:p256", ec.EllipticCurvePrivateKey, 256, "secp256r1"),
        ("ec:p384", ec.EllipticCurvePrivateKey, 384, "secp384r1"),
        ("ec:p521", ec.EllipticCurvePrivateKey, 521, "secp521r1"),
    ],
    ids=["rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384", "ec-p521"],
)
def test_generate_seal_open_round_trip(spec_text, key_type, size, curve):
    key = generate_private_key(KeySpec.parse(spec_text))
    assert isinstance(key, key_type)
    assert key.key_size == size
    if curve is not None:
        assert key.curve.name == curve
    else:
        assert key.public_key().public_numbers().e == 65537

    sealer = Sealer(MASTER)
    sealed = seal_private_key(sealer, key, "k-1")
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert der not in sealed
    opened = open_private_key(sealer, sealed, "k-1")
    assert type(opened) is type(key)
    assert _private_numbers(opened) == _private_numbers(key)


def test_each_generated_key_is_new():
    spec = KeySpec.parse("ec:p256")
    assert _private_numbers(generate_private_key(spec)) != _private_numbers(generate_private_key(spec))


def test_key_identity_names_the_key():
    assert key_identity("3f2a") == "key:3f2a:private_key"
    assert key_identity("a") != key_identity("b")


@pytest.mark.parametrize(
    ("open_key_id", "open_master"),
    [("k-2", MASTER), ("k-1 ", MASTER), ("k-1", bytes(range(1, 33)))],
    ids=["other-key-id", "key-id-with-space", "other-master-key"],
)
def test_sealed_key_opens_only_under_its_key_id_and_master_key(open_key_id, open_master):
    key = generate_private_key(KeySpec.parse("ec:p256"))
    sealed = seal_private_key(Sealer(MASTER), key, "k-1")
    with pytest.raises(KeyBackendError):
        open_private_key(Sealer(open_master), sealed, open_key_id)


def test_a_sealed_value_of_another_kind_is_not_taken_for_a_key():
    # a sealed parameter value copied into a key row: the identities differ
    sealer = Sealer(MASTER)
    sealed = sealer.seal(b"password", "param:1:value")
    with pytest.raises(KeyBackendError):
        open_private_key(sealer, sealed, "1")


def test_open_refuses_an_unsupported_key_type():
    sealer = Sealer(MASTER)
    der = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyBackendError) as info:
        open_private_key(sealer, sealer.seal(der, key_identity("k-9")), "k-9")
    assert "k-9" in str(info.value)


def test_open_refuses_sealed_bytes_that_are_not_a_key():
    # correctly sealed for this key id, but not DER: a KeyBackendError, not a bare ValueError
    sealer = Sealer(MASTER)
    with pytest.raises(KeyBackendError):
        open_private_key(sealer, sealer.seal(b"not a DER key", key_identity("k-3")), "k-3")
