"""Reading certificates: PEM splitting, fingerprints, public-key digests, facts."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from certpilot.pki.certificate import (
    facts,
    fingerprint_sha256,
    public_key_sha256,
    serial_hex,
    split_pem_certificates,
    to_pem,
)
from tests.unit.pki.certs_for_tests import ec_key, make_ca, make_leaf, rsa_key, spki_sha256
from tests.unit.pki.certs_for_tests import to_pem as pem_of

CA = make_ca("Certificate Test CA")
LEAF = make_leaf(CA)
LEAF_PEM = pem_of(LEAF)
CA_PEM = pem_of(CA.cert)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("hello", []),
        (LEAF_PEM, [LEAF_PEM]),
        (LEAF_PEM + CA_PEM, [LEAF_PEM, CA_PEM]),
        ("preamble\n" + LEAF_PEM + "\nbetween\n" + CA_PEM + "trailer", [LEAF_PEM, CA_PEM]),
        (LEAF_PEM.rstrip("\n") + CA_PEM, [LEAF_PEM, CA_PEM]),
        ("  " + LEAF_PEM + "   \n\n", [LEAF_PEM]),
        (LEAF_PEM.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN X509 CRL-----"), []),
    ],
    ids=[
        "empty",
        "no-pem",
        "one",
        "two-in-order",
        "text-around-and-between",
        "no-newline-between-blocks",
        "surrounding-whitespace",
        "other-pem-type",
    ],
)
def test_split_pem_certificates(text, expected):
    assert split_pem_certificates(text) == expected


def test_to_pem_round_trips():
    assert to_pem(LEAF) == LEAF_PEM


@pytest.mark.parametrize("make_key", [ec_key, rsa_key], ids=["ec", "rsa"])
def test_public_key_sha256_is_sha256_of_spki_der(make_key):
    key = make_key()
    assert public_key_sha256(key.public_key()) == spki_sha256(key)
    assert public_key_sha256(key.public_key()) != public_key_sha256(make_key().public_key())


def test_fingerprint_is_sha256_of_der():
    assert fingerprint_sha256(LEAF) == hashlib.sha256(LEAF.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert fingerprint_sha256(LEAF) != fingerprint_sha256(CA.cert)


def test_facts_of_a_leaf():
    key = ec_key()
    leaf = make_leaf(CA, key=key)
    f = facts(leaf)
    assert f.serial == serial_hex(leaf) == format(leaf.serial_number, "x")
    assert int(f.serial, 16) == leaf.serial_number
    assert f.not_before == leaf.not_valid_before_utc and f.not_before.tzinfo is not None
    assert f.not_after == leaf.not_valid_after_utc
    assert f.fingerprint_sha256 == fingerprint_sha256(leaf)
    assert f.public_key_sha256 == spki_sha256(key)
