"""A deferred certificate through the edges: `?wait=true` answers 202 with the certificate
awaiting the CA, `GET` and the web page show since when and the next poll, and the
profile API reads and writes `max_pending_days`. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certpilot.domain.model import ProfileParam, Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.users import add_user
from tests.integration.api.test_api_accounts import web_login
from tests.support.api import ACTOR, PASSWORD, RoleTokens, certificate_body
from tests.support.queued_ca import queued_ca_source, submissions
from tests.support.script_access import scripts_directory

OPERATOR, ADMIN = Role.OPERATOR, Role.ADMIN


@pytest.fixture
def queue() -> Iterator[Path]:
    with scripts_directory() as directory:
        yield directory


def test_a_deferred_request_is_accepted_and_shown_awaiting_the_ca(
    api_app: App, client: TestClient, tokens: RoleTokens, test_ca: LocalCA, queue: Path
) -> None:
    add_script(api_app, "queued-ca", queued_ca_source(), actor=ACTOR)
    create_profile(api_app, "approvals", script="queued-ca", actor=ACTOR, allow_write=[str(queue)], params=[
        ProfileParam("ca_cert", test_ca.cert_path.read_text()),
        ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", test_ca.password, sensitive=True),
        ProfileParam("queue_dir", str(queue)), ProfileParam("retry_after_s", "120"),
    ])

    r = client.post("/api/v1/certificates?wait=true", json=certificate_body("web1", "approvals"),
                    headers=tokens.headers(OPERATOR))

    assert r.status_code == 202, r.text
    status = r.json()["status"]
    assert status["phase"] == "deferred" and status["revision"] is None
    awaiting = status["awaiting_ca"]
    assert awaiting["since"] and awaiting["next_poll_at"] > awaiting["since"] and awaiting["polls"] == 0
    assert len(submissions(queue)) == 1
    assert client.get("/api/v1/certificates/web1", headers=tokens.headers(OPERATOR)).json()["status"][
        "awaiting_ca"] == awaiting
    events = client.get("/api/v1/events", headers=tokens.headers(ADMIN)).json()
    assert any(e["kind"] == "CERT_DEFERRED" and e["object"] == "web1"
               for e in (events["items"] if isinstance(events, dict) else events))

    add_user(api_app, "watcher", role=Role.VIEWER, password=PASSWORD, actor=ACTOR)
    page = web_login(api_app, "watcher", PASSWORD).get("/certificates/web1")
    assert page.status_code == 200
    assert "Awaiting the CA" in page.text and "next poll" in page.text


def test_the_profile_api_reads_and_writes_max_pending_days(
    client: TestClient, tokens: RoleTokens, api_app: App
) -> None:
    add_script(api_app, "noop", "def certificate_request(csr, common_name, args_dict):\n    return ''\n", actor=ACTOR)
    r = client.post("/api/v1/profiles", json={"name": "p1", "script": "noop", "max_pending_days": 3},
                    headers=tokens.headers(ADMIN))
    assert r.status_code == 201, r.text
    assert r.json()["max_pending_days"] == 3
    r = client.post("/api/v1/profiles", json={"name": "p2", "script": "noop"}, headers=tokens.headers(ADMIN))
    assert r.json()["max_pending_days"] == 30
    r = client.post("/api/v1/profiles", json={"name": "p3", "script": "noop", "max_pending_days": 0},
                    headers=tokens.headers(ADMIN))
    assert r.status_code == 422
