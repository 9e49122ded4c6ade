"""HSM keys over PKCS#11 (python-pkcs11): generated inside the token as private,
sensitive and non-extractable; CSRs are signed there; the key never leaves it.

Sessions are opened once per process and token, and reused under a lock (a
PKCS#11 session is not meant for two threads at once). Every PKCS#11 failure is
turned into a `KeyBackendError` that says what to fix.

A module reads its environment (SoftHSM2: SOFTHSM2_CONF) once, when a process
initialises it: a group's `env` is set in the process before that. When the module
was initialised earlier in this process with other values (a group removed and added
again with another environment), its sessions are closed and it is initialised
again, so it reads the new ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from certpilot.domain.errors import KeyBackendError
from certpilot.domain.model import KeySpec

_CURVE_NAMES = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}
_HASHES = {"p256": hashlib.sha256, "p384": hashlib.sha384, "p521": hashlib.sha512}


@dataclass(frozen=True)
class TokenRef:
    """Where the keys of an HSM group live; `pin` is clear text only inside a process."""

    module_path: str
    token_label: str
    pin: str
    env: tuple[tuple[str, str], ...] = ()  # what the module reads from the environment when loaded

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.module_path, self.token_label)


@dataclass(frozen=True)
class TokenInfo:
    label: str
    manufacturer: str
    model: str
    serial: str
    mechanisms: int


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise KeyBackendError("python-pkcs11 is not installed") from exc
    return pkcs11


def _explain(exc: Exception, ref: TokenRef) -> KeyBackendError:
    p11 = _pkcs11()
    name = type(exc).__name__
    if isinstance(exc, p11.exceptions.PinIncorrect):
        return KeyBackendError(f"the PIN of token {ref.token_label!r} is wrong")
    if isinstance(exc, p11.exceptions.UserAlreadyLoggedIn):
        return KeyBackendError(
            f"token {ref.token_label!r} is already logged in by this process through another HSM group "
            "with a different PIN; groups on one token must share its PIN"
        )
    if isinstance(exc, p11.exceptions.PinLocked):
        return KeyBackendError(f"the PIN of token {ref.token_label!r} is locked: reset it with the SO PIN")
    if isinstance(exc, (p11.exceptions.NoSuchToken,)):
        return KeyBackendError(f"no token labelled {ref.token_label!r} in {ref.module_path}")
    if isinstance(exc, (p11.exceptions.DeviceMemory, p11.exceptions.HostMemory)):
        return KeyBackendError(f"token {ref.token_label!r} is full: no room for another key")
    if isinstance(exc, (p11.exceptions.MechanismInvalid, p11.exceptions.KeyTypeInconsistent,
                        p11.exceptions.AttributeValueInvalid, p11.exceptions.DomainParamsInvalid,
                        p11.exceptions.TemplateInconsistent)):
        return KeyBackendError(f"token {ref.token_label!r} does not support this key type ({name})")
    return KeyBackendError(f"PKCS#11 error on token {ref.token_label!r}: {name} {exc}".strip())


class _Token:
    def __init__(self, ref: TokenRef) -> None:
        p11 = _pkcs11()
        lib = _load_module(ref)
        try:
            self.token = lib.get_token(token_label=ref.token_label)
            self.session = self.token.open(user_pin=ref.pin, rw=True)
        except p11.exceptions.PKCS11Error as exc:
            raise _explain(exc, ref) from exc
        self.ref = ref
        self.lock = threading.Lock()


_tokens: dict[tuple[str, str], _Token] = {}
_tokens_lock = threading.Lock()
# module path -> the environment this process had when it initialised the module
_initialised_with: dict[str, dict[str, str]] = {}


def _load_module(ref: TokenRef) -> Any:
    """The module of `ref`, initialised with `ref.env` in the environment (under `_tokens_lock`)."""
    p11 = _pkcs11()
    wanted = dict(ref.env)
    seen = _initialised_with.get(ref.module_path)
    if seen is not None and any(seen.get(name) != value for name, value in wanted.items()):
        _finalize_module(ref.module_path)
    os.environ.update(wanted)  # before C_Initialize, where modules read it
    try:
        lib = p11.lib(ref.module_path)
    except (RuntimeError, OSError, p11.exceptions.PKCS11Error) as exc:
        raise KeyBackendError(f"cannot load the PKCS#11 module {ref.module_path}: {exc}") from exc
    _initialised_with.setdefault(ref.module_path, dict(os.environ))
    return lib


def _finalize_module(module_path: str) -> None:
    """Close this process's sessions on the module and finalise it (under `_tokens_lock`)."""
    p11 = _pkcs11()
    for key in [k for k in _tokens if k[0] == module_path]:
        token = _tokens.pop(key)
        with token.lock:
            try:
                token.session.close()
            except Exception:
                pass
    try:
        p11.lib(module_path).finalize()
    except (RuntimeError, OSError, p11.exceptions.PKCS11Error):
        pass
    _initialised_with.pop(module_path, None)


def _token(ref: TokenRef) -> _Token:
    with _tokens_lock:
        token = _tokens.get(ref.cache_key)
        if token is not None and token.ref.pin != ref.pin:
            # login state belongs to the process: a second PIN cannot log in beside the first
            raise KeyBackendError(
                f"token {ref.token_label!r} is already logged in by this process through another HSM group "
                "with a different PIN; groups on one token must share its PIN"
            )
        if token is None:
            token = _tokens[ref.cache_key] = _Token(ref)
        return token


