"""Leases and scheduling: who works on a certificate now, and when the loop looks next.

A worker leases a certificate (`claim`, or `claim_due` for whatever is due) before
it acts; an expired lease may be taken over. This module only saves and loads:
`next_action_at` is decided by the caller, from the policy, over `snapshot`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from types import SimpleNamespace

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import Phase
from certpilot.policy import CertificateSnapshot
from certpilot.store.certificates import RowParts, _id, expire_orm_status, flush_orm, remember_id, update_status
from certpilot.store.profiles import renewal_of
from certpilot.store.tables import CertificateRow, CertificateStatusRow, ProfileRow, RevisionRow

# Core statements on the tables (see `store.certificates`, "Core statements"): the loop
# runs these for every certificate it looks at
_CERTS: Table = CertificateRow.__table__  # type: ignore[assignment]
_STATUS: Table = CertificateStatusRow.__table__  # type: ignore[assignment]
_PROFILES: Table = ProfileRow.__table__  # type: ignore[assignment]
_REVISIONS: Table = RevisionRow.__table__  # type: ignore[assignment]


def _set_status(session: Session, name: str, **values: object) -> None:
    update_status(session, _id(session, name), values)


# built once with bind parameters (see `store.certificates`)
_CLAIM = (
    update(_STATUS).where(_STATUS.c.certificate_id == bindparam("cid_"))
    .where(or_(_STATUS.c.lease_owner.is_(None), _STATUS.c.lease_owner == bindparam("holder_"),
               _STATUS.c.lease_expires_at < bindparam("now_")))
)
_RELEASE = (update(_STATUS).where(_STATUS.c.certificate_id == bindparam("cid_"))
            .where(_STATUS.c.lease_owner == bindparam("holder_")))
_LEASE = select(_STATUS.c.lease_owner, _STATUS.c.lease_expires_at).where(_STATUS.c.certificate_id == bindparam("cid_"))
_RENEWAL_REQUESTED = select(_STATUS.c.renewal_requested).where(_STATUS.c.certificate_id == bindparam("cid_"))
_WARNED_DAYS = select(_STATUS.c.warned_days).where(_STATUS.c.certificate_id == bindparam("cid_"))
_SERVED_NOT_AFTER = (select(_REVISIONS.c.not_after).join(_STATUS, _STATUS.c.current_revision_id == _REVISIONS.c.id)
                     .where(_STATUS.c.certificate_id == bindparam("cid_")))


def claim(session: Session, name: str, *, owner: str, now: dt.datetime, lease_until: dt.datetime) -> None:
    """Take the lease on `name`, or raise `Conflict` while another live worker holds it."""
    cert_id = _id(session, name)
    flush_orm(session)
    taken = session.connection().execute(_CLAIM, {"cid_": cert_id, "holder_": owner, "now_": now,
                                     "lease_owner": owner, "lease_expires_at": lease_until}).rowcount
    if not taken:
        raise Conflict(f"certificate {name!r} is being worked on by another worker; try again shortly")
    expire_orm_status(session)  # status rows loaded before the UPDATE are stale


def is_leased(session: Session, name: str, now: dt.datetime) -> bool:
    """Some live holder has the lease on `name`."""
    flush_orm(session)
    lease = session.connection().execute(_LEASE, {"cid_": _id(session, name)}).first()
    return bool(lease and lease.lease_owner and lease.lease_expires_at and lease.lease_expires_at >= now)


def is_renewal_requested(session: Session, name: str) -> bool:
    flush_orm(session)
    return bool(session.connection().execute(_RENEWAL_REQUESTED, {"cid_": _id(session, name)}).scalar())


def release(session: Session, name: str, owner: str) -> None:
    cert_id = _id(session, name)
    flush_orm(session)
    session.connection().execute(_RELEASE, {"cid_": cert_id, "holder_": owner, "lease_owner": None, "lease_expires_at": None})
    expire_orm_status(session)


def release_all(session: Session, owner: str) -> None:
    flush_orm(session)
    session.connection().execute(update(_STATUS).where(_STATUS.c.lease_owner == owner).values(lease_owner=None, lease_expires_at=None))
    expire_orm_status(session)


@dataclass(frozen=True)
class Claimed:
    name: str
    profile: str


CANDIDATES_PER_SLOT = 4  # rows looked at per free slot, so that full profiles do not hide others


def claim_due(
    session: Session, *, owner: str, now: dt.datetime, lease_until: dt.datetime, limit: int,
    room: Mapping[str, int] | None = None,
) -> list[Claimed]:
    """Lease up to `limit` certificates whose next action is due and that no live
    worker holds, oldest due first; other workers skip the rows this one locks
    (PostgreSQL). `room` caps how many of one profile are taken (profiles not in it
    are not capped); a profile without room is not looked at."""
    room = dict(room or {})
    full = [name for name, free in room.items() if free <= 0]
    st = _STATUS
    due = (
        select(st.c.certificate_id, _CERTS.c.name, _PROFILES.c.name)
        .join(_CERTS, _CERTS.c.id == st.c.certificate_id)
        .join(_PROFILES, _PROFILES.c.id == _CERTS.c.profile_id)
        .where(st.c.next_action_at <= now)
        .where(or_(st.c.lease_owner.is_(None), st.c.lease_expires_at < now))
        .order_by(st.c.next_action_at)
        .limit(limit * CANDIDATES_PER_SLOT if room else limit)
    )
    if full:
        due = due.where(_PROFILES.c.name.not_in(full))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=st)
    flush_orm(session)
    picked: dict[int, Claimed] = {}
    for cert_id, name, profile in session.connection().execute(due):
        if len(picked) >= limit:
            break
        if profile in room:
            if room[profile] <= 0:
                continue
            room[profile] -= 1
        picked[cert_id] = Claimed(name, profile)
    if not picked:
        return []
    session.connection().execute(
        update(st).where(st.c.certificate_id.in_(picked)).values(lease_owner=owner, lease_expires_at=lease_until)
    )
    expire_orm_status(session)
    return list(picked.values())


def profile_concurrency(session: Session) -> dict[str, int]:
    """Each profile's most calls in flight per controller process."""
    return {name: concurrency for name, concurrency in session.connection().execute(select(_PROFILES.c.name, _PROFILES.c.concurrency))}


