"""Fixtures for the REST API tests: a migrated App whose clock a test can move, the
ASGI app driven in-process, and one user with an API token per role.

The database comes from the root `settings` fixture, so every test that uses these
runs on SQLite and on PostgreSQL unless it narrows `database_url` itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from certpilot.server import create_server
from certpilot.config import Settings
from certpilot.domain.model import Role
from certpilot.services.app import App
from certpilot.services.users import add_user, create_token
from certpilot.store.database import create_db_engine, upgrade
from tests.support.api import ACTOR, PASSWORD, MovableClock, RoleTokens, user_name


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def api_app(settings: Settings, clock: MovableClock) -> Iterator[App]:
    """An App on the migrated test database, reading `clock`."""
    engine = create_db_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    with App(settings, clock=clock) as application:
        yield application


@pytest.fixture
def client(api_app: App) -> Iterator[TestClient]:
    """The API in-process (no renewal loop: tests drive issuance with `?wait=true`)."""
    with TestClient(create_server(api_app)) as test_client:
        yield test_client


@pytest.fixture
def tokens(api_app: App) -> RoleTokens:
    """One user per role, named after it, each with an API token."""
    made = {}
    for role in Role:
        add_user(api_app, user_name(role), role, PASSWORD, actor=ACTOR)
        made[role], _ = create_token(api_app, user_name(role), actor=ACTOR)
    return RoleTokens(made)
