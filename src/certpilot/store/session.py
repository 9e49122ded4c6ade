"""A database handle: the engine, the session factory and transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, exc
from sqlalchemy.orm import Session

from certpilot.domain.errors import ConfigurationError
from certpilot.store.database import create_db_engine, is_initialised, make_session_factory, upgrade


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_db_engine(url)
        self._sessions = make_session_factory(self.engine)
        # reads on SQLite begin DEFERRED (see `create_db_engine`): they never wait for the write lock
        self._read_sessions = make_session_factory(self.engine.execution_options(certpilot_read_only=True))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only: nothing it does is committed. On SQLite it does not
        take the write lock, so a reader never waits for a writer (WAL keeps its snapshot)."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def upgrade(self) -> None:
        try:
            upgrade(self.engine)
        except exc.OperationalError as error:
            raise ConfigurationError(f"cannot reach the database: {error.orig}") from error

    def check_ready(self) -> None:
        """Raise `ConfigurationError` unless the database is reachable and migrated."""
        try:
            ready = is_initialised(self.engine)
        except exc.OperationalError as error:
            raise ConfigurationError(f"cannot reach the database: {error.orig}") from error
        if not ready:
            raise ConfigurationError("the database has no schema: run `certpilot init` or `certpilot db upgrade`")

    def dispose(self) -> None:
        self.engine.dispose()
