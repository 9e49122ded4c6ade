"""store.session: a transaction commits on success and rolls back on any error; a read
session commits nothing and never waits for a writer; two writers that read before they
write both commit; `check_ready` and `upgrade` answer `ConfigurationError`; on both databases."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from certpilot.domain.errors import ConfigurationError
from certpilot.store import heartbeats
from certpilot.store.database import is_initialised
from certpilot.store.session import Database
from certpilot.store.tables import LoopHeartbeatRow
from tests.integration.store.conftest import T0


def _owners(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.scalars(select(LoopHeartbeatRow.owner)))


def test_a_transaction_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    with db.transaction() as session:
        heartbeats.beat(session, "kept", started_at=T0, now=T0)
    with pytest.raises(RuntimeError, match="boom"):
        with db.transaction() as session:
            heartbeats.beat(session, "lost", started_at=T0, now=T0)
            session.flush()  # written to the database, then rolled back
            raise RuntimeError("boom")
    assert _owners(db) == ["kept"]


def test_a_read_session_commits_nothing(db: Database) -> None:
    with db.read() as session:
        heartbeats.beat(session, "written-in-a-read", started_at=T0, now=T0)
        session.flush()  # in the database, inside the read's transaction
        assert session.scalar(select(func.count()).select_from(LoopHeartbeatRow)) == 1
    assert _owners(db) == []


def test_a_reader_does_not_wait_for_a_writer_and_sees_the_committed_state(db: Database) -> None:
    with db.transaction() as session:
        heartbeats.beat(session, "before", started_at=T0, now=T0)
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction() as session:
            heartbeats.beat(session, "uncommitted", started_at=T0, now=T0)
            session.flush()  # holds the write lock (SQLite) / the new row's lock (PostgreSQL)
            writing.set()
            done.wait(10)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(writer)
        assert writing.wait(10)
        started = time.monotonic()
        try:
            seen = _owners(db)
        finally:
            done.set()
        waited = time.monotonic() - started
        future.result()
    assert seen == ["before"]
    assert waited < 2, f"the reader waited {waited:.1f} s for the writer"
    assert _owners(db) == ["before", "uncommitted"]


def test_two_writers_that_read_before_writing_both_commit(db: Database) -> None:
    """On SQLite a writer takes the write lock when it begins: a second writer waits for it
    instead of failing on a stale snapshot when it comes to write."""
    first_read = threading.Event()

    def first() -> None:
        with db.transaction() as session:
            session.scalar(select(func.count()).select_from(LoopHeartbeatRow))
            first_read.set()
            time.sleep(0.3)
            heartbeats.beat(session, "first", started_at=T0, now=T0)

    def second() -> None:
        assert first_read.wait(10)
        with db.transaction() as session:
            session.scalar(select(func.count()).select_from(LoopHeartbeatRow))
            heartbeats.beat(session, "second", started_at=T0, now=T0 + dt.timedelta(seconds=1))

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(first), pool.submit(second)]
        for f in futures:
            f.result(timeout=30)
    assert _owners(db) == ["first", "second"]


def test_check_ready_says_a_database_without_schema_needs_init(database_url: str) -> None:
    database = Database(database_url)
    try:
        with pytest.raises(ConfigurationError, match="no schema.*certpilot init"):
            database.check_ready()
        assert not is_initialised(database.engine)
        database.upgrade()
        database.check_ready()
        assert is_initialised(database.engine)
    finally:
        database.dispose()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2",
    "sqlite:////nonexistent-directory-for-certpilot/certpilot.db",
], ids=["postgresql", "sqlite"])
def test_an_unreachable_database_is_a_configuration_error(url: str) -> None:
    database = Database(url)
    try:
        with pytest.raises(ConfigurationError, match="cannot reach the database"):
            database.check_ready()
        with pytest.raises(ConfigurationError, match="cannot reach the database"):
            database.upgrade()
    finally:
        database.dispose()
