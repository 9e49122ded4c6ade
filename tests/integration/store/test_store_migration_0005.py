"""Migration 0005 (deployment and notifications) on both databases: existing profiles get
no deployment and no receivers, existing certificates nothing deployed yet, and the way
back to 0004 drops exactly what 0005 added, keeping the rows."""

from __future__ import annotations

import datetime as dt

from alembic import command
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.orm import Session

from certpilot.domain.model import DeploySettings, NotifySettings
from certpilot.store.database import alembic_config, create_db_engine, upgrade
from certpilot.store.profiles import get_profile


def test_0005_upgrades_existing_rows_and_downgrades_cleanly(database_url: str) -> None:
    engine = create_db_engine(database_url)
    upgrade(engine, "0004")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    tables = MetaData()
    tables.reflect(engine, only=["scripts", "profiles", "certificates", "certificate_status"])
    with engine.begin() as conn:
        conn.execute(tables.tables["scripts"].insert().values(
            id=1, name="s", kind="python", source="", sha256="0" * 64, timeout_s=30, created_at=now, updated_at=now))
        conn.execute(tables.tables["profiles"].insert().values(
            id=1, name="corp", script_id=1, warning_days=[30], default_key="ec:p256", created_at=now, updated_at=now))
        conn.execute(tables.tables["certificates"].insert().values(
            id=1, name="web1", profile_id=1, subject={"common_name": "web1"}, subject_alt_names=[],
            key_spec="ec:p256", created_at=now, updated_at=now))
        conn.execute(tables.tables["certificate_status"].insert().values(
            certificate_id=1, phase="pending", failures=0, renewal_requested=False, warned_days=[],
            expired_event_recorded=False))

    upgrade(engine)
    with Session(engine) as session:
        profile = get_profile(session, "corp")
    assert (profile.deploy, profile.notify) == (DeploySettings(), NotifySettings())
    with engine.connect() as conn:
        row = conn.execute(text("SELECT deployed_revision, deploy_failures, deploy_error FROM certificate_status")).one()
    assert tuple(row) == (None, 0, None)
    assert {"deployments", "notifications"} <= set(inspect(engine).get_table_names())

    command.downgrade(alembic_config(engine), "0004")
    inspector = inspect(engine)
    assert not {"deployments", "notifications"} & set(inspector.get_table_names())
    assert not {c["name"] for c in inspector.get_columns("profiles")} & {"deploy_root", "notify_email"}
    assert not {c["name"] for c in inspector.get_columns("certificate_status")} & {"deployed_revision"}
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM certificate_status")) == 1
    upgrade(engine)
    engine.dispose()
