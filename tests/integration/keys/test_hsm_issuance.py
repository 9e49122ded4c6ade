"""Certificates whose keys live in an HSM (DESIGN §1 "HSM group", §3, §5 `--hsm-group`),
through the services and the bundled local-CA script, on a SoftHSM token:

- the key pair is generated in the token, the private half SENSITIVE, not EXTRACTABLE,
  PRIVATE (and ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, LOCAL: it was made there and never
  left); the certificate's public key is the token's public key object, read back by
  CKA_ID = the keys table's pkcs11_id;
- a renewal makes a new token key; the old one stays while no grace period is set,
  and is destroyed by `retire_old_keys` (or a reconcile pass) once its successor has
  been served for CERTPILOT_HSM_KEY_GRACE_DAYS; the served key always stays;
- removing the certificate destroys its keys in the token.

Runs on SQLite and PostgreSQL (the `app` fixture); RSA 3072/4096 once, on SQLite (slow).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpilot.config import Settings
from certpilot.domain.model import KeySpec, Outcome, Phase
from certpilot.keys import pkcs11_backend
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from certpilot.services.certificates import (
    export_material,
    get_certificate,
    list_revisions,
    remove_certificate,
    request_renewal,
)
from certpilot.services.hsm import retire_old_keys
from certpilot.services.issuance import attempt
from tests.integration.keys.hsm_support import (
    ACTOR,
    KeyFact,
    SoftHsm,
    add_hsm_group,
    add_local_ca_profile,
    halves_in_token,
    keys_of,
    object_count,
    request_hsm,
    served_certificate,
    served_key,
    spki,
    token_objects,
    token_public_key,
    token_session,
)

BOTH_HALVES = {"PRIVATE_KEY", "PUBLIC_KEY"}
CERT = "web1"


def issue(app: App, name: str) -> int:
    report = attempt(app, name, actor=ACTOR)
    assert report.outcome is Outcome.ISSUED, f"{name}: {report.outcome.value}: {report.error}"
    assert report.revision is not None
    return report.revision


def renew(app: App, name: str) -> int:
    request_renewal(app, name, actor=ACTOR)
    return issue(app, name)


def assert_served_key_is_the_token_key(app: App, softhsm: SoftHsm, name: str, key: str) -> KeyFact:
    """The served certificate's public key is the token's key pair with the keys table's
    CKA_ID, of the spec asked for; the private half never could leave the token."""
    stored = served_key(app, name)
    assert (stored.backend, stored.key_spec) == ("pkcs11", key)
    assert stored.private_key_sealed is None, "an HSM key has no sealed private key in the database"
    assert stored.pkcs11_id == stored.key_id and stored.pkcs11_label, stored
    certificate = served_certificate(app, name)
    in_token = token_public_key(softhsm.ref, stored.token_id)
    assert spki(certificate.public_key()) == spki(in_token)
    spec = KeySpec.parse(key)
    if spec.algorithm == "ec":
        assert isinstance(in_token, ec.EllipticCurvePublicKey)
        assert in_token.curve.name == {"p256": "secp256r1", "p384": "secp384r1"}[spec.curve or ""]
        assert in_token.public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
    else:
        assert isinstance(in_token, rsa.RSAPublicKey) and in_token.key_size == spec.size
        assert in_token.public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
    # the CSR the CA signed was signed by that key too
    (revision,) = [r for r in list_revisions(app, name) if r.key_id == stored.key_id]
    csr = x509.load_pem_x509_csr(revision.csr_pem.encode())
    assert csr.is_signature_valid and spki(csr.public_key()) == spki(in_token)

    assert pkcs11_backend.key_attributes(softhsm.ref, stored.token_id) == {
        "sensitive": True, "extractable": False, "private": True}
    assert private_key_facts(softhsm, stored.token_id) == {
        "always_sensitive": True, "never_extractable": True, "local": True, "secret_readable": False}
    labels = {o.label for o in token_objects(softhsm.ref) if o.key_id == stored.token_id}
    assert labels == {stored.pkcs11_label}
    return stored


def private_key_facts(softhsm: SoftHsm, key_id: bytes) -> dict[str, bool]:
    """CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL of the private key, read
    with python-pkcs11 (all true only for a key generated in the token that never left it),
    and whether its secret value (EC CKA_VALUE, RSA CKA_PRIVATE_EXPONENT) can be read."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    with token_session(softhsm.ref) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)  # type: ignore[attr-defined]
        secret = Attribute.VALUE if key.key_type == KeyType.EC else Attribute.PRIVATE_EXPONENT
        try:
            key[secret]
            readable = True
        except AttributeSensitive:
            readable = False
        return {"always_sensitive": bool(key[Attribute.ALWAYS_SENSITIVE]),
                "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE]), "local": bool(key[Attribute.LOCAL]),
                "secret_readable": readable}


