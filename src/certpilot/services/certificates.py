"""Certificates: request, list, show, history, renew, export, remove."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import (
    Attempt,
    Certificate,
    CertificateSpec,
    Event,
    EventKind,
    KeySpec,
    Phase,
    Profile,
    SENSITIVE_MASK,
    Revision,
    Subject,
    check_name,
    make_sans,
)
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from sqlalchemy.orm import Session

from certpilot.keys.pkcs11_backend import pkcs11_uri
from certpilot.keys.software import open_private_key
from certpilot.pki.encoding import pkcs12_bundle, private_key_pem
from certpilot.services.export_files import write_files
from certpilot.services.app import App
from certpilot.services.hsm import destroy_keys
from certpilot.store import certificates as repo
from certpilot.store import profiles as profile_repo
from certpilot.store import hsm as hsm_repo
from certpilot.store import schedule
from certpilot.store.events import list_events, record_event
from certpilot.store.wakeup import notify_wake

MAX_SANS = 100


def check_dynamic_values(profile: Profile, values: Mapping[str, str]) -> tuple[dict[str, str], frozenset[str]]:
    """The certificate's dynamic values, checked against the profile: every dynamic
    param has a value, and no value is given for an unknown or a static param."""
    declared = {p.name: p for p in profile.params}
    for name in values:
        if name not in declared:
            raise InvalidInput(f"profile {profile.name!r} has no parameter {name!r}", field="dynamic_params")
        if not declared[name].dynamic:
            raise InvalidInput(
                f"parameter {name!r} of profile {profile.name!r} is not dynamic: its value is set in the profile",
                field="dynamic_params",
            )
    missing = [p.name for p in profile.dynamic_params() if not values.get(p.name, "").strip()]
    if missing:
        raise InvalidInput(
            f"profile {profile.name!r} needs a value for dynamic parameter(s) {', '.join(missing)}",
            field="dynamic_params",
        )
    sensitive = frozenset(p.name for p in profile.dynamic_params() if p.sensitive)
    return {p.name: values[p.name] for p in profile.dynamic_params()}, sensitive


@dataclass(frozen=True)
class SpecInput:
    """A certificate's spec as a user gives it, before checks against its profile."""

    profile: str
    subject: Subject
    subject_alt_names: Sequence[str] = ()
    key: KeySpec | None = None
    hsm_group: str | None = None
    dynamic_params: Mapping[str, str] | None = None
    add_cn_to_sans: bool = True


def _checked_spec(session: Session, given: SpecInput, *, keep_masked: bool) -> tuple[CertificateSpec, frozenset[str], frozenset[str]]:
    """The spec, its sensitive params, and (with `keep_masked`) the sensitive params sent as `***`."""
    if len(given.subject_alt_names) > MAX_SANS:
        raise InvalidInput(f"a certificate takes at most {MAX_SANS} subject alternative names", field="subject_alt_names")
    sans = make_sans(given.subject.common_name, tuple(given.subject_alt_names), add_cn=given.add_cn_to_sans)
    prof = profile_repo.get_profile(session, given.profile)
    if given.hsm_group is not None:
        hsm_repo.get_group(session, given.hsm_group)  # NotFound names the group
        key = given.key or prof.default_key
        if key.algorithm == "ec" and key.curve == "p521":
            raise InvalidInput("HSM keys are EC P-256/P-384 or RSA 2048/3072/4096; ec:p521 is not offered",
                               field="key")
    values, sensitive = check_dynamic_values(prof, given.dynamic_params or {})
    keep = frozenset(k for k in sensitive if keep_masked and values[k] == SENSITIVE_MASK)
    spec = CertificateSpec(
        profile=given.profile, subject=given.subject, subject_alt_names=sans,
        key=given.key or prof.default_key, hsm_group=given.hsm_group, dynamic_params=values,
    )
    return spec, sensitive, keep


def request_certificate(
    app: App,
    name: str,
    *,
    profile: str,
    subject: Subject,
    subject_alt_names: Sequence[str] = (),
    key: KeySpec | None = None,
    hsm_group: str | None = None,
    dynamic_params: Mapping[str, str] | None = None,
    add_cn_to_sans: bool = True,
    actor: str,
    hold_for: str | None = None,
) -> Certificate:
    """Create the certificate in phase `pending`; issuance happens in `issuance.attempt`.
    With `hold_for`, that holder leases it in the same transaction (see `_hold`)."""
    check_name(name, "certificate")
    given = SpecInput(profile, subject, subject_alt_names, key, hsm_group, dynamic_params, add_cn_to_sans)
    now = app.clock.now()
    with app.db.transaction() as session:
        spec, sensitive, _ = _checked_spec(session, given, keep_masked=False)
        cert = repo.add_certificate(session, app.sealer, name=name, spec=spec, sensitive_params=sensitive, now=now)
        record_event(session, at=now, actor=actor, kind=EventKind.CERT_REQUESTED, object_type="certificate",
                     object_name=name, details={"profile": profile, "common_name": subject.common_name,
                                                "key": str(spec.key)})
        if hold_for is not None:
            _hold(app, session, name, hold_for, now)
        notify_wake(session)
    app.work_is_due()
    return cert


