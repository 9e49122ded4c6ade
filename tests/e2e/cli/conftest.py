"""Fixtures for the CLI end-to-end tests: a `Cli` bound to a fresh installation, and
one seeded installation per database shared by a module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.cli import (
    WEB1_REQUEST,
    Cli,
    SeededInstallation,
    copy_example_issuer,
    corp_profile_args,
    make_test_ca,
)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    """The console script with CERTPILOT_DATA_DIR / CERTPILOT_DATABASE_URL set."""
    return Cli(tmp_path / "data", database_url)


# --- one initialised installation per database, shared by a module ----------------

def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: nothing may be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like the root `database_url`, but one database per module and backend, so an
    expensive set-up can be shared by many read-only cases."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('clidb') / 'certpilot.db'}"
        return
    base = request.getfixturevalue("postgres_database")
    if base is None:
        _missing("no PostgreSQL server available")
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield url
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="module")
def seeded_installation(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> SeededInstallation:
    """`init`, script `local-ca`, profile `corp` and an issued certificate `web1`."""
    work = tmp_path_factory.mktemp("cli-seeded")
    cli = Cli(work / "data", module_database_url)
    ca = make_test_ca(work / "ca")
    issuer = copy_example_issuer(work / "scripts")
    cli.ok("init")
    cli.ok("script", "add", "local-ca", "--file", issuer)
    cli.ok(*corp_profile_args(ca))
    cli.ok(*WEB1_REQUEST, "--wait")
    return SeededInstallation(cli, ca, work, issuer)
