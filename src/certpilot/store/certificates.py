"""Certificates repository: the spec, the status as read, keys, revisions, attempts.

The status is written by `store.attempts` (an issuance) and `store.schedule`
(leases, warnings, the next action), which the issuance service and the
reconciler use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Integer, Select, bindparam, exists, inspect, select, update
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import (
    Attempt,
    Certificate,
    CertificateSpec,
    CertificateStatus,
    KeySpec,
    Outcome,
    Phase,
    RenewalInfoStatus,
    Revision,
    Subject,
    SubjectAltName,
)
from certpilot.keys.sealing import Sealer
from certpilot.policy import applicable_warning_days, expiry_status, is_expiring_within, renewal_time
from certpilot.policy.renewal_info import effective_renewal_time
from certpilot.store.profiles import _row as _profile_row
from certpilot.store.profiles import renewal_of
from certpilot.store.tables import (
    AttemptRow,
    CertificateRow,
    CertificateStatusRow,
    DynamicParamRow,
    HsmGroupRow,
    KeyRow,
    ProfileRow,
    RevisionRow,
)


def dynamic_param_identity(row_id: str) -> str:
    return f"certificate_param:{row_id}:value"


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    backend: str
    key_spec: KeySpec
    private_key_sealed: bytes | None
    public_key_sha256: str
    csr_pem: str
    hsm_group: str | None = None
    pkcs11_label: str | None = None
    pkcs11_id: str | None = None


def _row(session: Session, name: str, *, for_update: bool = False) -> CertificateRow:
    """The certificate's row with its graph (profile, status, served revision), loaded
    once per session: the repositories' functions ask for it by name many times in one
    transaction, and a certificate's name never changes."""
    loaded: dict[str, CertificateRow] = session.info.setdefault("certificate_rows", {})
    row = loaded.get(name)
    if row is not None and not for_update and inspect(row).persistent:
        return row
    query = select(CertificateRow).where(CertificateRow.name == name)
    if for_update:
        query = query.with_for_update(of=CertificateRow)
    row = session.scalar(query)
    if row is None:
        raise NotFound("certificate", name)
    loaded[name] = row
    return row


def _status(row: CertificateRow, now: dt.datetime) -> CertificateStatus:
    st = row.status
    rev = st.current_revision
    if rev is None:
        return CertificateStatus(
            phase=Phase(st.phase), next_action_at=st.next_action_at, failures=st.failures,
            last_error=st.last_error, last_attempt_at=st.last_attempt_at, **_deferral_fields(st),
        )
    renewal = renewal_of(row.profile)
    return CertificateStatus(
        phase=Phase(st.phase),
        revision=rev.number,
        serial=rev.serial,
        not_before=rev.not_before,
        not_after=rev.not_after,
        fingerprint_sha256=rev.fingerprint_sha256,
        expiry_status=expiry_status(
            rev.not_after, now, applicable_warning_days(renewal.warning_days, rev.not_before, rev.not_after)
        ),
        renew_at=effective_renewal_time(renewal_time(rev.not_before, rev.not_after, renewal),
                                        st.renewal_info_renew_at, rev.not_after),
        next_action_at=st.next_action_at,
        failures=st.failures,
        last_error=st.last_error,
        last_attempt_at=st.last_attempt_at,
        deployed_revision=st.deployed_revision,
        deploy_error=st.deploy_error,
        renewal_info=_renewal_info(st),
        **_deferral_fields(st),
    )


def _renewal_info(st: CertificateStatusRow) -> RenewalInfoStatus | None:
    if st.renewal_info_checked_at is None and st.renewal_info_check_at is None:
        return None
    return RenewalInfoStatus(st.renewal_info_window_start, st.renewal_info_window_end, st.renewal_info_checked_at,
                             st.renewal_info_check_at, st.renewal_info_explanation_url, st.renewal_info_error)


def _deferral_fields(st: CertificateStatusRow) -> dict[str, object]:
    if st.deferred_since is None:
        return {}
    return {"deferred_since": st.deferred_since, "next_poll_at": st.deferred_poll_at,
            "deferred_polls": st.deferred_polls}


