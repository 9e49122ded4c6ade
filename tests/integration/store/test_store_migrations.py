"""The migrations build exactly the schema the models describe, on both databases."""

import datetime as dt

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.orm import Session

from certpilot.domain.model import SandboxSettings
from certpilot.store.database import alembic_config, create_db_engine, is_initialised, upgrade
from certpilot.store.profiles import get_profile
from certpilot.store.tables import Base


def test_migrations_match_the_models(database_url):
    engine = create_db_engine(database_url)
    assert not is_initialised(engine)
    upgrade(engine)
    upgrade(engine)  # a second upgrade is a no-op
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("certificate_status")}
    assert {"ix_certificate_status_next_action_at", "ix_certificate_status_lease_expires_at"} <= indexes
    engine.dispose()


def _insert_profile_at_0001(engine: Engine) -> None:
    """A script, a profile with one parameter and a certificate of it, as 0001 stored them."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    tables = MetaData()
    tables.reflect(engine, only=["scripts", "profiles", "profile_params", "certificates"])
    with engine.begin() as conn:
        conn.execute(tables.tables["scripts"].insert().values(
            id=1, name="s", kind="python", source="", sha256="0" * 64, timeout_s=30, created_at=now, updated_at=now))
        conn.execute(tables.tables["profiles"].insert().values(
            id=1, name="corp", script_id=1, warning_days=[30], default_key="ec:p256", created_at=now, updated_at=now))
        conn.execute(tables.tables["profile_params"].insert().values(
            id="a" * 32, profile_id=1, position=0, name="validity_days", value="30", sensitive=False, dynamic=False))
        conn.execute(tables.tables["certificates"].insert().values(
            id=1, name="web1", profile_id=1, subject={"common_name": "web1"}, subject_alt_names=[],
            key_spec="ec:p256", created_at=now, updated_at=now))


def test_0002_gives_existing_profiles_the_sandbox_defaults_and_keeps_their_rows(database_url):
    engine = create_db_engine(database_url)
    upgrade(engine, "0001")
    _insert_profile_at_0001(engine)

    upgrade(engine)
    with Session(engine) as session:
        profile = get_profile(session, "corp")
    assert profile.sandbox == SandboxSettings(concurrency=16, allow_read=(), allow_write=())
    assert [(p.name, p.value) for p in profile.params] == [("validity_days", "30")], "the upgrade lost a parameter"

    command.downgrade(alembic_config(engine), "0001")  # and back, without touching the rows
    columns = {c["name"] for c in inspect(engine).get_columns("profiles")}
    assert not {"concurrency", "allow_read", "allow_write"} & columns
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM profile_params")) == 1
        assert connection.scalar(text("SELECT count(*) FROM certificates")) == 1
    upgrade(engine)
    with Session(engine) as session:
        assert get_profile(session, "corp").sandbox == SandboxSettings()
    engine.dispose()
