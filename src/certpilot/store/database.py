"""Engines and sessions for SQLite (default) and PostgreSQL, and schema migrations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, exc, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from certpilot.domain.errors import ConfigurationError, Conflict

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"database URL is not valid: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" hook below opens transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if conn.get_execution_options().get("certpilot_read_only"):
                conn.exec_driver_sql("BEGIN DEFERRED")  # a reader: a snapshot, no lock to wait for
            else:
                # a writer takes the write lock up front: two writers never deadlock on a lock upgrade
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def add_named(session: Session, row: object, is_taken: Callable[[], bool], conflict: str) -> None:
    """Add and flush `row`, whose unique name was free when checked. Another transaction may
    have taken it meanwhile (PostgreSQL: the insert waits for that one, then fails):
    `Conflict(conflict)` then, as for the check; any other integrity error as it is."""
    try:
        with session.begin_nested():  # the failed insert undone alone: `is_taken` can still ask
            session.add(row)
    except exc.IntegrityError:
        if is_taken():
            raise Conflict(conflict) from None
        raise


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config  # Alembic only for migrations: most commands never load it

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")