def _to_certificate(row: CertificateRow, now: dt.datetime, sealer: Sealer | None = None) -> Certificate:
    dynamic: dict[str, str] = {}
    for p in row.dynamic_params:
        if p.sensitive:
            dynamic[p.name] = (
                sealer.open_text(p.value_sealed, dynamic_param_identity(p.id)) if sealer and p.value_sealed else "***"
            )
        else:
            dynamic[p.name] = p.value or ""
    spec = CertificateSpec(
        profile=row.profile.name,
        subject=Subject(**row.subject),  # type: ignore[arg-type]
        subject_alt_names=tuple(SubjectAltName.stored(s) for s in row.subject_alt_names),
        key=KeySpec.parse(row.key_spec),
        hsm_group=row.hsm_group,
        dynamic_params=dynamic,
    )
    return Certificate(
        name=row.name,
        spec=spec,
        status=_status(row, now),
        sensitive_params=frozenset(p.name for p in row.dynamic_params if p.sensitive),
    )


def _dynamic_rows(sealer: Sealer, values: Mapping[str, str], sensitive_params: frozenset[str]) -> list[DynamicParamRow]:
    rows = []
    for param_name, value in values.items():
        row_id = uuid.uuid4().hex
        sensitive = param_name in sensitive_params
        rows.append(
            DynamicParamRow(
                id=row_id, name=param_name, sensitive=sensitive,
                value=None if sensitive else value,
                value_sealed=sealer.seal_text(value, dynamic_param_identity(row_id)) if sensitive else None,
            )
        )
    return rows


def add_certificate(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    spec: CertificateSpec,
    sensitive_params: frozenset[str],
    now: dt.datetime,
) -> Certificate:
    if session.scalar(select(exists().where(CertificateRow.name == name))):
        raise Conflict(f"certificate {name!r} exists already")
    row = CertificateRow(
        name=name,
        profile=_profile_row(session, spec.profile),
        subject=spec.subject.as_dict(),
        subject_alt_names=[str(s) for s in spec.subject_alt_names],
        key_spec=str(spec.key),
        hsm_group=spec.hsm_group,
        created_at=now,
        updated_at=now,
        dynamic_params=_dynamic_rows(sealer, spec.dynamic_params, sensitive_params),
        status=CertificateStatusRow(phase=Phase.PENDING.value, failures=0, next_action_at=now, warned_days=[]),
    )
    session.add(row)
    session.flush()
    return _to_certificate(row, now)


def get_certificate(session: Session, name: str, now: dt.datetime, sealer: Sealer | None = None) -> Certificate:
    """The certificate; sensitive dynamic values in clear only when `sealer` is given."""
    return _to_certificate(_row(session, name), now, sealer)


def list_certificates(
    session: Session,
    now: dt.datetime,
    *,
    expiring_within_days: int | None = None,
    phase: Phase | None = None,
    profile: str | None = None,
    after_name: str | None = None,
    limit: int | None = None,
) -> list[Certificate]:
    """Ordered by name; `after_name` and `limit` page through the list.

    Read with Core on the session's connection, not the ORM: a page of a list is the
    API's and the UI's most frequent read, and building ORM objects (with their identity
    map and state) cost four times the rest of it. The rows are the columns `_to_certificate`
    reads, in its shape: the certificate with its status and served revision (never its
    PEMs, nor the loop's own bookkeeping), then the page's profiles and dynamic parameters,
    one statement each.
    """
    values: dict[str, Any] = {}
    if expiring_within_days is not None:
        # narrow in SQL on the served revision's expiry; the policy's own test decides below
        values["horizon"] = now + dt.timedelta(days=expiring_within_days)
    if phase is not None:
        values["phase"] = phase.value
    if profile is not None:
        values["profile_id"] = _profile_row(session, profile).id
    if after_name is not None:
        values["after_name"] = after_name
    if limit is not None:
        values["limit"] = limit
    connection = session.connection()  # Core all the way: the ORM's per-statement work is not needed here
    result = connection.execute(_list_query(frozenset(values)), values)
    groups = _column_groups(list(result.keys()))
    listed = [_listed(row, groups) for row in result]
    if listed:
        profiles = {row.id: SimpleNamespace(**row._asdict()) for row in connection.execute(
            _PAGE_PROFILES, {"ids": list({item.profile_id for item in listed})})}
        for item in listed:
            item.profile = profiles[item.profile_id]
        params: dict[int, list[Any]] = {item.id: item.dynamic_params for item in listed}
        for param in connection.execute(_PAGE_PARAMS, {"ids": list(params)}):
            params[param.certificate_id].append(param)
    certs = [_to_certificate(item, now) for item in listed]  # type: ignore[arg-type]
    if expiring_within_days is not None:
        certs = [
            c for c in certs
            if c.status.not_after is not None and is_expiring_within(c.status.not_after, now, expiring_within_days)
        ]
    return certs


