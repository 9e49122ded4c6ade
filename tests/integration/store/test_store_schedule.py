"""store.schedule: leases (claim, take over an expired one, release only one's own),
leasing what is due in batches (oldest first, per-profile room, rows another worker
holds skipped), the snapshot the policy decides on, and the bookkeeping writes, on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import DeploySettings, Phase, RenewalSettings
from certpilot.store import certificates, schedule
from certpilot.store.session import Database
from tests.integration.store.conftest import T0, Seed, overlapping

LEASE = T0 + dt.timedelta(minutes=5)


def _due(db: Database, seed: Seed, *names: str, profile: str = "p", step_s: int = 1) -> None:
    """Certificates due one after the other, `step_s` apart, oldest first."""
    with db.transaction() as session:
        for i, name in enumerate(names):
            seed.certificate(session, name, profile=profile, now=T0 + dt.timedelta(seconds=i * step_s))


def _claim_due(db: Database, owner: str, limit: int, room: dict[str, int] | None = None,
               now: dt.datetime = T0 + dt.timedelta(minutes=1)) -> list[schedule.Claimed]:
    with db.transaction() as session:
        return schedule.claim_due(session, owner=owner, now=now, lease_until=LEASE, limit=limit, room=room)


def test_a_lease_is_held_until_released_or_expired(db: Database, seed: Seed) -> None:
    _due(db, seed, "web")
    with db.transaction() as session:
        schedule.claim(session, "web", owner="a", now=T0, lease_until=LEASE)
        schedule.claim(session, "web", owner="a", now=T0, lease_until=LEASE)  # the holder again: fine
    with db.transaction() as session, pytest.raises(Conflict, match="another worker"):
        schedule.claim(session, "web", owner="b", now=T0, lease_until=LEASE)
    with db.transaction() as session:
        assert schedule.is_leased(session, "web", T0)
        assert not schedule.is_leased(session, "web", LEASE + dt.timedelta(seconds=1))
        schedule.release(session, "web", "b")  # not b's: nothing changes
        assert schedule.is_leased(session, "web", T0)
        # an expired lease is taken over
        schedule.claim(session, "web", owner="b", now=LEASE + dt.timedelta(seconds=1),
                       lease_until=LEASE + dt.timedelta(minutes=5))
    with db.transaction() as session:
        schedule.release(session, "web", "b")
        assert not schedule.is_leased(session, "web", T0)
    with db.transaction() as session, pytest.raises(NotFound):
        schedule.claim(session, "nope", owner="a", now=T0, lease_until=LEASE)


def test_due_certificates_are_leased_oldest_first_in_one_batch(db: Database, seed: Seed) -> None:
    _due(db, seed, "c0", "c1", "c2", "c3")
    with db.transaction() as session:
        schedule.set_next_action(session, "c3", T0 + dt.timedelta(hours=1))  # not due yet
        schedule.claim(session, "c1", owner="other", now=T0, lease_until=LEASE)  # another worker's
    first = _claim_due(db, "a", 1)
    assert first == [schedule.Claimed("c0", "p")]
    rest = _claim_due(db, "b", 10)
    assert rest == [schedule.Claimed("c2", "p")], "leased rows and rows not due are left alone"
    with db.read() as session:
        assert schedule.earliest_next_action(session, T0 + dt.timedelta(minutes=1)) == LEASE
    with db.transaction() as session:
        schedule.release_all(session, "b")
        schedule.release_all(session, "a")
    assert [c.name for c in _claim_due(db, "c", 10)] == ["c0", "c2"]


def test_room_per_profile_caps_a_batch_and_full_profiles_are_not_looked_at(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.profile(session, "slow")
        seed.profile(session, "fast")
    _due(db, seed, "s0", "s1", "s2", profile="slow")
    with db.transaction() as session:
        for i in range(2):
            seed.certificate(session, f"f{i}", profile="fast", now=T0 + dt.timedelta(seconds=10 + i))
    claimed = _claim_due(db, "a", 10, room={"slow": 1, "fast": 5})
    assert claimed == [schedule.Claimed("s0", "slow"), schedule.Claimed("f0", "fast"), schedule.Claimed("f1", "fast")]
    assert _claim_due(db, "b", 10, room={"slow": 0}) == []


def test_two_workers_claiming_at_once_never_lease_the_same_certificate(db: Database, seed: Seed) -> None:
    _due(db, seed, *[f"c{i}" for i in range(6)])

    def take(owner: str) -> object:
        def work(session: object) -> list[str]:
            return [c.name for c in schedule.claim_due(session, owner=owner, now=T0 + dt.timedelta(minutes=1),  # type: ignore[arg-type]
                                                       lease_until=LEASE, limit=4)]
        return work

    one, two = overlapping(db, take("a"), take("b"))
    assert isinstance(one, list) and isinstance(two, list), (one, two)
    assert one == ["c0", "c1", "c2", "c3"]
    assert not set(one) & set(two), "a row one worker leased is never leased by the other"
    assert two == ["c4", "c5"], "the second skips the rows the first holds (PostgreSQL) or waits for its commit (SQLite)"


def test_the_snapshot_is_what_the_policy_needs(db: Database, seed: Seed) -> None:
    renewal = RenewalSettings(renew_before_days=10, warning_days=(14, 7))
    with db.transaction() as session:
        seed.profile(session, "p", renewal=renewal, deploy=DeploySettings(root="/srv/certs"))
        seed.certificate(session, "fresh")
        seed.certificate(session, "web")
        seed.revision(session, "web", 1, days=30)
        cert_id = certificates._id(session, "web")
        certificates.update_status(session, cert_id, {"failures": 2, "retry_at": LEASE, "renewal_requested": True,
                                                      "warned_days": [14], "deployed_revision": None})
    with db.read() as session:
        fresh, web = schedule.snapshot(session, "fresh"), schedule.snapshot(session, "web")
        with pytest.raises(NotFound):
            schedule.snapshot(session, "nope")
    assert (fresh.phase, fresh.has_revision, fresh.not_after, fresh.deploy_pending) == (
        Phase.PENDING, False, None, False)
    assert (web.phase, web.has_revision, web.not_before, web.not_after) == (
        Phase.ISSUED, True, T0, T0 + dt.timedelta(days=30))
    assert (web.failures, web.retry_at, web.renewal_requested, web.warned_days) == (2, LEASE, True, frozenset({14}))
    assert web.renewal.renew_before_days == 10 and web.renewal.warning_days == (14, 7)
    assert web.deploy_pending, "a deploy root and a revision not deployed yet"


def test_bookkeeping_writes(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.certificate(session, "web")
        seed.revision(session, "web", 1, days=30)
    with db.transaction() as session:
        assert schedule.served_not_after(session, "web") == T0 + dt.timedelta(days=30)
        schedule.record_warnings(session, "web", (7,))
        schedule.record_warnings(session, "web", (14, 7))
        schedule.postpone(session, "web", LEASE)
    with db.transaction() as session:
        snap = schedule.snapshot(session, "web")
        assert snap.warned_days == frozenset({14, 7})
        assert certificates.get_certificate(session, "web", T0).status.next_action_at == LEASE
        schedule.mark_expired(session, "web")
    with db.read() as session:
        snap = schedule.snapshot(session, "web")
        assert (snap.phase, snap.expired_event_recorded) == (Phase.EXPIRED, True)