def _hold(app: App, session: Session, name: str, holder: str, now: dt.datetime) -> None:
    """Lease `name` to `holder` in the transaction that made it due, so that no renewal
    loop takes it (and finishes it) before the holder's own attempt (`--wait`,
    `?wait=true`). When a worker holds it already, the holder waits for that attempt."""
    try:
        schedule.claim(session, name, owner=holder, now=now,
                       lease_until=now + dt.timedelta(seconds=app.settings.lease_margin_s))
    except Conflict:
        pass


def update_certificate(app: App, name: str, given: SpecInput, *, actor: str) -> tuple[Certificate, bool]:
    """Replace the spec. Sending back what was read (`***` for a sensitive value) changes
    nothing; a real change asks for a new issuance. Returns the certificate and whether it changed."""
    now = app.clock.now()
    with app.db.transaction() as session:
        spec, sensitive, keep = _checked_spec(session, given, keep_masked=True)
        current_profile = repo.get_certificate(session, name, now).spec.profile
        if keep and spec.profile != current_profile:
            # a value an admin set for one profile's script must not reach another's unasked
            raise InvalidInput(
                f"the profile changes from {current_profile} to {spec.profile}: sensitive dynamic "
                f"{'values' if len(keep) > 1 else 'value'} {', '.join(sorted(keep))} "
                "are not carried over to another profile; send the value again", field="dynamic_params")
        changed = repo.replace_spec(session, app.sealer, name=name, spec=spec, sensitive_params=sensitive,
                                    keep_sensitive=keep, now=now)
        if changed:
            record_event(session, at=now, actor=actor, kind=EventKind.CERT_UPDATED, object_type="certificate",
                         object_name=name, details={"profile": spec.profile, "common_name": spec.subject.common_name})
            notify_wake(session)
        cert = repo.get_certificate(session, name, now)
    if changed:
        app.work_is_due()
    return cert, changed


def get_certificate(app: App, name: str) -> Certificate:
    with app.db.read() as session:
        return repo.get_certificate(session, name, app.clock.now())


def list_certificates(
    app: App,
    *,
    expiring_within_days: int | None = None,
    phase: Phase | None = None,
    profile: str | None = None,
    after_name: str | None = None,
    limit: int | None = None,
) -> list[Certificate]:
    """Ordered by name; `after_name` + `limit` page through them."""
    if expiring_within_days is not None and expiring_within_days < 0:
        raise InvalidInput("expiring-within days must be 0 or more", field="expiring_within")
    with app.db.read() as session:
        return repo.list_certificates(
            session, app.clock.now(), expiring_within_days=expiring_within_days, phase=phase,
            profile=profile, after_name=after_name, limit=limit,
        )


def list_revisions(app: App, name: str) -> list[Revision]:
    with app.db.read() as session:
        return repo.list_revisions(session, name)


def list_attempts(app: App, name: str) -> list[Attempt]:
    with app.db.read() as session:
        return repo.list_attempts(session, name)


def certificate_events(app: App, name: str) -> list[Event]:
    with app.db.read() as session:
        repo.get_certificate(session, name, app.clock.now())  # NotFound for an unknown name
        return list_events(session, object_type="certificate", object_name=name)


def request_renewal(app: App, name: str, *, actor: str, hold_for: str | None = None) -> None:
    """Mark the certificate for renewal now, skipping any backoff wait; with `hold_for`,
    that holder leases it in the same transaction (see `_hold`)."""
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.request_renewal(session, name, now)
        record_event(session, at=now, actor=actor, kind=EventKind.CERT_RENEWAL_REQUESTED,
                     object_type="certificate", object_name=name)
        if hold_for is not None:
            _hold(app, session, name, hold_for, now)
        notify_wake(session)
    app.work_is_due()