_CERTS = CertificateRow.__table__
_STATUS = CertificateStatusRow.__table__
_REVISIONS = RevisionRow.__table__
_DYNAMIC = DynamicParamRow.__table__
_PROFILES = ProfileRow.__table__
# Columns no list row shows: the PEMs, and what the renewal loop keeps for itself. Every
# other column is read, labelled "<part>.<column>", so that whatever is added to these
# tables reaches `_to_certificate` here as it does through the ORM. Should `_to_certificate`
# come to read one of these, a list fails at once (AttributeError), never silently.
_UNLISTED = {
    "certificate": frozenset({"created_at", "updated_at"}),
    "status": frozenset({
        "pending_key_id", "retry_at", "renewal_requested", "warned_days", "expired_event_recorded",
        "deferred_cookie_sealed", "deploy_written_revision", "deploy_failures", "deploy_retry_at",
        "deploy_failed_revision", "lease_owner", "lease_expires_at",
    }),
    "revision": frozenset({"leaf_pem", "chain_pem", "csr_pem", "key_id", "public_key_sha256", "issued_at"}),
}
_LISTED_COLUMNS = [
    c.label(f"{part}.{c.name}")
    for part, table in (("certificate", _CERTS), ("status", _STATUS), ("revision", _REVISIONS))
    for c in table.c if c.name not in _UNLISTED[part]
]
_LISTED_FROM = (
    _CERTS.join(_STATUS, _STATUS.c.certificate_id == _CERTS.c.id)
    .outerjoin(_REVISIONS, _REVISIONS.c.id == _STATUS.c.current_revision_id)
)
# built once, with bound parameters: no statement is built, keyed and looked up per page
_PAGE_PROFILES = select(_PROFILES).where(_PROFILES.c.id.in_(bindparam("ids", expanding=True)))
_PAGE_PARAMS = select(_DYNAMIC).where(_DYNAMIC.c.certificate_id.in_(bindparam("ids", expanding=True)))
_LIST_QUERIES: dict[frozenset[str], Select[Any]] = {}


def _list_query(given: frozenset[str]) -> Select[Any]:
    """The list's statement for the filters `given` (names of its bound parameters)."""
    query = _LIST_QUERIES.get(given)
    if query is None:
        query = select(*_LISTED_COLUMNS).select_from(_LISTED_FROM).order_by(_CERTS.c.name)
        if "horizon" in given:
            query = query.where(_REVISIONS.c.not_after <= bindparam("horizon"))
        if "phase" in given:
            query = query.where(_STATUS.c.phase == bindparam("phase"))
        if "profile_id" in given:
            query = query.where(_CERTS.c.profile_id == bindparam("profile_id"))
        if "after_name" in given:
            query = query.where(_CERTS.c.name > bindparam("after_name"))
        if "limit" in given:
            query = query.limit(bindparam("limit", type_=Integer()))
        _LIST_QUERIES[given] = query
    return query


def _column_groups(keys: list[str]) -> dict[str, tuple[list[str], slice]]:
    """Per part, its column names and where they sit in a row (one run each: the select
    lists the parts one after another)."""
    groups: dict[str, tuple[list[str], slice]] = {}
    for index, key in enumerate(keys):
        part, _, column = key.partition(".")
        names, where = groups.get(part, ([], slice(index, index)))
        names.append(column)
        groups[part] = (names, slice(where.start, index + 1))
    for names, where in groups.values():
        if where.stop - where.start != len(names):
            raise ValueError(f"the listed columns of a part are not one run: {keys}")
    return groups


def _listed(row: Any, groups: dict[str, tuple[list[str], slice]]) -> SimpleNamespace:
    """One list row as the parts of a certificate's graph `_to_certificate` reads."""
    def part(name: str) -> SimpleNamespace:
        names, where = groups[name]
        return SimpleNamespace(**dict(zip(names, row[where])))

    certificate, status = part("certificate"), part("status")
    status.current_revision = part("revision") if status.current_revision_id is not None else None
    certificate.status, certificate.dynamic_params = status, []
    return certificate


