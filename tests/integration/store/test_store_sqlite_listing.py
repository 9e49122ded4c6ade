"""The quick certificate list (`store.sqlite_listing`, `services.certificate_lines`) on a
real SQLite database made by the services: the same lines as the ordinary listing for a
pending, a failed and an issued certificate, and None (take the ordinary path) for a
missing file or a database whose schema it does not know."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from certpilot.domain.model import ProfileParam, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificate_lines import certificate_lines
from certpilot.services.certificates import list_certificates, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.sqlite_listing import read_lines

ACTOR = "test:listing"
REFUSE = "import sys\n\ndef certificate_request(csr, common_name, args_dict):\n    sys.exit('no')\n"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (this module's override of the root fixture): the quick listing reads
    SQLite files; on PostgreSQL `cert list` takes the ordinary path."""
    return f"sqlite:///{tmp_path / 'certpilot.db'}"


@pytest.fixture
def sqlite_app(app: App) -> App:
    assert app.settings.sqlite_path is not None
    return app


def test_lines_match_the_ordinary_listing(sqlite_app: App, test_ca: LocalCA) -> None:
    app = sqlite_app
    add_script(app, "local-ca", bundled_local_ca_source(), timeout_s=30, actor=ACTOR)
    create_profile(app, "corp", script="local-ca", actor=ACTOR, params=[
        ProfileParam("ca_cert", test_ca.cert_path.read_text()),
        ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", test_ca.password, sensitive=True),
        ProfileParam("validity_days", "20"),
    ])
    add_script(app, "refuse", REFUSE, timeout_s=30, actor=ACTOR)
    create_profile(app, "refuse", script="refuse", params=[], actor=ACTOR)
    for name, profile in (("a-issued", "corp"), ("b-failed", "refuse"), ("c-pending", "corp")):
        request_certificate(app, name, profile=profile, subject=make_subject(f"{name}.example.test"), actor=ACTOR)
    issuance.attempt(app, "a-issued", actor=ACTOR)
    issuance.attempt(app, "b-failed", actor=ACTOR)

    database = app.settings.sqlite_path
    assert database is not None
    for now_offset_days, within in ((0, None), (0, 30), (0, 5), (15, 10), (25, 0)):
        now = app.clock.now() + dt.timedelta(days=now_offset_days)
        quick = certificate_lines(database, now, expiring_within_days=within)
        with app.db.read() as session:
            from certpilot.store import certificates as repo

            ordinary = repo.list_certificates(session, now, expiring_within_days=within)
        assert quick is not None
        assert [(c.name, c.profile, c.phase, c.expiry_status, c.not_after, c.revision, c.failures) for c in quick] == [
            (c.name, c.spec.profile, c.status.phase.value,
             c.status.expiry_status.value if c.status.expiry_status else None,
             c.status.not_after, c.status.revision, c.status.failures) for c in ordinary
        ], (now_offset_days, within)
    statuses = {c.name: c.expiry_status for c in certificate_lines(database, app.clock.now() + dt.timedelta(days=15))}
    assert statuses == {"a-issued": "warning", "b-failed": None, "c-pending": None}
    assert [c.name for c in list_certificates(app)] == ["a-issued", "b-failed", "c-pending"]


def test_no_answer_for_a_missing_file_or_an_unknown_schema(tmp_path: Path) -> None:
    assert read_lines(tmp_path / "missing.db") is None
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE certificates (id INTEGER PRIMARY KEY, name TEXT)")
    assert read_lines(other) is None
    assert certificate_lines(other, dt.datetime.now(dt.timezone.utc)) is None
    assert certificate_lines(other, dt.datetime.now(dt.timezone.utc), expiring_within_days=-1) is None
