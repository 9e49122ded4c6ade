"""Where the key pair of the next revision is made: `KeyBackend`, one per key storage.

`SoftwareKeys` generates with pyca/cryptography and seals the private key under the
master key; `HsmKeys` generates inside a PKCS#11 token and signs the CSR there.
Issuance asks `backend_for` and never branches on the storage itself; a test can
hand it any object with `new_key`.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from certpilot.domain.errors import KeyBackendError
from certpilot.domain.model import CertificateSpec
from certpilot.keys import pkcs11_backend
from certpilot.keys.sealing import Sealer
from certpilot.keys.software import generate_private_key, seal_private_key
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.csr import build_csr, build_csr_with_signer
from certpilot.services import hsm
from certpilot.services.app import App
from certpilot.store.certificates import StoredKey


class KeyBackend(Protocol):
    def new_key(self, certificate: str, spec: CertificateSpec) -> StoredKey:
        """A new key pair for `certificate` and its CSR, ready to be stored before any CA
        sees the CSR. Raises `KeyBackendError`."""
        ...


class SoftwareKeys:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def new_key(self, certificate: str, spec: CertificateSpec) -> StoredKey:
        key_id = uuid.uuid4().hex
        private_key = generate_private_key(spec.key)
        return StoredKey(
            key_id=key_id, backend="software", key_spec=spec.key,
            private_key_sealed=seal_private_key(self._sealer, private_key, key_id),
            public_key_sha256=public_key_sha256(private_key.public_key()),
            csr_pem=build_csr(private_key, spec.subject, spec.subject_alt_names),
        )


class HsmKeys:
    def __init__(self, app: App, group: str) -> None:
        self._app = app
        self._group = group

    def new_key(self, certificate: str, spec: CertificateSpec) -> StoredKey:
        key_id = uuid.uuid4().hex
        ref = hsm.token_ref(self._app, self._group)
        token_id = bytes.fromhex(key_id)
        label = f"certpilot-{certificate}-{key_id[:8]}"[:64]
        generated = pkcs11_backend.generate_key(ref, spec.key, label=label, key_id=token_id)
        try:
            public_key = pkcs11_backend.public_key_of(spec.key, generated)
            csr_pem = build_csr_with_signer(
                public_key, lambda tbs: pkcs11_backend.sign(ref, token_id, spec.key, tbs), spec.key,
                spec.subject, spec.subject_alt_names,
            )
        except (KeyBackendError, ValueError) as exc:
            pkcs11_backend.destroy_key(ref, token_id)  # nothing half-made stays in the token
            raise KeyBackendError(f"the HSM key could not sign the CSR: {exc}") from exc
        return StoredKey(
            key_id=key_id, backend="pkcs11", key_spec=spec.key, private_key_sealed=None,
            public_key_sha256=public_key_sha256(public_key), csr_pem=csr_pem,
            hsm_group=self._group, pkcs11_label=label, pkcs11_id=key_id,
        )


def backend_for(app: App, spec: CertificateSpec) -> KeyBackend:
    """The backend that holds `spec`'s keys: its HSM group's token, else software."""
    return HsmKeys(app, spec.hsm_group) if spec.hsm_group is not None else SoftwareKeys(app.sealer)