def replace_spec(
    session: Session,
    sealer: Sealer,
    *,
    name: str,
    spec: CertificateSpec,
    sensitive_params: frozenset[str],
    keep_sensitive: frozenset[str],
    now: dt.datetime,
) -> bool:
    """Replace the spec; a sensitive dynamic value named in `keep_sensitive` keeps its
    stored value. A real change drops the key made for the old spec and asks for a
    new issuance. Returns whether anything changed."""
    row = _row(session, name)
    current = _to_certificate(row, now, sealer)
    values = dict(spec.dynamic_params)
    for param_name in keep_sensitive:
        if param_name not in current.sensitive_params:
            raise InvalidInput(f"dynamic parameter {param_name!r} has no stored value to keep: send its value",
                               field="dynamic_params")
        values[param_name] = current.spec.dynamic_params[param_name]
    new_spec = CertificateSpec(
        profile=spec.profile, subject=spec.subject, subject_alt_names=spec.subject_alt_names, key=spec.key,
        hsm_group=spec.hsm_group, dynamic_params=values,
    )
    if new_spec == current.spec and sensitive_params == current.sensitive_params:
        return False
    row.profile = _profile_row(session, spec.profile)
    row.subject = spec.subject.as_dict()
    row.subject_alt_names = [str(s) for s in spec.subject_alt_names]
    row.key_spec = str(spec.key)
    row.hsm_group = spec.hsm_group
    row.updated_at = now
    row.dynamic_params.clear()
    session.flush()
    row.dynamic_params.extend(_dynamic_rows(sealer, values, sensitive_params))
    row.status.pending_key_id = None  # its CSR says what the old spec said
    row.status.renewal_requested = True
    row.status.next_action_at = now
    session.flush()
    return True


def remove_certificate(session: Session, name: str) -> None:
    row = _row(session, name)
    row.status.current_revision_id = None
    row.status.pending_key_id = None
    session.flush()
    session.delete(row)


def list_revisions(session: Session, name: str) -> list[Revision]:
    """Newest first."""
    row = _row(session, name)
    rows = session.scalars(
        select(RevisionRow).where(RevisionRow.certificate_id == row.id).order_by(RevisionRow.number.desc())
    )
    return [
        Revision(
            revision=r.number, serial=r.serial, not_before=r.not_before, not_after=r.not_after,
            fingerprint_sha256=r.fingerprint_sha256, public_key_sha256=r.public_key_sha256,
            leaf_pem=r.leaf_pem, chain_pem=r.chain_pem, csr_pem=r.csr_pem, key_id=r.key_id,
            issued_at=r.issued_at,
        )
        for r in rows
    ]


def current_revision(session: Session, name: str) -> Revision | None:
    """The revision being served, if any."""
    current = _row(session, name).status.current_revision
    if current is None:
        return None
    return next(r for r in list_revisions(session, name) if r.revision == current.number)


def list_attempts(session: Session, name: str, limit: int = 50) -> list[Attempt]:
    """Newest first."""
    row = _row(session, name)
    rows = session.scalars(
        select(AttemptRow).where(AttemptRow.certificate_id == row.id).order_by(AttemptRow.id.desc()).limit(limit)
    )
    return [
        Attempt(
            id=a.id, kind=a.kind, started_at=a.started_at, finished_at=a.finished_at,
            outcome=Outcome(a.outcome) if a.outcome else None, duration_ms=a.duration_ms,
            error=a.error, output=a.output, revision=a.revision_number,
        )
        for a in rows
    ]


def get_key(session: Session, key_id: str) -> StoredKey:
    row = session.get(KeyRow, key_id)
    if row is None:
        raise NotFound("key", key_id)
    group = session.get(HsmGroupRow, row.hsm_group_id) if row.hsm_group_id else None
    return StoredKey(
        key_id=row.id, backend=row.backend, key_spec=KeySpec.parse(row.key_spec),
        private_key_sealed=row.private_key_sealed, public_key_sha256=row.public_key_sha256, csr_pem=row.csr_pem,
        hsm_group=group.name if group else None, pkcs11_label=row.pkcs11_label, pkcs11_id=row.pkcs11_id,
    )


def request_renewal(session: Session, name: str, now: dt.datetime) -> None:
    row = _row(session, name)
    row.status.renewal_requested = True
    row.status.next_action_at = now


def _id(session: Session, name: str) -> int:
    loaded = session.info.get("certificate_rows", {}).get(name)
    if loaded is not None and inspect(loaded).persistent:
        return loaded.id
    ids: dict[str, int] = session.info.setdefault("certificate_ids", {})
    cert_id = ids.get(name)
    if cert_id is None:
        flush_orm(session)
        cert_id = session.connection().execute(_ID_BY_NAME, {"name_": name}).scalar()
        if cert_id is None:
            raise NotFound("certificate", name)
        ids[name] = cert_id
    return cert_id


