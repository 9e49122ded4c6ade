"""The migrations build exactly the schema the models describe, on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from certpilot.store.database import create_db_engine, is_initialised, upgrade
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