def close_sessions() -> None:
    """Close every session of this process (tests, shutdown)."""
    with _tokens_lock:
        for token in _tokens.values():
            try:
                token.session.close()
            except Exception:
                pass
        _tokens.clear()


def token_info(ref: TokenRef) -> TokenInfo:
    """Log in and describe the token (for `certpilot hsm check`)."""
    token = _token(ref)
    with token.lock:
        try:
            mechanisms = len(list(token.token.slot.get_mechanisms()))
        except _pkcs11().exceptions.PKCS11Error as exc:
            raise _explain(exc, ref) from exc
    t = token.token
    serial = t.serial.decode(errors="replace") if isinstance(t.serial, bytes) else str(t.serial)
    return TokenInfo(label=t.label, manufacturer=t.manufacturer_id, model=t.model, serial=serial, mechanisms=mechanisms)


def generate_key(ref: TokenRef, spec: KeySpec, *, label: str, key_id: bytes) -> PublicKeyTypes:
    """Generate a key pair in the token; the private half is sensitive and non-extractable.
    Returns the public key. Nothing is left behind in the token when this fails."""
    p11 = _pkcs11()
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    token = _token(ref)
    private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True,
                        Attribute.SIGN: True, Attribute.TOKEN: True}
    with token.lock:
        try:
            if spec.algorithm == "ec":
                params = token.session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_NAMES[spec.curve or ""])},
                    local=True,
                )
                pub, _priv = params.generate_keypair(store=True, label=label, id=key_id,
                                                     private_template=private_template)
                return serialization.load_der_public_key(encode_ec_public_key(pub))
            pub, _priv = token.session.generate_keypair(KeyType.RSA, spec.size, store=True, label=label, id=key_id,
                                                        private_template=private_template)
            numbers = rsa.RSAPublicNumbers(int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
                                           int.from_bytes(pub[Attribute.MODULUS], "big"))
            return numbers.public_key()
        except p11.exceptions.PKCS11Error as exc:
            _destroy_quietly(token, key_id)
            raise KeyBackendError(f"{_explain(exc, ref)} (generating a {spec} key)") from exc


def sign(ref: TokenRef, key_id: bytes, spec: KeySpec, data: bytes) -> bytes:
    """A DER-encoded signature of `data` by the token key (ECDSA with the curve's hash, or
    RSA PKCS#1 v1.5 with SHA-256), as X.509 structures carry it."""
    p11 = _pkcs11()
    from pkcs11 import Mechanism, ObjectClass
    from pkcs11.util.ec import encode_ecdsa_signature

    token = _token(ref)
    with token.lock:
        try:
            key = token.session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            if spec.algorithm == "ec":
                digest = _HASHES[spec.curve or "p256"](data).digest()
                return bytes(encode_ecdsa_signature(key.sign(digest, mechanism=Mechanism.ECDSA)))
            return bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))
        except p11.exceptions.NoSuchKey as exc:
            raise KeyBackendError(f"key {key_id.hex()} is not in token {ref.token_label!r}") from exc
        except p11.exceptions.PKCS11Error as exc:
            raise _explain(exc, ref) from exc


def destroy_key(ref: TokenRef, key_id: bytes) -> bool:
    """Destroy both halves of the key pair; False when there was nothing to destroy."""
    token = _token(ref)
    with token.lock:
        return _destroy_quietly(token, key_id)


def _destroy_quietly(token: _Token, key_id: bytes) -> bool:
    p11 = _pkcs11()
    from pkcs11 import ObjectClass

    found = False
    for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        try:
            for obj in list(token.session.get_objects({p11.Attribute.CLASS: object_class, p11.Attribute.ID: key_id})):
                obj.destroy()
                found = True
        except p11.exceptions.PKCS11Error:
            pass
    return found


def key_attributes(ref: TokenRef, key_id: bytes) -> dict[str, bool]:
    """SENSITIVE / EXTRACTABLE / PRIVATE of the private key (for checks and tests)."""
    from pkcs11 import Attribute, ObjectClass

    token = _token(ref)
    with token.lock:
        key = token.session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        return {"sensitive": bool(key[Attribute.SENSITIVE]), "extractable": bool(key[Attribute.EXTRACTABLE]),
                "private": bool(key[Attribute.PRIVATE])}


def pkcs11_uri(token_label: str, label: str, key_id: bytes) -> str:
    """An RFC 7512 URI naming the private key, for servers that load keys over PKCS#11."""
    pct_id = "".join(f"%{b:02x}" for b in key_id)
    return f"pkcs11:token={quote(token_label, safe='')};id={pct_id};object={quote(label, safe='')};type=private"


def public_key_of(spec: KeySpec, public_key: PublicKeyTypes) -> PublicKeyTypes:
    """Checks the public key the token returned has the type asked for."""
    wanted = ec.EllipticCurvePublicKey if spec.algorithm == "ec" else rsa.RSAPublicKey
    if not isinstance(public_key, wanted):
        raise KeyBackendError(f"the token returned a {type(public_key).__name__}, not a {spec} key")
    return public_key
