"""store.database: engines for both databases (SQLite with foreign keys and WAL), whether a
database is initialised, and the schema's datetimes: aware UTC in and out, compared and
ordered as instants whatever offset they were given with."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import exc, select, text

from certpilot.domain.errors import ConfigurationError
from certpilot.domain.model import NotifySettings, ProfileParam
from certpilot.domain.script_state import StateChanges
from certpilot.keys.sealing import Sealer
from certpilot.store import deferrals, hsm, script_state
from certpilot.store.database import create_db_engine, is_sqlite
from certpilot.store.session import Database
from certpilot.store.tables import LoopHeartbeatRow
from tests.integration.store.conftest import T0, Seed

PLUS_2 = dt.timezone(dt.timedelta(hours=2))


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="database URL is not valid"):
        create_db_engine("not a url at all")


def test_is_sqlite_tells_the_backend_by_the_url() -> None:
    assert is_sqlite("sqlite:////tmp/x.db")
    assert is_sqlite("sqlite+pysqlite:///relative.db")
    assert not is_sqlite("postgresql+psycopg://u@h/db")


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'certpilot.db'}")
    try:
        database.upgrade()
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with pytest.raises(exc.IntegrityError, match="FOREIGN KEY"):
            with database.transaction() as session:
                session.execute(text("INSERT INTO profiles (name, script_id, warning_days, default_key, created_at,"
                                     " updated_at) VALUES ('orphan', 4242, '[]', 'ec:p256', :t, :t)"), {"t": T0})
    finally:
        database.dispose()


def test_datetimes_come_back_aware_utc_and_compare_as_instants(db: Database) -> None:
    early_in_plus_2 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=PLUS_2)  # 10:00:00.123456Z
    later_in_utc = dt.datetime(2026, 3, 1, 11, 0, tzinfo=dt.timezone.utc)
    with db.transaction() as session:
        session.add(LoopHeartbeatRow(owner="a", started_at=T0, last_pass_at=later_in_utc))
        session.add(LoopHeartbeatRow(owner="b", started_at=T0, last_pass_at=early_in_plus_2))
    with db.read() as session:
        rows = session.execute(select(LoopHeartbeatRow.owner, LoopHeartbeatRow.last_pass_at)
                               .order_by(LoopHeartbeatRow.last_pass_at)).all()
        before_half_past_ten = session.scalars(
            select(LoopHeartbeatRow.owner)
            .where(LoopHeartbeatRow.last_pass_at < dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.timezone.utc))).all()
    assert [owner for owner, _ in rows] == ["b", "a"]
    assert rows[0][1] == early_in_plus_2 and rows[0][1].tzinfo == dt.timezone.utc
    assert rows[0][1].microsecond == 123456
    assert rows[1][1] == later_in_utc and rows[1][1].tzinfo == dt.timezone.utc
    assert before_half_past_ten == ["b"]


def test_a_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(exc.StatementError, match="naive datetime"):
        with db.transaction() as session:
            session.add(LoopHeartbeatRow(owner="naive", started_at=dt.datetime(2026, 3, 1, 12, 0)))
            session.flush()


def test_the_sqlite_file_holds_no_secret_in_clear(tmp_path: Path, sealer: Sealer, seed: Seed) -> None:
    """DESIGN §4: grepping the database file for a password or a key finds nothing (the
    WAL included, where fresh writes live until a checkpoint)."""
    secrets = {"param": "PARAM-SECRET-1f3a", "url": "https://hooks.example.test/URL-SECRET-9c2e",
               "pin": "PIN-SECRET-77aa", "state": "STATE-SECRET-0b0b", "cookie": "COOKIE-SECRET-5d5d"}
    database = Database(f"sqlite:///{tmp_path / 'certpilot.db'}")
    try:
        database.upgrade()
        with database.transaction() as session:
            seed.profile(session, "p", params=(ProfileParam("api_key", secrets["param"], sensitive=True),),
                         notify=NotifySettings(url=secrets["url"]))
            hsm.add_group(session, sealer, name="g", module_path="/m.so", token_label="t", pin=secrets["pin"], now=T0)
            script_state.apply(session, "p", sealer, StateChanges(set={"account": secrets["state"]}), T0)
            seed.certificate(session, "c")
            deferrals.record(session, "c", sealer, attempt_id=seed.attempt(session, "c"), cookie=secrets["cookie"],
                             now=T0, poll_at=T0, output=None)
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("certpilot.db*"))
        assert b"api_key" in stored and b"account" in stored, "the rows are there, in this file"
        for what, secret in secrets.items():
            assert secret.encode() not in stored, f"the {what} is in the database file in clear"
    finally:
        database.dispose()