def remove_certificate(app: App, name: str, *, actor: str) -> None:
    """Remove the certificate and its history; its HSM keys are destroyed with it."""
    with app.db.transaction() as session:
        hsm_keys = hsm_repo.hsm_keys_to_retire(session, older_than=None, name=name)
    if destroy_keys(app, hsm_keys) < len(hsm_keys):  # never forget a key that still exists in a token
        raise Conflict(f"the HSM keys of {name!r} could not all be destroyed (see the log); "
                       "fix the token and remove the certificate again")
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_certificate(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.CERT_DELETED, object_type="certificate",
                     object_name=name)


@dataclass(frozen=True)
class ExportMaterial:
    """The served revision's certificate and chain, and its private key when asked for."""

    name: str
    revision: int
    leaf_pem: str
    chain_pem: str
    private_key: CertificateIssuerPrivateKeyTypes | None
    pkcs11_uri: str | None = None  # where the key lives, for an HSM-backed certificate

    @property
    def fullchain_pem(self) -> str:
        return self.leaf_pem + self.chain_pem

    @property
    def private_key_pem(self) -> str | None:
        return private_key_pem(self.private_key) if self.private_key is not None else None

    def pkcs12(self, password: bytes | None) -> bytes:
        return pkcs12_bundle(self.name, self.leaf_pem, self.chain_pem, self.private_key, password)


def export_material(app: App, name: str, *, include_key: bool, fmt: str = "pem", actor: str) -> ExportMaterial:
    """The served revision; with `include_key` the private key too, recorded as KEY_EXPORTED."""
    now = app.clock.now()
    with app.db.transaction() as session:
        revision = repo.current_revision(session, name)
        if revision is None:
            raise NotFound("issued revision of certificate", name)
        key = None
        stored = repo.get_key(session, revision.key_id)
        uri = None
        if stored.backend == "pkcs11" and stored.hsm_group and stored.pkcs11_id:
            token_label = hsm_repo.get_group(session, stored.hsm_group).token_label
            uri = pkcs11_uri(token_label, stored.pkcs11_label or "", bytes.fromhex(stored.pkcs11_id))
        if include_key:
            if stored.private_key_sealed is None:
                raise InvalidInput(
                    f"the key of {name!r} is held in HSM group {stored.hsm_group!r} and never leaves it: "
                    "export without the key and point your server at its PKCS#11 URI", field="include_key")
            key = open_private_key(app.sealer, stored.private_key_sealed, stored.key_id)
            record_event(session, at=now, actor=actor, kind=EventKind.KEY_EXPORTED, object_type="certificate",
                         object_name=name, details={"revision": revision.revision, "format": fmt})
    return ExportMaterial(name, revision.revision, revision.leaf_pem, revision.chain_pem, key, uri)


@dataclass(frozen=True)
class ExportedFiles:
    paths: tuple[Path, ...]
    revision: int


def check_pkcs12_protection(fmt: str, include_key: bool, password: bytes | None, no_password: bool) -> None:
    """A PKCS#12 file with the private key needs a password, or an explicit choice of none."""
    if fmt == "pkcs12" and include_key and not password and not no_password:
        raise InvalidInput("a PKCS#12 file with the private key needs a password: give --password-file PATH, "
                           "or --no-password to write the key unprotected", field="password")


def export_certificate(
    app: App, name: str, out_dir: Path, *, fmt: str = "pem", include_key: bool = False,
    pkcs12_password: bytes | None = None, no_password: bool = False, actor: str,
) -> ExportedFiles:
    """Write the served revision to `out_dir`: PEM files, or one PKCS#12 file. Never
    follows a symlink: a target (or `out_dir`) that is one is refused (InvalidInput)."""
    if fmt not in ("pem", "pkcs12"):
        raise InvalidInput(f"export format {fmt!r} is not supported: use pem or pkcs12", field="format")
    check_pkcs12_protection(fmt, include_key, pkcs12_password, no_password)
    material = export_material(app, name, include_key=include_key, fmt=fmt, actor=actor)
    if fmt == "pkcs12":
        paths = write_files(out_dir, [(f"{name}.p12", material.pkcs12(pkcs12_password), 0o600)])
        return ExportedFiles(paths, material.revision)
    files = [
        ("cert.pem", material.leaf_pem, 0o644),
        ("chain.pem", material.chain_pem, 0o644),
        ("fullchain.pem", material.fullchain_pem, 0o644),
    ]
    if material.private_key_pem is not None:
        files.append(("key.pem", material.private_key_pem, 0o600))
    if material.pkcs11_uri is not None:
        files.append(("key.pkcs11-uri", material.pkcs11_uri + "\n", 0o644))
    paths = write_files(out_dir, [(file_name, text.encode("ascii"), mode) for file_name, text, mode in files])
    return ExportedFiles(paths, material.revision)
