"""Export encodings: the private key as PKCS#8 PEM, and PKCS#12 bundles that load back."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certpilot.pki.encoding import pkcs12_bundle, private_key_pem
from tests.unit.pki.certs_for_tests import ec_key, make_ca, make_leaf, rsa_key, spki_sha256, to_pem

CA = make_ca("Encoding Test CA")
INTERMEDIATE = make_leaf(CA, common_name="Encoding Intermediate", dns_names=())


@pytest.mark.parametrize("make_key", [ec_key, rsa_key], ids=["ec", "rsa"])
def test_private_key_pem_is_unencrypted_pkcs8(make_key):
    key = make_key()
    pem = private_key_pem(key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(pem.encode(), password=None)
    assert spki_sha256(loaded) == spki_sha256(key)


@pytest.mark.parametrize(
    ("with_key", "chain", "password"),
    [
        (True, (CA.cert,), b"s3cret"),
        (True, (INTERMEDIATE, CA.cert), b"s3cret"),
        (True, (), b"s3cret"),
        (True, (CA.cert,), None),
        (False, (CA.cert,), b"s3cret"),
        (False, (), None),
    ],
    ids=[
        "key-chain-password",
        "two-chain-certs-in-order",
        "no-chain",
        "no-password",
        "no-key",
        "leaf-only-no-password",
    ],
)
def test_pkcs12_bundle_round_trip(with_key, chain, password):
    key = ec_key()
    leaf = make_leaf(CA, key=key)
    data = pkcs12_bundle("web1", to_pem(leaf), to_pem(*chain), key if with_key else None, password)
    bundle = pkcs12.load_pkcs12(data, password)
    if with_key:
        # with a key, the loader picks out the certificate that matches it
        assert bundle.key is not None and spki_sha256(bundle.key) == spki_sha256(key)
        assert bundle.cert is not None
        entries = [bundle.cert, *bundle.additional_certs]
    else:
        assert bundle.key is None
        assert bundle.cert is None  # without a key the loader cannot tell the leaf apart
        entries = list(bundle.additional_certs)
    assert [e.certificate for e in entries] == [leaf, *chain]
    assert entries[0].friendly_name == b"web1"


def test_pkcs12_bundle_with_password_does_not_open_without_it():
    key = ec_key()
    data = pkcs12_bundle("web1", to_pem(make_leaf(CA, key=key)), to_pem(CA.cert), key, b"right")
    for wrong in (b"wrong", None):
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates(data, wrong)