# --- Core statements for the renewal loop's hot path ------------------------------------
# The loop's statements go to the tables (Core), not through ORM object graphs: building,
# tracking and flushing ORM objects cost most of the controller's CPU per certificate.
# ORM work and Core statements may meet in one session (a service loads a row, then the
# loop's helpers write): `flush_orm` before a Core statement, `expire_orm_status` after a
# Core write to a status or attempt row. The statements run on the session's connection
# (`session.connection().execute`): the ORM's per-statement work is not needed for them.


# built once with bind parameters: building a statement (and its cache key) per call costs
# more than running it
_CERT_TABLE = CertificateRow.__table__
_STATUS_TABLE = CertificateStatusRow.__table__
_ID_BY_NAME = select(_CERT_TABLE.c.id).where(_CERT_TABLE.c.name == bindparam("name_"))
_LOCK_BY_NAME = _ID_BY_NAME.with_for_update()
_UPDATE_STATUS = update(_STATUS_TABLE).where(_STATUS_TABLE.c.certificate_id == bindparam("cid_"))


def update_status(session: Session, cert_id: int, values: Mapping[str, object]) -> int:
    """Set `values` (columns of the status table) on `cert_id`'s status row (Core: flush
    the ORM first, expire its loaded rows after). Returns the rows changed (0 or 1)."""
    flush_orm(session)
    changed = session.connection().execute(_UPDATE_STATUS, {"cid_": cert_id, **values}).rowcount
    expire_orm_status(session)
    return int(changed)


class RowParts:
    """Splits rows of `statement`, whose columns are labelled `<part>__<column>`, into one
    namespace per part (the shape `_to_certificate` and the policy's snapshot read). The
    column positions are worked out once, not per row."""

    def __init__(self, statement: Select[Any]) -> None:
        self._parts: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        for index, column in enumerate(statement.selected_columns):
            part, _, name = str(column.key).partition("__")
            names, indexes = self._parts.get(part, ((), ()))
            self._parts[part] = ((*names, name), (*indexes, index))

    def split(self, row: Any) -> dict[str, SimpleNamespace]:
        return {part: SimpleNamespace(**{name: row[i] for name, i in zip(names, indexes)})
                for part, (names, indexes) in self._parts.items()}


def remember_id(session: Session, name: str, cert_id: int) -> None:
    """`name`'s id, known from a row just read: `_id` needs no statement for it."""
    session.info.setdefault("certificate_ids", {})[name] = cert_id


def flush_orm(session: Session) -> None:
    """Write what ORM objects of this session changed, so that a Core statement sees it."""
    if session.new or session.deleted or session.dirty:
        session.flush()


def expire_orm_status(session: Session) -> None:
    """Status and attempt rows loaded through the ORM are stale after a Core write."""
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, (CertificateStatusRow, AttemptRow)):
            session.expire(loaded)


def lock_certificate(session: Session, name: str) -> int:
    """`name`'s id, with its certificate row locked until the transaction ends (PostgreSQL;
    SQLite's writer holds the database). Raises `NotFound`."""
    flush_orm(session)
    query = _LOCK_BY_NAME if session.get_bind().dialect.name == "postgresql" else _ID_BY_NAME
    cert_id = session.connection().execute(query, {"name_": name}).scalar()
    if cert_id is None:
        raise NotFound("certificate", name)
    remember_id(session, name, cert_id)
    return cert_id


def stored_key(row: Any) -> StoredKey:
    """A `StoredKey` from a row of the keys table (with `hsm_group` labelled)."""
    return StoredKey(
        key_id=row.id, backend=row.backend, key_spec=KeySpec.parse(row.key_spec),
        private_key_sealed=row.private_key_sealed, public_key_sha256=row.public_key_sha256, csr_pem=row.csr_pem,
        hsm_group=row.hsm_group, pkcs11_label=row.pkcs11_label, pkcs11_id=row.pkcs11_id,
    )


def certificate_from_parts(cert: SimpleNamespace, status: SimpleNamespace, revision: SimpleNamespace | None,
                           profile: SimpleNamespace, params: list[SimpleNamespace], now: dt.datetime,
                           sealer: Sealer | None) -> Certificate:
    """The certificate from Core rows of its tables, one namespace per row (`revision` None
    when none is served): through the same `_to_certificate` as the ORM graph."""
    status.current_revision = revision
    cert.status, cert.profile, cert.dynamic_params = status, profile, params
    return _to_certificate(cert, now, sealer)  # type: ignore[arg-type]