@pytest.mark.parametrize("key", ["ec:p256", "ec:p384", "rsa:2048"])
def test_hsm_certificate_is_issued_renewed_with_a_new_token_key_and_removed_with_its_keys(
    hsm_app: App, softhsm: SoftHsm, key: str
) -> None:
    app, ref = hsm_app, softhsm.ref
    before = object_count(ref)

    request_hsm(app, CERT, key)
    assert issue(app, CERT) == 1
    assert get_certificate(app, CERT).status.phase is Phase.ISSUED
    first = assert_served_key_is_the_token_key(app, softhsm, CERT, key)
    assert object_count(ref) == before + 2, "one key pair (private + public object) per issuance"

    assert renew(app, CERT) == 2
    second = assert_served_key_is_the_token_key(app, softhsm, CERT, key)
    assert second.pkcs11_id != first.pkcs11_id, "the renewal reused the token key"
    (rev1, rev2) = sorted(list_revisions(app, CERT), key=lambda r: r.revision)
    assert rev1.public_key_sha256 != rev2.public_key_sha256

    # no grace period set (the default): the old key stays while its revision is history
    assert app.settings.hsm_key_grace_days is None
    assert retire_old_keys(app) == 0
    assert halves_in_token(ref, first.token_id) == BOTH_HALVES
    assert object_count(ref) == before + 4
    assert all(k.destroyed_at is None for k in keys_of(app, CERT))

    remove_certificate(app, CERT, actor=ACTOR)
    assert halves_in_token(ref, first.token_id) == set()
    assert halves_in_token(ref, second.token_id) == set()
    assert object_count(ref) == before, "removing the certificate left objects in the token"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("key", ["rsa:3072", "rsa:4096"])
def test_hsm_certificate_with_a_large_rsa_key(hsm_app: App, softhsm: SoftHsm, key: str) -> None:
    before = object_count(softhsm.ref)
    request_hsm(hsm_app, CERT, key)
    assert issue(hsm_app, CERT) == 1
    assert_served_key_is_the_token_key(hsm_app, softhsm, CERT, key)
    remove_certificate(hsm_app, CERT, actor=ACTOR)
    assert object_count(softhsm.ref) == before


@pytest.fixture
def graceless_app(app: App, settings: Settings, test_ca: LocalCA) -> Iterator[App]:
    """An App on the same (migrated) database with CERTPILOT_HSM_KEY_GRACE_DAYS=0."""
    with App(settings.model_copy(update={"hsm_key_grace_days": 0})) as graced:
        add_local_ca_profile(graced, test_ca)
        add_hsm_group(graced)
        yield graced


def test_with_grace_zero_the_superseded_key_is_destroyed_and_the_served_key_stays(
    graceless_app: App, softhsm: SoftHsm
) -> None:
    app, ref = graceless_app, softhsm.ref
    before = object_count(ref)
    request_hsm(app, CERT, "ec:p256")
    issue(app, CERT)
    first = served_key(app, CERT)
    assert retire_old_keys(app) == 0, "the served key was retired"
    assert halves_in_token(ref, first.token_id) == BOTH_HALVES

    renew(app, CERT)
    second = served_key(app, CERT)
    assert retire_old_keys(app) == 1
    assert halves_in_token(ref, first.token_id) == set(), "the superseded key is still in the token"
    assert {k.key_id: k.destroyed_at is not None for k in keys_of(app, CERT)} == {
        first.key_id: True, second.key_id: False}
    assert halves_in_token(ref, second.token_id) == BOTH_HALVES
    assert_served_key_is_the_token_key(app, softhsm, CERT, "ec:p256")
    assert retire_old_keys(app) == 0, "a destroyed key was retired twice"

    # the renewal loop does the same on every pass
    renew(app, CERT)
    third = served_key(app, CERT)
    Reconciler(app).run_once()
    assert halves_in_token(ref, second.token_id) == set()
    assert halves_in_token(ref, third.token_id) == BOTH_HALVES
    assert object_count(ref) == before + 2
    # the served certificate still points at a key that is there
    uri = export_material(app, CERT, include_key=False, actor=ACTOR).pkcs11_uri
    assert uri is not None and "".join(f"%{b:02x}" for b in third.token_id) in uri

    remove_certificate(app, CERT, actor=ACTOR)
    assert object_count(ref) == before


class OffsetClock:
    """The real UTC time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset


GRACE_DAYS = 5


def test_grace_period_counts_from_when_the_key_was_superseded(
    app: App, settings: Settings, test_ca: LocalCA, softhsm: SoftHsm
) -> None:
    """Issued on day 0, renewed on day 10: with a 5-day grace the old key lives until day 15,
    not until day 5 (the day 0 key was needed until day 10)."""
    clock = OffsetClock()
    with App(settings.model_copy(update={"hsm_key_grace_days": GRACE_DAYS}), clock=clock) as graced:
        add_local_ca_profile(graced, test_ca)
        add_hsm_group(graced)
        request_hsm(graced, CERT, "ec:p256")
        issue(graced, CERT)
        first = served_key(graced, CERT)

        clock.offset = dt.timedelta(days=10)
        renew(graced, CERT)
        second = served_key(graced, CERT)

        clock.offset = dt.timedelta(days=12)  # superseded 2 days ago
        assert retire_old_keys(graced) == 0, (
            f"the key of revision 1 was destroyed 2 days after it was superseded, with a {GRACE_DAYS}-day grace")
        assert halves_in_token(softhsm.ref, first.token_id) == BOTH_HALVES

        clock.offset = dt.timedelta(days=10 + GRACE_DAYS, hours=1)
        assert retire_old_keys(graced) == 1
        assert halves_in_token(softhsm.ref, first.token_id) == set()
        assert halves_in_token(softhsm.ref, second.token_id) == BOTH_HALVES
        remove_certificate(graced, CERT, actor=ACTOR)
