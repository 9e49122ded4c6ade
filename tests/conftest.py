"""Shared fixtures: databases (SQLite and PostgreSQL), settings, an App, a test CA.

`database_url` is parametrised over both databases; any test that uses it (or the
`app` built on it) runs twice. PostgreSQL comes from CERTPILOT_TEST_POSTGRES_URL,
else the server on 127.0.0.1:5432, else a throwaway cluster started here. Each
test gets its own schema in a database made fresh for this run. Under CI=true a
missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from certpilot.config import Settings
from certpilot.keys.sealing import create_master_key_file
from certpilot.pki.local_ca import LocalCA, create_local_ca
from certpilot.services.app import App
from certpilot.store.database import create_db_engine, upgrade
from tests.support.postgres import PostgresServer, find_or_start_postgres

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    from tests.support import softhsm

    softhsm.prepare()  # before any test can load the PKCS#11 module


def missing(reason: str) -> None:
    """Skip for a missing component, except in CI where it is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: nothing may be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer | None]:
    server = find_or_start_postgres(tmp_path_factory.mktemp("pg"))
    yield server
    if server is not None:
        server.close()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer | None) -> Iterator[str | None]:
    """A database made for this test run, dropped at its end."""
    if postgres_server is None:
        yield None
        return
    name = f"certpilot_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(postgres_server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_server.url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _postgres_schema_url(base_url: str) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'certpilot.db'}"
        return
    base = request.getfixturevalue("postgres_database")
    if base is None:
        missing("no PostgreSQL server available")
    url, schema = _postgres_schema_url(base)
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield url
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    create_master_key_file(data_dir / "master.key")
    # cheap argon2: the suite would otherwise spend most of its time hashing passwords
    return Settings(data_dir=data_dir, database_url=database_url, reconcile_interval_s=1,
                    insecure_test_password_hashing=True)


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings) as application:
        yield application


@pytest.fixture
def test_ca(tmp_path: Path) -> LocalCA:
    import datetime as dt

    return create_local_ca(tmp_path / "ca", "certpilot test CA", dt.datetime.now(dt.timezone.utc))
