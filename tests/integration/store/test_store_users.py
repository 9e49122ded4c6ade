"""store.users: users, API tokens and web sessions as their callers use them: unique names,
only the token's SHA-256 stored, a revoked token takes its descendants (not its parent),
a removed user takes its tokens and sessions, a session lives until revoked, expired or
its user disabled; times aware UTC on both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
import hashlib

import pytest
from sqlalchemy import exc, func, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.domain.model import Role
from certpilot.store import users
from certpilot.store.session import Database
from certpilot.store.tables import ApiTokenRow, WebSessionRow
from tests.integration.store.conftest import T0, overlapping

HOUR = dt.timedelta(hours=1)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def people(db: Database) -> None:
    with db.transaction() as session:
        users.add_user(session, "carol", "hash-c", Role.ADMIN.value, T0)
        users.add_user(session, "alice", "hash-a", Role.ADMIN.value, T0)
        users.add_user(session, "bob", "hash-b", Role.VIEWER.value, T0 + HOUR)


def test_users_read_back_listed_by_name(db: Database, people: None) -> None:
    with db.read() as session:
        listed = users.list_users(session)
        found = users.password_hash(session, "bob")
        assert users.password_hash(session, "nobody") is None
        assert users.has_users(session)
    assert [u.username for u in listed] == ["alice", "bob", "carol"]
    assert found is not None and found[1] == "hash-b"
    bob = found[0]
    assert (bob.role, bob.disabled, bob.created_at) == (Role.VIEWER, False, T0 + HOUR)
    assert bob.created_at.utcoffset() == dt.timedelta(0)


def test_usernames_are_unique_and_unknown_users_not_found(db: Database, people: None) -> None:
    with db.read() as session:
        assert users.has_users(session)
    with pytest.raises(Conflict, match="user 'alice' exists already"):
        with db.transaction() as session:
            users.add_user(session, "alice", "h", Role.VIEWER.value, T0)
    for call in (lambda s: users.set_password_hash(s, "zed", "h"), lambda s: users.set_disabled(s, "zed", True),
                 lambda s: users.remove_user(s, "zed"), lambda s: users.list_tokens(s, "zed"),
                 lambda s: users.add_token(s, "zed", name="t", token_sha256=sha("z"), prefix="cp_z",
                                           now=T0, expires_at=None),
                 lambda s: users.add_session(s, "zed", sha("s"), T0, T0 + HOUR)):
        with pytest.raises(NotFound, match="zed"):
            with db.transaction() as session:
                call(session)


def test_no_users_at_first(db: Database) -> None:
    with db.read() as session:
        assert not users.has_users(session) and users.count_enabled_admins(session) == 0


def test_password_change_and_disabling(db: Database, people: None) -> None:
    with db.transaction() as session:
        users.set_password_hash(session, "alice", "new-hash")
        assert users.set_disabled(session, "carol", True).disabled
    with db.read() as session:
        assert users.password_hash(session, "alice")[1] == "new-hash"  # type: ignore[index]
        assert users.count_enabled_admins(session) == 1, "carol is disabled, bob is no admin"
    with db.transaction() as session:
        users.set_disabled(session, "carol", False)
    with db.read() as session:
        assert users.count_enabled_admins(session) == 2


def _token(db: Database, user: str, secret: str, *, parent_id: int | None = None, role: Role | None = None,
           expires_at: dt.datetime | None = None) -> int:
    with db.transaction() as session:
        return users.add_token(session, user, name=f"t-{len(secret)}", token_sha256=sha(secret), prefix=f"cp_{secret[:4]}",
                               now=T0, expires_at=expires_at, parent_id=parent_id, role=role).id


def test_a_token_is_found_by_its_hash_only(db: Database, people: None) -> None:
    expires = dt.datetime(2026, 4, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    token_id = _token(db, "bob", "secret-one", role=Role.VIEWER, expires_at=expires)
    with db.read() as session:
        raw = session.execute(select(ApiTokenRow.__table__)).one()
        assert not any("secret-one" in str(value) for value in raw), "only the token's hash is stored"
        found = users.find_token(session, sha("secret-one"))
        assert users.find_token(session, sha("secret-two")) is None
        assert users.get_token(session, token_id) == found[0]  # type: ignore[index]
        with pytest.raises(NotFound, match="token"):
            users.get_token(session, token_id + 1000)
    assert found is not None
    token, user = found
    assert (token.id, token.username, token.name, token.prefix, token.role) == (
        token_id, "bob", "t-10", "cp_secr", Role.VIEWER)
    assert token.expires_at == expires and token.expires_at.utcoffset() == dt.timedelta(0)
    assert token.revoked_at is None and token.last_used_at is None and token.parent_id is None
    assert user.username == "bob"
    with db.transaction() as session:
        users.touch_token(session, token_id, T0 + HOUR)
        users.touch_token(session, token_id + 1000, T0)  # gone meanwhile: nothing to do
    with db.read() as session:
        assert users.get_token(session, token_id).last_used_at == T0 + HOUR


def test_a_token_hash_is_unique(db: Database, people: None) -> None:
    _token(db, "bob", "same")
    with pytest.raises(exc.IntegrityError):
        _token(db, "alice", "same")


def test_revoking_a_token_revokes_its_descendants_only(db: Database, people: None) -> None:
    root = _token(db, "alice", "root")
    child = _token(db, "alice", "child", parent_id=root)
    grandchild = _token(db, "alice", "grandchild", parent_id=child)
    sibling = _token(db, "alice", "sibling", parent_id=root)
    other = _token(db, "alice", "other")
    with db.read() as session:
        assert [t.id for t in users.ancestors(session, child)] == [child, root]
        assert [t.id for t in users.ancestors(session, None)] == []
        assert [t.id for t in users.list_tokens(session, "alice")] == [root, child, grandchild, sibling, other]
        assert users.list_tokens(session, "bob") == []
    later = T0 + HOUR
    with db.transaction() as session:
        users.revoke_token(session, sibling, T0)  # revoked before: keeps its time
    with db.transaction() as session:
        assert users.revoke_token(session, child, later).revoked_at == later
    with db.read() as session:
        revoked = {t.id: t.revoked_at for t in users.list_tokens(session)}
    assert revoked == {root: None, child: later, grandchild: later, sibling: T0, other: None}
    with db.transaction() as session:
        users.revoke_token(session, root, later)
    with db.read() as session:
        assert {t.id: t.revoked_at for t in users.list_tokens(session)}[sibling] == T0
        with pytest.raises(NotFound, match="token"):
            users.revoke_token(session, other + 1000, later)


def test_revoking_a_users_tokens_counts_the_live_ones(db: Database, people: None) -> None:
    a1, a2, _a3 = _token(db, "alice", "a1"), _token(db, "alice", "a2"), _token(db, "alice", "a3")
    b1 = _token(db, "bob", "b1")
    with db.transaction() as session:
        users.revoke_token(session, a1, T0)
    with db.transaction() as session:
        assert users.revoke_user_tokens(session, "alice", T0 + HOUR) == 2
    with db.read() as session:
        by_id = {t.id: t.revoked_at for t in users.list_tokens(session)}
    assert by_id[a1] == T0 and by_id[a2] == T0 + HOUR and by_id[b1] is None


def test_removing_a_user_takes_its_tokens_and_sessions(db: Database, people: None) -> None:
    _token(db, "alice", "a1")
    kept = _token(db, "bob", "b1")
    with db.transaction() as session:
        users.add_session(session, "alice", sha("sa"), T0, T0 + HOUR)
        users.add_session(session, "bob", sha("sb"), T0, T0 + HOUR)
    with db.transaction() as session:
        users.remove_user(session, "alice")
    with db.read() as session:
        assert [u.username for u in users.list_users(session)] == ["bob", "carol"]
        assert [t.id for t in users.list_tokens(session)] == [kept]
        assert session.scalar(select(func.count()).select_from(WebSessionRow)) == 1
        assert users.find_session(session, sha("sb"), T0) is not None


def test_a_session_lives_until_revoked_expired_or_its_user_disabled(db: Database, people: None) -> None:
    with db.transaction() as session:
        for name, user in (("s1", "alice"), ("s2", "alice"), ("s3", "bob"), ("s4", "carol")):
            users.add_session(session, user, sha(name), T0, T0 + HOUR)
    with db.read() as session:
        user = users.find_session(session, sha("s1"), T0 + HOUR - dt.timedelta(microseconds=1))
        assert user is not None and user.username == "alice"
        assert users.find_session(session, sha("s1"), T0 + HOUR) is None, "expired at expires_at"
        assert users.find_session(session, sha("unknown"), T0) is None
    with db.transaction() as session:
        users.revoke_session(session, sha("s1"), T0)
        users.set_disabled(session, "carol", True)
        assert users.revoke_user_sessions(session, "bob", T0) == 1
        assert users.revoke_user_sessions(session, "bob", T0) == 0, "already revoked"
    with db.read() as session:
        live = [n for n in ("s1", "s2", "s3", "s4") if users.find_session(session, sha(n), T0)]
    assert live == ["s2"]


def test_purging_forgets_sessions_ended_before_a_time(db: Database, people: None) -> None:
    with db.transaction() as session:
        users.add_session(session, "alice", sha("expired-early"), T0, T0 + HOUR)
        users.add_session(session, "alice", sha("revoked-early"), T0, T0 + 48 * HOUR)
        users.add_session(session, "alice", sha("revoked-late"), T0, T0 + 48 * HOUR)
        users.add_session(session, "alice", sha("live"), T0, T0 + 48 * HOUR)
        users.revoke_session(session, sha("revoked-early"), T0 + HOUR)
        users.revoke_session(session, sha("revoked-late"), T0 + 30 * HOUR)
    with db.transaction() as session:
        users.purge_sessions(session, T0 + 24 * HOUR)
    with db.read() as session:
        left = set(session.scalars(select(WebSessionRow.session_sha256)))
    assert left == {sha("revoked-late"), sha("live")}


def test_two_transactions_adding_one_name_at_once_one_conflicts(db: Database) -> None:
    def add(role: Role) -> Callable[[Session], object]:
        return lambda session: users.add_user(session, "dave", "h", role.value, T0)

    first, second = overlapping(db, add(Role.ADMIN), add(Role.VIEWER))
    assert not isinstance(first, Exception)
    assert isinstance(second, Conflict) and "user 'dave' exists already" in str(second)
    with db.read() as session:
        assert [(u.username, u.role) for u in users.list_users(session)] == [("dave", Role.ADMIN)]