def earliest_next_action(session: Session, now: dt.datetime) -> dt.datetime | None:
    """When this loop may find work next: the earliest `next_action_at` among
    certificates no live worker holds, or the earliest expiry of a live lease."""
    st = _STATUS.c
    free = session.connection().execute(
        select(func.min(st.next_action_at)).where(or_(st.lease_owner.is_(None), st.lease_expires_at < now))
    ).scalar()
    leased = session.connection().execute(select(func.min(st.lease_expires_at)).where(st.lease_expires_at >= now)).scalar()
    return min((t for t in (free, leased) if t is not None), default=None)


def postpone(session: Session, name: str, until: dt.datetime) -> None:
    """Look at `name` again no sooner than `until` (after an unexpected error)."""
    _set_status(session, name, next_action_at=until)


_SNAPSHOT_QUERY = (
    select(_CERTS.c.id.label("c__id"), *[c.label(f"s__{c.name}") for c in _STATUS.c],
           *[c.label(f"r__{c.name}") for c in _REVISIONS.c if c.name not in ("leaf_pem", "chain_pem", "csr_pem")],
           *[c.label(f"p__{c.name}") for c in _PROFILES.c])
    .select_from(_CERTS.join(_STATUS, _STATUS.c.certificate_id == _CERTS.c.id)
                 .join(_PROFILES, _PROFILES.c.id == _CERTS.c.profile_id)
                 .outerjoin(_REVISIONS, _REVISIONS.c.id == _STATUS.c.current_revision_id))
)

_SNAPSHOT_BY_NAME = _SNAPSHOT_QUERY.where(_CERTS.c.name == bindparam("name_"))
_SNAPSHOT_PARTS = RowParts(_SNAPSHOT_QUERY)


def snapshot(session: Session, name: str) -> CertificateSnapshot:
    """What the policy needs to know about `name`, loaded (one statement: the status, the
    served revision without its PEMs, the profile)."""
    flush_orm(session)
    found = session.connection().execute(_SNAPSHOT_BY_NAME, {"name_": name}).first()
    if found is None:
        raise NotFound("certificate", name)
    parts = _SNAPSHOT_PARTS.split(found)
    cert, st, revision, profile = parts["c"], parts["s"], parts["r"], parts["p"]
    remember_id(session, name, cert.id)
    row = SimpleNamespace(profile=profile)
    rev = revision if st.current_revision_id is not None else None
    return CertificateSnapshot(
        phase=Phase(st.phase),
        has_revision=rev is not None,
        not_before=rev.not_before if rev else None,
        not_after=rev.not_after if rev else None,
        renewal=renewal_of(row.profile),
        failures=st.failures,
        retry_at=st.retry_at,
        renewal_requested=st.renewal_requested,
        deferred_poll_at=st.deferred_poll_at,
        deferred_since=st.deferred_since,
        warned_days=frozenset(st.warned_days or ()),
        expired_event_recorded=st.expired_event_recorded,
        deploy_pending=bool(row.profile.deploy_root) and rev is not None and st.deployed_revision != rev.number,
        # a backoff belongs to the revision that failed: a new revision deploys at once
        deploy_retry_at=st.deploy_retry_at if rev is not None and st.deploy_failed_revision == rev.number else None,
        renewal_info_renew_at=st.renewal_info_renew_at,
        renewal_info_check_at=st.renewal_info_check_at,
    )


def set_next_action(session: Session, name: str, at: dt.datetime) -> None:
    """When the loop looks at `name` next."""
    _set_status(session, name, next_action_at=at)


def record_warnings(session: Session, name: str, days: tuple[int, ...]) -> None:
    flush_orm(session)
    warned = session.connection().execute(_WARNED_DAYS, {"cid_": _id(session, name)}).scalar()
    _set_status(session, name, warned_days=sorted(set(warned or ()) | set(days), reverse=True))


def mark_expired(session: Session, name: str) -> None:
    _set_status(session, name, phase=Phase.EXPIRED.value, expired_event_recorded=True)


def served_not_after(session: Session, name: str) -> dt.datetime | None:
    flush_orm(session)
    return session.connection().execute(_SERVED_NOT_AFTER, {"cid_": _id(session, name)}).scalar()
