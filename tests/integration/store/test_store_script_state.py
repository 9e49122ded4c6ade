"""store.script_state: what a call sets is what the next call loads; values are sealed,
bound to their profile and key; deletions apply always, writes only within the 64 KiB
bound; two calls writing at once (two connections) both land, on the same key too."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from certpilot.domain.errors import KeyBackendError, NotFound
from certpilot.domain.script_state import STATE_LIMIT_BYTES, StateChanges
from certpilot.keys.sealing import Sealer
from certpilot.store import script_state
from certpilot.store.profiles import profile_id
from certpilot.store.session import Database
from certpilot.store.tables import ProfileStateRow
from tests.integration.store.conftest import T0, Seed


@pytest.fixture
def two_profiles(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.profile(session, "acme")
        seed.profile(session, "other")


def _apply(db: Database, sealer: Sealer, profile: str, changes: StateChanges,
           now: dt.datetime = T0) -> str | None:
    with db.transaction() as session:
        return script_state.apply(session, profile, sealer, changes, now)


def _load(db: Database, sealer: Sealer, profile: str) -> dict[str, str]:
    with db.read() as session:
        return script_state.load(session, profile, sealer)


def test_what_is_set_is_loaded_per_profile(db: Database, sealer: Sealer, two_profiles: None) -> None:
    assert _load(db, sealer, "acme") == {}
    assert _apply(db, sealer, "acme", StateChanges(set={"account": "-----BEGIN KEY-----é", "kid": "42"})) is None
    assert _apply(db, sealer, "other", StateChanges(set={"kid": "7"})) is None
    assert _load(db, sealer, "acme") == {"account": "-----BEGIN KEY-----é", "kid": "42"}
    assert _load(db, sealer, "other") == {"kid": "7"}
    with db.read() as session:
        assert script_state.key_names(session, "acme") == ["account", "kid"]


def test_a_write_replaces_and_a_deletion_removes(db: Database, sealer: Sealer, two_profiles: None) -> None:
    _apply(db, sealer, "acme", StateChanges(set={"a": "1", "b": "2", "c": "3"}))
    later = T0 + dt.timedelta(minutes=1)
    _apply(db, sealer, "acme", StateChanges(set={"a": "one"}, deleted=frozenset({"b", "never-set"})), later)
    assert _load(db, sealer, "acme") == {"a": "one", "c": "3"}
    with db.read() as session:
        rows = {r.key: r for r in session.scalars(select(ProfileStateRow))}
        assert rows["a"].size == len("a") + len("one") and rows["a"].updated_at == later
        assert rows["c"].updated_at == T0 and rows["c"].updated_at.utcoffset() == dt.timedelta(0)


def _state_rows(session: Session) -> dict[tuple[str, str], ProfileStateRow]:
    names = {profile_id(session, n): n for n in ("acme", "other")}
    return {(names[r.profile_id], r.key): r for r in session.scalars(select(ProfileStateRow))}


@pytest.mark.parametrize("moved_to", [("acme", "kid"), ("other", "account")], ids=["other-key", "other-profile"])
def test_values_are_sealed_and_bound_to_profile_and_key(db: Database, sealer: Sealer, two_profiles: None,
                                                        moved_to: tuple[str, str]) -> None:
    _apply(db, sealer, "acme", StateChanges(set={"account": "PRIVATE-KEY-MATERIAL", "kid": "42"}))
    _apply(db, sealer, "other", StateChanges(set={"account": "x"}))
    with db.transaction() as session:
        rows = _state_rows(session)
        sealed = rows[("acme", "account")].value_sealed
        assert b"PRIVATE-KEY-MATERIAL" not in sealed
        rows[moved_to].value_sealed = sealed
        session.flush()
        with pytest.raises(KeyBackendError, match="does not open"):
            script_state.load(session, moved_to[0], sealer)
        session.rollback()


def test_writes_beyond_the_bound_are_refused_deletions_still_apply(db: Database, sealer: Sealer,
                                                                    two_profiles: None) -> None:
    half = STATE_LIMIT_BYTES // 2
    assert _apply(db, sealer, "acme", StateChanges(set={"a": "x" * half, "b": "small"})) is None
    why = _apply(db, sealer, "acme", StateChanges(set={"c": "y" * half}, deleted=frozenset({"b"})))
    assert why is not None and "was not saved" in why and str(STATE_LIMIT_BYTES) in why
    assert _load(db, sealer, "acme") == {"a": "x" * half}
    # replacing a key counts its new value, not old and new
    assert _apply(db, sealer, "acme", StateChanges(set={"a": "z" * (STATE_LIMIT_BYTES - 1)})) is None
    assert _apply(db, sealer, "other", StateChanges(set={"c": "y" * half})) is None, "the bound is per profile"
    assert _apply(db, sealer, "acme", StateChanges(set={"a": "z" * STATE_LIMIT_BYTES})) is not None


def test_a_missing_profile(db: Database, sealer: Sealer, two_profiles: None) -> None:
    assert _apply(db, sealer, "gone", StateChanges(set={"a": "1"})) == (
        "the profile is gone: its script state was not saved")
    with db.read() as session:
        with pytest.raises(NotFound, match="profile"):
            script_state.load(session, "gone", sealer)
        with pytest.raises(NotFound, match="profile"):
            script_state.key_names(session, "gone")


@pytest.mark.parametrize("keys", [("k1", "k2"), ("same", "same")], ids=["other-keys", "same-key"])
def test_two_calls_writing_at_once_both_land(db: Database, sealer: Sealer, two_profiles: None,
                                             keys: tuple[str, str]) -> None:
    first_wrote = threading.Event()

    def call(key: str, value: str, wait_for: threading.Event | None) -> str | None:
        if wait_for is not None:
            assert wait_for.wait(10)
        with db.transaction() as session:
            why = script_state.apply(session, "acme", sealer, StateChanges(set={key: value}), T0)
            if wait_for is None:
                first_wrote.set()
                time.sleep(0.3)  # the other call writes while this one has not committed
            return why

    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(call, keys[0], "first", None)
        two = pool.submit(call, keys[1], "second", first_wrote)
        assert (one.result(timeout=30), two.result(timeout=30)) == (None, None)
    expected = {keys[0]: "first", keys[1]: "second"}  # the same key: the later commit wins
    assert _load(db, sealer, "acme") == expected


def test_two_calls_at_once_never_pass_the_bound_together(db: Database, sealer: Sealer, two_profiles: None) -> None:
    """Each call's writes fit alone, not together: the call recorded second (it waited for,
    or raced with, the first's uncommitted writes) is refused, on both databases."""
    big = "x" * (STATE_LIMIT_BYTES * 2 // 3)
    first_wrote = threading.Event()

    def call(key: str, wait_for: threading.Event | None) -> str | None:
        if wait_for is not None:
            assert wait_for.wait(10)
        with db.transaction() as session:
            why = script_state.apply(session, "acme", sealer, StateChanges(set={key: big}), T0)
            if wait_for is None:
                first_wrote.set()
                time.sleep(0.3)
            return why

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(call, "first", None), pool.submit(call, "second", first_wrote)
        results = (one.result(timeout=30), two.result(timeout=30))
    assert results[0] is None and results[1] is not None and "was not saved" in results[1]
    assert _load(db, sealer, "acme") == {"first": big}
