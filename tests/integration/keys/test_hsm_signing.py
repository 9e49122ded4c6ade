"""A signature made by the token key of an HSM certificate verifies with the
certificate's public key (pyca/cryptography), EC and RSA: once made with python-pkcs11
directly, once through `pkcs11_backend.sign` (what certpilot signs CSRs with).

Runs on SQLite and PostgreSQL. (No OpenSSL pkcs11 provider is installed here, so no
`openssl pkeyutl` check.)
"""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from certpilot.domain.model import KeySpec, Outcome
from certpilot.keys import pkcs11_backend
from certpilot.services.app import App
from certpilot.services.issuance import attempt
from tests.integration.keys.hsm_support import (
    ACTOR,
    SoftHsm,
    request_hsm,
    served_certificate,
    served_key,
    sign_in_token,
    verify,
)

BACKEND_HASHES = {"ec:p256": hashes.SHA256(), "ec:p384": hashes.SHA384(), "rsa:2048": hashes.SHA256()}


@pytest.mark.parametrize("key", ["ec:p256", "ec:p384", "rsa:2048"])
def test_token_signature_verifies_with_the_certificate(hsm_app: App, softhsm: SoftHsm, key: str) -> None:
    request_hsm(hsm_app, "signer", key)
    report = attempt(hsm_app, "signer", actor=ACTOR)
    assert report.outcome is Outcome.ISSUED, report.error
    public_key = served_certificate(hsm_app, "signer").public_key()
    token_id = served_key(hsm_app, "signer").token_id
    data = os.urandom(777)

    signature, kind = sign_in_token(softhsm.ref, token_id, data)
    assert kind == key.split(":")[0]
    verify(public_key, signature, data, hashes.SHA256())

    through_backend = pkcs11_backend.sign(softhsm.ref, token_id, KeySpec.parse(key), data)
    verify(public_key, through_backend, data, BACKEND_HASHES[key])

    with pytest.raises(InvalidSignature):
        verify(public_key, signature, data + b"!", hashes.SHA256())
