"""Fixtures for the store modules' own tests: one migrated database per backend for the
whole run (SQLite file, PostgreSQL schema: migrating is the slow part), emptied before
each test; `Seed`, which writes the rows a test needs through the store's own functions
or, for what the attempt protocol writes (keys, revisions, attempts), as plain rows; and
`overlapping`, two transactions on two connections, the second inside the first.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, delete, text
from sqlalchemy.orm import Session

from certpilot.domain.model import (
    CertificateSpec,
    DeploySettings,
    KeySpec,
    NotifySettings,
    ProfileParam,
    RenewalSettings,
    SandboxSettings,
    make_subject,
)
from certpilot.keys.sealing import Sealer
from certpilot.store import certificates, profiles, scripts
from certpilot.store.session import Database
from certpilot.store.tables import AttemptRow, Base, CertificateRow, KeyRow, RevisionRow
from tests.conftest import _postgres_schema_url, missing

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the store tests of this run."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'certpilot.db'}"
        database = Database(url)
        database.upgrade()
        database.dispose()
        yield url
        return
    base = request.getfixturevalue("postgres_database")
    if base is None:
        missing("no PostgreSQL server available")
    url, schema = _postgres_schema_url(base)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(url)
    database.upgrade()
    database.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def _shared_db(store_url: str) -> Iterator[Database]:
    database = Database(store_url)
    yield database
    database.dispose()


@pytest.fixture
def db(_shared_db: Database) -> Database:
    """The shared database, empty at the start of each test."""
    with _shared_db.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
    return _shared_db


@pytest.fixture(scope="session")
def sealer() -> Sealer:
    return Sealer(os.urandom(32))


class Seed:
    """Rows for a test, written in the caller's session."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def script(self, session: Session, name: str = "s", *, timeout_s: int = 60) -> None:
        scripts.add_script(session, name, "def certificate_request(csr, common_name, args_dict):\n    pass\n",
                           timeout_s, T0)

    def profile(self, session: Session, name: str = "p", *, script: str = "s",
                params: tuple[ProfileParam, ...] = (), renewal: RenewalSettings = RenewalSettings(),
                deploy: DeploySettings = DeploySettings(), notify: NotifySettings = NotifySettings()) -> int:
        if script not in {s.name for s in scripts.list_scripts(session)}:
            self.script(session, script)
        profiles.add_profile(session, self.sealer, name=name, script=script, params=params, renewal=renewal,
                             default_key=KeySpec.parse("ec:p256"), sandbox=SandboxSettings(), now=T0,
                             deploy=deploy, notify=notify)
        return profiles.profile_id(session, name)

    def certificate(self, session: Session, name: str, *, profile: str = "p", hsm_group: str | None = None,
                    now: dt.datetime = T0) -> int:
        if profile not in {p.name for p in profiles.list_profiles(session)}:
            self.profile(session, profile)
        spec = CertificateSpec(profile=profile, subject=make_subject(f"{name}.example.test"),
                               subject_alt_names=(), key=KeySpec.parse("ec:p256"), hsm_group=hsm_group)
        certificates.add_certificate(session, self.sealer, name=name, spec=spec, sensitive_params=frozenset(),
                                     now=now)
        return certificates._id(session, name)

    def key(self, session: Session, certificate: str, *, backend: str = "software",
            hsm_group_id: str | None = None, created_at: dt.datetime = T0) -> str:
        key_id = uuid.uuid4().hex
        session.add(KeyRow(id=key_id, certificate_id=certificates._id(session, certificate), backend=backend,
                           key_spec="ec:p256", private_key_sealed=b"v1sealed" if backend == "software" else None,
                           hsm_group_id=hsm_group_id, pkcs11_label=f"certpilot-{key_id[:8]}" if hsm_group_id else None,
                           pkcs11_id=key_id[:16] if hsm_group_id else None, public_key_sha256="ab" * 32,
                           csr_pem="CSR", created_at=created_at))
        session.flush()
        return key_id

    def revision(self, session: Session, certificate: str, number: int, *, key_id: str | None = None,
                 not_before: dt.datetime = T0, days: int = 90, issued_at: dt.datetime | None = None,
                 serve: bool = True) -> str:
        """A revision of `certificate` (served when `serve`); returns its key's id."""
        key_id = key_id or self.key(session, certificate, created_at=issued_at or not_before)
        cert_id = certificates._id(session, certificate)
        row = RevisionRow(certificate_id=cert_id, number=number, key_id=key_id, leaf_pem=f"LEAF{number}",
                          chain_pem=f"CHAIN{number}", csr_pem="CSR", serial=f"{number:04x}", not_before=not_before,
                          not_after=not_before + dt.timedelta(days=days), fingerprint_sha256="cd" * 32,
                          public_key_sha256="ab" * 32, issued_at=issued_at or not_before)
        session.add(row)
        session.flush()
        if serve:
            status = session.get(CertificateRow, cert_id).status  # type: ignore[union-attr]
            status.current_revision_id, status.phase = row.id, "issued"
            session.flush()
        return key_id

    def attempt(self, session: Session, certificate: str, *, started_at: dt.datetime = T0,
                outcome: str | None = None, error: str | None = None) -> int:
        row = AttemptRow(certificate_id=certificates._id(session, certificate), kind="issue", worker="w",
                         started_at=started_at, finished_at=started_at if outcome else None, outcome=outcome,
                         error=error)
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def seed(sealer: Sealer) -> Seed:
    return Seed(sealer)


def overlapping(db: Database, first: Callable[[Session], object],
                second: Callable[[Session], object]) -> tuple[object, object]:
    """Run `first` and `second` each in a transaction of its own (two connections, two
    threads), `second` while `first` has done its work but not committed. Returns what
    each returned, or the exception it raised."""
    first_done = threading.Event()

    def run(work: Callable[[Session], object], wait_for: threading.Event | None) -> object:
        if wait_for is not None and not wait_for.wait(10):
            raise TimeoutError("the first transaction never got going")
        try:
            with db.transaction() as session:
                result = work(session)
                session.flush()
                if wait_for is None:
                    first_done.set()
                    time.sleep(0.3)  # the other transaction runs into this one's uncommitted work
                return result
        except Exception as exc:
            return exc
        finally:
            first_done.set()

    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(run, first, None), pool.submit(run, second, first_done)
        return one.result(timeout=60), two.result(timeout=60)
