"""Secrets at rest: AES-256-GCM under the master key, bound to the row they belong to.

A sealed value is `b"v1" || nonce(12) || ciphertext+tag`. The associated data is
the row's identity (for example ``b"key:3f2a…:private_key"``), so a ciphertext
copied into another row fails to open instead of disclosing a secret there.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certpilot.domain.errors import ConfigurationError, KeyBackendError

_VERSION = b"v1"
_NONCE_LEN = 12


class Sealer:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ConfigurationError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)
        self._master_key = master_key

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (e.g. signing web sessions), derived with HKDF so
        every server sharing the master key derives the same one."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._master_key)

    def seal(self, plaintext: bytes, identity: str) -> bytes:
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, identity.encode())

    def open(self, sealed: bytes, identity: str) -> bytes:
        if not sealed.startswith(_VERSION) or len(sealed) < len(_VERSION) + _NONCE_LEN + 16:
            raise KeyBackendError(f"sealed value for {identity} is malformed")
        nonce = sealed[len(_VERSION) : len(_VERSION) + _NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, sealed[len(_VERSION) + _NONCE_LEN :], identity.encode())
        except InvalidTag:
            raise KeyBackendError(
                f"sealed value for {identity} does not open: wrong master key, or the value was moved"
            ) from None

    def seal_text(self, plaintext: str, identity: str) -> bytes:
        return self.seal(plaintext.encode("utf-8"), identity)

    def open_text(self, sealed: bytes, identity: str) -> str:
        return self.open(sealed, identity).decode("utf-8")


def create_master_key_file(path: Path) -> None:
    """Write a new random master key (base64), mode 0600; refuses to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"master key {path} exists already; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")


def load_master_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigurationError(
            f"master key {path} not found: run `certpilot init` first, or set CERTPILOT_MASTER_KEY_FILE"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"master key {path} is not base64 text") from None
    except OSError as exc:
        raise ConfigurationError(f"master key {path} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigurationError(f"master key {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigurationError(f"master key {path} is not base64") from None
    if len(key) != 32:
        raise ConfigurationError(f"master key {path} does not hold 32 bytes")
    return key
