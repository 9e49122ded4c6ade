"""What the HSM tests share: the SoftHSM token made for this run, a profile on the
bundled local-CA script, HSM groups, and looking into the token and the keys table
without going through the code under test.

Not a test module; the fixtures built on it live in this directory's conftest.py.

Looking into the token: PKCS#11 login state belongs to the process, and python-pkcs11
logs the whole process out when a session opened *with* a PIN is closed. So the
helpers here let certpilot log the process in (through `pkcs11_backend.token_info`,
which keeps its session), then open a session of their own *without* a PIN: it sees
what the logged-in user sees, and closing it logs nobody out.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy import select

from certpilot.domain.model import KeySpec, ProfileParam, make_subject
from certpilot.keys import pkcs11_backend
from certpilot.keys.pkcs11_backend import TokenRef
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import list_revisions, request_certificate
from certpilot.services.hsm import add_group
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.tables import CertificateRow, CertificateStatusRow, KeyRow, RevisionRow

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SOFTHSM_UTIL = "softhsm2-util"
TOKEN = "certpilot-test"
PIN = "1234"
SO_PIN = "5678"
# A second token whose PIN is long and random, so that finding it somewhere means a leak
# (a 4-digit PIN like 1234 turns up by chance in any page of hex and base64).
SECRET_TOKEN = "certpilot-secret"

ACTOR = "test:hsm"
SCRIPT = "local-ca"
PROFILE = "corp"
GROUP = "hsm1"


@dataclass(frozen=True)
class SoftHsm:
    """The SoftHSM set up for this test run."""

    conf: Path
    token_dir: Path
    secret_pin: str

    @property
    def ref(self) -> TokenRef:
        return TokenRef(MODULE, TOKEN, PIN)

    @property
    def secret_ref(self) -> TokenRef:
        return TokenRef(MODULE, SECRET_TOKEN, self.secret_pin)


def softhsm_available() -> str | None:
    """Why SoftHSM cannot be used here, or None."""
    if shutil.which(SOFTHSM_UTIL) is None:
        return f"{SOFTHSM_UTIL} is not installed (Debian package softhsm2)"
    if not Path(MODULE).exists():
        return f"the SoftHSM PKCS#11 module {MODULE} is missing (Debian package softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed"
    return None


def init_token(conf: Path, label: str, pin: str, so_pin: str = SO_PIN) -> None:
    subprocess.run(
        [SOFTHSM_UTIL, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env={"SOFTHSM2_CONF": str(conf), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=True, capture_output=True, text=True,
    )


# --- certpilot set up through its services -----------------------------------------


def local_ca_params(ca: LocalCA) -> list[ProfileParam]:
    return [
        ProfileParam("ca_cert", ca.cert_path.read_text()),
        ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", ca.password, sensitive=True),
        ProfileParam("validity_days", "90"),
    ]


def add_local_ca_profile(app: App, ca: LocalCA, *, profile: str = PROFILE) -> None:
    add_script(app, SCRIPT, bundled_local_ca_source(), timeout_s=30, actor=ACTOR)
    create_profile(app, profile, script=SCRIPT, params=local_ca_params(ca), actor=ACTOR)


def add_hsm_group(app: App, name: str = GROUP, *, module: str = MODULE, token: str = TOKEN, pin: str = PIN) -> None:
    add_group(app, name, module_path=module, token_label=token, pin=pin, actor=ACTOR)


def request_hsm(app: App, name: str, key: str = "ec:p256", *, group: str | None = GROUP) -> None:
    request_certificate(app, name, profile=PROFILE, subject=make_subject(f"{name}.example.test"),
                        key=KeySpec.parse(key), hsm_group=group, actor=ACTOR)


# --- the keys table (read directly: no service lists keys) -----------------------------


@dataclass(frozen=True)
class KeyFact:
    key_id: str
    backend: str
    key_spec: str
    pkcs11_id: str | None
    pkcs11_label: str | None
    private_key_sealed: bytes | None
    created_at: dt.datetime
    destroyed_at: dt.datetime | None

    @property
    def token_id(self) -> bytes:
        assert self.pkcs11_id is not None, f"key {self.key_id} has no CKA_ID"
        return bytes.fromhex(self.pkcs11_id)


_KEY_COLUMNS = (KeyRow.id, KeyRow.backend, KeyRow.key_spec, KeyRow.pkcs11_id, KeyRow.pkcs11_label,
                KeyRow.private_key_sealed, KeyRow.created_at, KeyRow.destroyed_at)


def keys_of(app: App, name: str) -> list[KeyFact]:
    """Every key row of the certificate, oldest first."""
    query = (select(*_KEY_COLUMNS).join(CertificateRow, CertificateRow.id == KeyRow.certificate_id)
             .where(CertificateRow.name == name).order_by(KeyRow.created_at))
    with app.db.engine.connect() as conn:
        return [KeyFact(*row) for row in conn.execute(query)]


def all_keys(app: App) -> list[KeyFact]:
    with app.db.engine.connect() as conn:
        return [KeyFact(*row) for row in conn.execute(select(*_KEY_COLUMNS))]


def key_by_id(app: App, key_id: str) -> KeyFact:
    with app.db.engine.connect() as conn:
        row = conn.execute(select(*_KEY_COLUMNS).where(KeyRow.id == key_id)).one()
    return KeyFact(*row)


def served_key(app: App, name: str) -> KeyFact:
    """The key of the revision being served."""
    query = (select(RevisionRow.key_id)
             .join(CertificateStatusRow, CertificateStatusRow.current_revision_id == RevisionRow.id)
             .join(CertificateRow, CertificateRow.id == CertificateStatusRow.certificate_id)
             .where(CertificateRow.name == name))
    with app.db.engine.connect() as conn:
        key_id = conn.scalar(query)
    assert key_id is not None, f"{name} has no served revision"
    return key_by_id(app, key_id)


def served_certificate(app: App, name: str) -> x509.Certificate:
    newest = max(list_revisions(app, name), key=lambda r: r.revision)
    return x509.load_pem_x509_certificate(newest.leaf_pem.encode())


# --- looking into the token ------------------------------------------------------------


@contextmanager
def token_session(ref: TokenRef) -> Iterator[object]:
    """A session of the test's own on the token, logged in through certpilot's session."""
    import pkcs11

    pkcs11_backend.token_info(ref)  # certpilot logs the process in and keeps its session open
    session = pkcs11.lib(ref.module_path).get_token(token_label=ref.token_label).open(rw=True)
    try:
        yield session
    finally:
        session.close()  # opened without a PIN: closing it logs nobody out


@dataclass(frozen=True)
class TokenObject:
    object_class: str
    key_id: bytes
    label: str


def token_objects(ref: TokenRef) -> list[TokenObject]:
    from pkcs11 import Attribute

    found = []
    with token_session(ref) as session:
        for obj in session.get_objects():  # type: ignore[attr-defined]
            found.append(TokenObject(obj[Attribute.CLASS].name, bytes(obj[Attribute.ID]), obj[Attribute.LABEL]))
    return sorted(found, key=lambda o: (o.key_id, o.object_class))


def object_count(ref: TokenRef) -> int:
    return len(token_objects(ref))


def halves_in_token(ref: TokenRef, key_id: bytes) -> set[str]:
    """Which halves of the key pair with CKA_ID `key_id` the token holds: {"PRIVATE_KEY", "PUBLIC_KEY"}."""
    return {o.object_class for o in token_objects(ref) if o.key_id == key_id}


def token_public_key(ref: TokenRef, key_id: bytes) -> PublicKeyTypes:
    """The public key object with CKA_ID `key_id`, read from the token with python-pkcs11."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key

    with token_session(ref) as session:
        key = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)  # type: ignore[attr-defined]
        if key.key_type == KeyType.EC:
            return serialization.load_der_public_key(encode_ec_public_key(key))
        assert key.key_type == KeyType.RSA, key.key_type
        return rsa.RSAPublicNumbers(int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
                                    int.from_bytes(key[Attribute.MODULUS], "big")).public_key()


def sign_in_token(ref: TokenRef, key_id: bytes, data: bytes) -> tuple[bytes, str]:
    """Sign `data` with the private key `key_id` through python-pkcs11 directly: ECDSA over
    SHA-256 (DER-encoded) or RSA PKCS#1 v1.5 with SHA-256. Returns (signature, "ec"|"rsa")."""
    import hashlib

    from pkcs11 import KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_ecdsa_signature

    with token_session(ref) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)  # type: ignore[attr-defined]
        if key.key_type == KeyType.EC:
            raw = key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
            return bytes(encode_ecdsa_signature(raw)), "ec"
        return bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)), "rsa"


def spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify(public_key: PublicKeyTypes, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm) -> None:
    """pyca verify; raises InvalidSignature."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
