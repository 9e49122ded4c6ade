"""Fixtures for the renewal-loop tests: a migrated database (both backends, through the
root `settings`), a test CA, and worker processes that are always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.store.database import create_db_engine, upgrade
from tests.support.processes import WorkerProcess


@pytest.fixture
def migrated_settings(settings: Settings) -> Settings:
    """The root `settings`, with the schema in place (what `certpilot init` would do)."""
    engine = create_db_engine(settings.effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], WorkerProcess]]:
    """`start_worker(name, env)` runs `certpilot worker`; every one is stopped at the end."""
    started: list[WorkerProcess] = []

    def start(name: str, env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess.start(name, env, tmp_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.clean_up()
