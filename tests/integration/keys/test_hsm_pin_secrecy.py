"""The PIN of an HSM group is a secret (DESIGN §1, §3 "secrets at rest"): sealed in the
database, shown as "***" by the API, never in a response, an error, an event or an
attempt. The token used here has a long random PIN (`softhsm.secret_pin`), so that
finding it anywhere means it leaked.

Checked after a group was added over the API, checked, used for an issuance, and a
second group with a wrong (also random) PIN failed an issuance: every text and bytes
column of every table; for SQLite also the raw database file, its -wal and -shm, and
every other file in the test's directory. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from certpilot.server import create_server
from certpilot.domain.model import Outcome, Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_attempts
from certpilot.services.issuance import attempt
from certpilot.services.users import add_user, create_token
from tests.integration.keys.hsm_support import (
    ACTOR,
    MODULE,
    SECRET_TOKEN,
    SoftHsm,
    add_local_ca_profile,
    request_hsm,
)

PASSWORD = "a-long-password-123"


def encodings(pin: str) -> list[bytes]:
    """The PIN as it could turn up: plain, base64 (padded or not), hex, UTF-16."""
    raw = pin.encode()
    b64 = base64.b64encode(raw)
    return [raw, b64, b64.rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"="), raw.hex().encode(),
            pin.encode("utf-16-le")]


def assert_nowhere(haystack: bytes | str, pins: list[str], where: str) -> None:
    data = haystack.encode("utf-8", errors="replace") if isinstance(haystack, str) else haystack
    for pin in pins:
        for needle in encodings(pin):
            assert needle not in data, f"the PIN {pin!r} is in {where} (as {needle!r})"


def database_dump(app: App) -> Iterator[tuple[str, bytes | str]]:
    """(table.column, value) for every non-null value of every table."""
    meta = MetaData()
    with app.db.engine.connect() as conn:
        meta.reflect(bind=conn)
        assert "hsm_groups" in meta.tables, sorted(meta.tables)
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in zip(table.columns, row):
                    if value is None:
                        continue
                    yield f"{table.name}.{column.name}", value if isinstance(value, (bytes, str)) else str(value)


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_server(app)) as test_client:
        yield test_client


@pytest.fixture
def admin_headers(app: App) -> dict[str, str]:
    add_user(app, "admin", Role.ADMIN, PASSWORD, actor=ACTOR)
    token, _ = create_token(app, "admin", actor=ACTOR)
    return {"Authorization": f"Bearer {token}"}


def test_pin_is_sealed_in_the_database_and_masked_in_every_answer(
    app: App, client: TestClient, admin_headers: dict[str, str], test_ca: LocalCA, softhsm: SoftHsm,
    tmp_path: Path,
) -> None:
    wrong_pin = f"Wrong-{secrets.token_hex(12)}"
    pins = [softhsm.secret_pin, wrong_pin]
    add_local_ca_profile(app, test_ca)
    answers: list[tuple[str, str]] = []

    def call(method: str, path: str, **kwargs: object) -> dict | list:
        response = client.request(method, path, headers=admin_headers, **kwargs)  # type: ignore[arg-type]
        answers.append((f"{method} {path} -> {response.status_code}", response.text))
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    created = call("POST", "/api/v1/hsm-groups", json={
        "name": "vault", "module_path": MODULE, "token_label": SECRET_TOKEN, "pin": softhsm.secret_pin})
    assert created["pin"] == "***"
    assert call("GET", "/api/v1/hsm-groups/vault")["pin"] == "***"  # type: ignore[index]
    assert [g["pin"] for g in call("GET", "/api/v1/hsm-groups")] == ["***"]  # type: ignore[index]
    assert call("POST", "/api/v1/hsm-groups/vault/check")["label"] == SECRET_TOKEN  # type: ignore[index]
    call("POST", "/api/v1/hsm-groups", json={
        "name": "wrong", "module_path": MODULE, "token_label": SECRET_TOKEN, "pin": wrong_pin})

    request_hsm(app, "good", "ec:p256", group="vault")
    assert attempt(app, "good", actor=ACTOR).outcome is Outcome.ISSUED
    from certpilot.keys import pkcs11_backend

    pkcs11_backend.close_sessions()  # log out, so that the wrong PIN is really tried
    request_hsm(app, "bad", "ec:p256", group="wrong")
    failed = attempt(app, "bad", actor=ACTOR)
    assert failed.outcome is Outcome.FAILED and "PIN" in (failed.error or ""), failed.error
    for name in ("good", "bad"):
        call("GET", f"/api/v1/certificates/{name}")
        call("GET", f"/api/v1/certificates/{name}/attempts")
        answers.append((f"last_error of {name}", get_certificate(app, name).status.last_error or ""))
        answers += [(f"attempt of {name}", f"{a.error} {a.output}") for a in list_attempts(app, name)]
    call("GET", "/api/v1/events")
    answers.append(("/openapi.json", client.get("/openapi.json").text))

    for where, text in answers:
        assert_nowhere(text, pins, where)

    sealed = dict(
        (name, value) for name, value in database_dump(app) if name == "hsm_groups.pin_sealed"
    )
    assert sealed, "no sealed PIN found in hsm_groups.pin_sealed"
    columns = 0
    for where, value in database_dump(app):
        assert_nowhere(value, pins, f"the database, column {where}")
        columns += 1
    assert columns > 50, f"only {columns} values dumped: the dump missed the data"

    if app.db.engine.dialect.name == "sqlite":
        database_file = Path(app.db.engine.url.database or "")
        assert database_file.exists()
        raw_files = [p for p in database_file.parent.glob(database_file.name + "*")]
        assert any(p.name.endswith("-wal") for p in raw_files), raw_files  # the database runs in WAL mode
        for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
            assert_nowhere(path.read_bytes(), pins, f"file {path}")
