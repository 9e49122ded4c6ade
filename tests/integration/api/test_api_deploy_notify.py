"""Deployment and notification settings through the REST API, on SQLite and PostgreSQL:
profile fields written as read (the webhook URL write-only, `***` keeps it), the same
validation as the CLI, `?wait=true` deploys, POST /certificates/{name}/deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from tests.support.api import RoleTokens, add_local_ca, assert_problem, certificate_body

HOOK_URL = "https://hooks.example.test/services/T000/B000/s3cr3t-w3bh00k"


@pytest.fixture
def admin(tokens: RoleTokens) -> dict[str, str]:
    return tokens.headers(Role.ADMIN)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    root = tmp_path / "live"
    root.mkdir()
    return root


def test_profile_deploy_and_notify_fields_round_trip(client: TestClient, admin: dict[str, str], test_ca: LocalCA,
                                                      live: Path) -> None:
    created = add_local_ca(client, admin, test_ca, deploy_root=str(live) + "/", deploy_command="/bin/true --x",
                           notify_url=HOOK_URL, notify_email="ops@example.test")
    assert (created["deploy_root"], created["deploy_command"], created["deploy_owner"]) == (
        str(live), "/bin/true --x", None)
    assert (created["notify_url"], created["notify_email"]) == ("***", "ops@example.test")
    r = client.get("/api/v1/profiles/corp", headers=admin)
    assert HOOK_URL not in r.text and "s3cr3t" not in r.text

    read = r.json()
    r = client.put("/api/v1/profiles/corp", headers=admin, json=read)  # written back as read
    assert r.status_code == 200 and r.json() == read, r.text
    r = client.put("/api/v1/profiles/corp", headers=admin, json={**read, "notify_url": None, "deploy_root": None,
                                                                 "deploy_command": None})
    assert (r.json()["notify_url"], r.json()["deploy_root"]) == (None, None)
    r = client.put("/api/v1/profiles/corp", headers=admin, json={**read, "notify_url": "***", "deploy_root": None,
                                                                 "deploy_command": None})
    assert_problem(r, 422, "no stored notify_url")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"deploy_root": "live"}, "not absolute"),
        ({"deploy_root": "/srv/../etc"}, "'..'"),
        ({"deploy_root": "/srv/live", "deploy_command": "/no/such/reload"}, "not an executable"),
        ({"deploy_command": "/bin/true"}, "needs a deploy root"),
        ({"notify_url": "file:///etc/passwd"}, "http"),
        ({"notify_email": "nobody"}, "notify_email"),
    ],
    ids=["relative", "dot-dot", "missing-executable", "command-without-root", "file-url", "bad-mail"],
)
def test_bad_settings_are_422_and_store_nothing(client: TestClient, admin: dict[str, str], test_ca: LocalCA,
                                                fields: dict[str, Any], says: str) -> None:
    add_local_ca(client, admin, test_ca)
    before = client.get("/api/v1/profiles/corp", headers=admin).json()
    r = client.put("/api/v1/profiles/corp", headers=admin, json={**before, **fields})
    assert_problem(r, 422, says)
    assert client.get("/api/v1/profiles/corp", headers=admin).json() == before


def test_wait_deploys_and_deploy_redeploys(client: TestClient, admin: dict[str, str], tokens: RoleTokens,
                                          test_ca: LocalCA, live: Path, tmp_path: Path, api_app: App) -> None:
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\necho "$CERTPILOT_REVISION" >> "$1"\n')
    hook.chmod(0o755)
    add_local_ca(client, admin, test_ca, deploy_root=str(live), deploy_command=f"{hook} {log}")
    operator = tokens.headers(Role.OPERATOR)
    r = client.post("/api/v1/certificates?wait=true", headers=operator, json=certificate_body("web1"))
    assert r.status_code == 201, r.text
    assert (r.json()["status"]["deployed_revision"], r.json()["status"]["deploy_error"]) == (1, None)
    assert log.read_text() == "1\n" and (live / "web1" / "key.pem").exists()

    assert client.post("/api/v1/certificates/web1/deploy", headers=tokens.headers(Role.VIEWER)).status_code == 403
    r = client.post("/api/v1/certificates/web1/deploy", headers=operator)
    assert r.status_code == 200 and r.json()["status"]["deployed_revision"] == 1, r.text
    assert log.read_text() == "1\n1\n"

    hook.write_text("#!/bin/sh\nexit 4\n")
    r = client.post("/api/v1/certificates/web1/deploy", headers=operator)
    assert_problem(r, 502, "deployment of revision 1 failed", "status 4")
    status = client.get("/api/v1/certificates/web1", headers=operator).json()["status"]
    assert (status["revision"], status["deployed_revision"]) == (1, None)
    listed = client.get("/api/v1/certificates/web1/deployments", headers=tokens.headers(Role.VIEWER)).json()
    assert [(d["revision"], d["outcome"]) for d in listed] == [(1, "failed"), (1, "deployed"), (1, "deployed")]
    assert listed[0]["error"] == "the deploy command exited with status 4"
    assert listed[0]["directory"] == str(live / "web1")
    kinds = [e["kind"] for e in client.get("/api/v1/events", headers=admin,
                                             params={"object": "web1"}).json()]
    assert kinds.count("CERT_DEPLOYED") == 2 and kinds.count("CERT_DEPLOY_FAILED") == 1
