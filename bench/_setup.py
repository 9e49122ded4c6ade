"""Setting certpilot up for the benchmark: data dir, CA, databases, App, profile.

Only public entry points of certpilot are used, as the CLI and the API use them.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from certpilot.config import Settings
from certpilot.domain.model import KeySpec, Outcome, make_subject
from certpilot.keys.sealing import create_master_key_file
from certpilot.pki.local_ca import LocalCA, create_local_ca
from certpilot.services.app import App
from certpilot.services.certificates import request_certificate
from certpilot.services.issuance import attempt
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source, local_ca_params
from certpilot.store.database import create_db_engine, upgrade

ACTOR = "bench"
SCRIPT = "local-ca"
PROFILE = "bench"
WORKERS = 2
DEFAULT_POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_ca(directory: Path) -> LocalCA:
    return create_local_ca(directory, "Bench CA", dt.datetime.now(dt.timezone.utc))


@dataclass
class Backend:
    """One database with a migrated schema, an App on it and the bench profile."""

    name: str  # "sqlite" or "postgresql"
    url: str
    app: App
    describe: str
    server_pids: Callable[[], list[int]] | None = None  # database server processes serving this benchmark
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        try:
            self.app.close()
        finally:
            for step in reversed(self._cleanup):
                try:
                    step()
                except Exception as exc:  # cleanup must not hide the run's own error
                    log(f"warning: cleanup of {self.name} failed: {exc}")


def _start_app(url: str, data_dir: Path, ca: LocalCA) -> App:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_master_key_file(data_dir / "master.key")
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    app = App(Settings(data_dir=data_dir, database_url=url))
    try:
        add_script(app, SCRIPT, bundled_local_ca_source(), actor=ACTOR)
        create_profile(app, PROFILE, script=SCRIPT, params=local_ca_params(ca), actor=ACTOR)
    except BaseException:
        app.close()
        raise
    return app


def sqlite_backend(root: Path, ca: LocalCA) -> Backend:
    data_dir = root / "sqlite-data"
    url = f"sqlite:///{(data_dir / 'certpilot.db').resolve()}"
    app = _start_app(url, data_dir, ca)
    import sqlite3

    describe = f"SQLite {sqlite3.sqlite_version}, file in {data_dir} (WAL, synchronous=NORMAL)"
    return Backend("sqlite", url, app, describe)


def postgres_backend(root: Path, ca: LocalCA, server_url: str) -> Backend | str:
    """The backend, or the reason PostgreSQL is skipped."""
    admin_url = make_url(server_url)
    db_name = f"certpilot_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            version = conn.scalar(text("SHOW server_version"))
            sync = conn.scalar(text("SHOW synchronous_commit"))
            fsync = conn.scalar(text("SHOW fsync"))
            conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    except Exception as exc:
        admin.dispose()
        first_line = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} is not reachable ({first_line})"

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()

    url = admin_url.set(database=db_name).render_as_string(hide_password=False)
    try:
        app = _start_app(url, root / "pg-data", ca)
    except BaseException:
        drop()
        raise
    describe = (f"PostgreSQL {version} at {admin_url.host}:{admin_url.port}, database {db_name} "
                f"(fsync={fsync}, synchronous_commit={sync}), psycopg 3")

    def server_pids() -> list[int]:
        with admin.connect() as conn:
            return list(conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": db_name}))

    backend = Backend("postgresql", url, app, describe, server_pids)
    backend._cleanup.append(drop)
    return backend


# --- issuing ---------------------------------------------------------------------


def issue_one(app: App, name: str, host: str, key: KeySpec) -> None:
    """What is timed per certificate: request it, then one attempt, which must issue."""
    request_certificate(app, name, profile=PROFILE, subject=make_subject(host), key=key, actor=ACTOR)
    report = attempt(app, name, actor=ACTOR)
    if report.outcome is not Outcome.ISSUED or report.revision != 1:
        raise BenchError(f"certificate {name}: attempt ended {report.outcome.value}: {report.error}")


def names(tag: str, count: int) -> list[tuple[str, str]]:
    return [(f"{tag}-{i}", f"h{i}.{tag}.bench.test") for i in range(count)]


def count_revisions(app: App, prefix: str) -> int:
    from certpilot.store.tables import CertificateRow, RevisionRow

    with app.db.transaction() as session:
        return session.scalar(
            select(func.count(RevisionRow.id))
            .join(CertificateRow, CertificateRow.id == RevisionRow.certificate_id)
            .where(CertificateRow.name.like(f"{prefix}-%"))
        ) or 0


def warm_up(app: App, tag: str, key: KeySpec) -> None:
    """Start both script workers and fill SQLAlchemy's caches before anything is timed."""
    batch = 0
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while True:
            todo = names(f"{tag}-b{batch}", 2 * WORKERS)
            list(pool.map(lambda item: issue_one(app, item[0], item[1], key), todo))
            batch += 1
            if len(app.runner.worker_pids()) >= WORKERS or batch >= 10:
                break
    if len(app.runner.worker_pids()) < WORKERS:
        log(f"warning: only {len(app.runner.worker_pids())} script worker(s) started during warm-up")
