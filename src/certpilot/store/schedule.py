"""Leases and scheduling: who works on a certificate now, and when the loop looks next.

A worker leases a certificate (`claim`, or `claim_due` for whatever is due) before
it acts; an expired lease may be taken over. This module only saves and loads:
`next_action_at` is decided by the caller, from the policy, over `snapshot`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict
from certpilot.domain.model import Phase
from certpilot.policy import CertificateSnapshot
from certpilot.store.certificates import _id, _row
from certpilot.store.profiles import renewal_of
from certpilot.store.tables import CertificateRow, CertificateStatusRow, ProfileRow


def claim(session: Session, name: str, *, owner: str, now: dt.datetime, lease_until: dt.datetime) -> None:
    """Take the lease on `name`, or raise `Conflict` while another live worker holds it."""
    cert_id = _id(session, name)
    taken = session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id == cert_id)
        .where(
            or_(
                CertificateStatusRow.lease_owner.is_(None),
                CertificateStatusRow.lease_owner == owner,
                CertificateStatusRow.lease_expires_at < now,
            )
        )
        .values(lease_owner=owner, lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not taken:
        raise Conflict(f"certificate {name!r} is being worked on by another worker; try again shortly")
    for loaded in list(session.identity_map.values()):  # status rows loaded before the UPDATE are stale
        if isinstance(loaded, CertificateStatusRow):
            session.expire(loaded)


def is_leased(session: Session, name: str, now: dt.datetime) -> bool:
    """Some live holder has the lease on `name`."""
    status = session.get(CertificateStatusRow, _id(session, name))
    return bool(status and status.lease_owner and status.lease_expires_at and status.lease_expires_at >= now)


def is_renewal_requested(session: Session, name: str) -> bool:
    return bool(_row(session, name).status.renewal_requested)


def release(session: Session, name: str, owner: str) -> None:
    session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id == _id(session, name))
        .where(CertificateStatusRow.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def release_all(session: Session, owner: str) -> None:
    session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


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
    st = CertificateStatusRow
    due = (
        select(st.certificate_id, ProfileRow.name)
        .join(CertificateRow, CertificateRow.id == st.certificate_id)
        .join(ProfileRow, ProfileRow.id == CertificateRow.profile_id)
        .where(st.next_action_at <= now)
        .where(or_(st.lease_owner.is_(None), st.lease_expires_at < now))
        .order_by(st.next_action_at)
        .limit(limit * CANDIDATES_PER_SLOT if room else limit)
    )
    if full:
        due = due.where(ProfileRow.name.not_in(full))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=st)
    picked: dict[int, str] = {}
    for cert_id, profile in session.execute(due):
        if len(picked) >= limit:
            break
        if profile in room:
            if room[profile] <= 0:
                continue
            room[profile] -= 1
        picked[cert_id] = profile
    if not picked:
        return []
    session.execute(
        update(st)
        .where(st.certificate_id.in_(picked))
        .values(lease_owner=owner, lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(select(CertificateRow.id, CertificateRow.name).where(CertificateRow.id.in_(picked)))
    names = {cert_id: name for cert_id, name in rows}
    return [Claimed(names[cert_id], profile) for cert_id, profile in picked.items()]


def profile_concurrency(session: Session) -> dict[str, int]:
    """Each profile's most calls in flight per controller process."""
    return {name: concurrency for name, concurrency in session.execute(select(ProfileRow.name, ProfileRow.concurrency))}


def earliest_next_action(session: Session, now: dt.datetime) -> dt.datetime | None:
    """When this loop may find work next: the earliest `next_action_at` among
    certificates no live worker holds, or the earliest expiry of a live lease."""
    st = CertificateStatusRow
    free = session.scalar(
        select(func.min(st.next_action_at)).where(or_(st.lease_owner.is_(None), st.lease_expires_at < now))
    )
    leased = session.scalar(select(func.min(st.lease_expires_at)).where(st.lease_expires_at >= now))
    return min((t for t in (free, leased) if t is not None), default=None)


def postpone(session: Session, name: str, until: dt.datetime) -> None:
    """Look at `name` again no sooner than `until` (after an unexpected error)."""
    _row(session, name).status.next_action_at = until


def snapshot(session: Session, name: str) -> CertificateSnapshot:
    """What the policy needs to know about `name`, loaded."""
    row = _row(session, name)
    st = row.status
    rev = st.current_revision
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
    _row(session, name).status.next_action_at = at


def record_warnings(session: Session, name: str, days: tuple[int, ...]) -> None:
    row = _row(session, name)
    row.status.warned_days = sorted(set(row.status.warned_days or ()) | set(days), reverse=True)
    session.flush()


def mark_expired(session: Session, name: str) -> None:
    row = _row(session, name)
    row.status.phase = Phase.EXPIRED.value
    row.status.expired_event_recorded = True
    session.flush()


def served_not_after(session: Session, name: str) -> dt.datetime | None:
    rev = _row(session, name).status.current_revision
    return rev.not_after if rev else None
