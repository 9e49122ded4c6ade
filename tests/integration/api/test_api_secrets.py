"""Sensitive values are write-only (DESIGN §5): after issuing with a sensitive
static and a sensitive dynamic parameter, through a script that prints them and
fails with them in its error, no GET of the API (every one the OpenAPI document
lists, with every real name), no event, no metric and no log line, in-process or
of a real `certpilot serve`, shows one in clear; writing back the `***` read keeps
the stored value.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from certpilot.config import Settings
from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from tests.support.api import (
    RoleTokens,
    add_local_ca,
    assert_problem,
    certificate_body,
    checking_local_ca_source,
    openapi_operations,
    sha256_hex,
)
from tests.support.processes import ServerProcess, descendants, is_alive

SENSITIVE = ("ca_key_password", "api_password", "api_token")

# The checking local-CA script, wrapped to show every sensitive value it is given on
# stdout and stderr, and, for a certificate whose `mode` is `fail`, in its error.
CHATTY = '''

import sys as _sys

_sign_if_intact = certificate_request


def certificate_request(csr, common_name, args_dict):
    for name in {sensitive!r}:
        print(f"stdout {{name}}={{args_dict[name]}}", flush=True)
        print(f"stderr {{name}}={{args_dict[name]}}", file=_sys.stderr, flush=True)
    if args_dict.get("mode") == "fail":
        raise RuntimeError(f"CA rejected {{args_dict['api_password']}} and {{args_dict['api_token']}}")
    return _sign_if_intact(csr, common_name, args_dict)
'''.format(sensitive=SENSITIVE)

Get = Callable[[str], httpx.Response]

# uvicorn finishes its graceful shutdown, then raises the SIGTERM it caught again:
# a clean stop ends with status 0 or "killed by SIGTERM", and nothing else.
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)


@pytest.fixture
def secret_values(client: TestClient, tokens: RoleTokens, test_ca: LocalCA, api_app: App,
            caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """Profile `corp` with sensitive params, `web1` issued twice, `broken` failed twice
    (once by the renewal loop), HSM group `hsm1` with its PIN. Returns the sensitive
    values by name."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="certpilot")
    values = {"ca_key_password": test_ca.password, "api_password": "pw-" + uuid.uuid4().hex,
              "api_token": "tok-" + uuid.uuid4().hex, "HSM PIN": "pin-" + uuid.uuid4().hex}
    admin = tokens.headers(Role.ADMIN)
    r = client.post("/api/v1/hsm-groups", headers=admin, json={
        "name": "hsm1", "module_path": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "certpilot",
        "pin": values["HSM PIN"]})
    assert r.status_code == 201, r.text
    add_local_ca(client, admin, test_ca, script="chatty", source=checking_local_ca_source() + CHATTY, extra_params=[
        {"name": "api_password", "value": values["api_password"], "sensitive": True},
        {"name": "api_password_sha256", "value": sha256_hex(values["api_password"])},
        {"name": "api_token", "sensitive": True, "dynamic": True},
        {"name": "api_token_sha256", "dynamic": True},
        {"name": "mode", "dynamic": True},
    ])
    for name, mode in (("web1", "ok"), ("broken", "fail")):
        body = certificate_body(name, dynamic={"api_token": values["api_token"],
                                               "api_token_sha256": sha256_hex(values["api_token"]), "mode": mode})
        r = client.post("/api/v1/certificates?wait=true", headers=admin, json=body)
        assert r.status_code == (201 if mode == "ok" else 502), r.text
    broken = client.get("/api/v1/certificates/broken", headers=admin).json()["status"]
    assert (broken["phase"], broken["last_error"]) == ("failed", "CA rejected *** and ***")
    r = client.post("/api/v1/certificates/web1/renew?wait=true", headers=admin)
    assert (r.status_code, r.json()["status"]["revision"]) == (200, 2), r.text
    # the renewal loop fails `broken` again, and logs it
    assert client.post("/api/v1/certificates/broken/renew", headers=admin).status_code == 202
    assert Reconciler(api_app).run_once() == 1
    assert client.get("/api/v1/certificates/broken", headers=admin).json()["status"]["failures"] == 2
    return values


def names_of(get: Get) -> dict[str, list[str]]:
    """Every object's name, by the collection it is listed in."""
    return {kind: [obj["name"] for obj in get(f"/api/v1/{kind}").json()]
            for kind in ("scripts", "profiles", "certificates", "hsm-groups")}


def every_get(get: Get, document: dict[str, Any]) -> dict[str, str]:
    """The body of every GET operation in `document`, once for each real name; path -> body."""
    names = names_of(get)
    bodies = {}
    for method, template in sorted(openapi_operations(document)):
        if method != "GET":
            continue
        params = re.findall(r"{(\w+)}", template)
        if not params:
            paths = [template]
        else:
            kind = template.split("/")[3]
            assert params == ["name"] and kind in names, f"add values for the parameters of GET {template}"
            paths = [template.replace("{name}", name) for name in names[kind]]
        for path in paths:
            r = get(path)
            never_issued = path == "/api/v1/certificates/broken/pem"
            assert r.status_code == (404 if never_issued else 200), f"GET {path}: {r.status_code} {r.text[:200]}"
            bodies[path] = r.text
    r = get("/api/v1/events?limit=1000")
    bodies["/api/v1/events?limit=1000"] = r.text
    assert len(r.json()) < 1000
    return bodies


def assert_nowhere(values: dict[str, str], places: dict[str, str]) -> None:
    found = [f"{name} in {where}" for where, text in places.items() for name, value in values.items()
             if value in text]
    assert not found, "sensitive values in clear: " + ", ".join(found)


@pytest.fixture
def document(client: TestClient, tokens: RoleTokens) -> dict[str, Any]:
    return client.get("/api/openapi.json", headers=tokens.headers(Role.VIEWER)).json()  # type: ignore[no-any-return]


def test_no_get_shows_a_secret(client: TestClient, tokens: RoleTokens, secret_values: dict[str, str],
                               document: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    admin = tokens.headers(Role.ADMIN)
    bodies = every_get(lambda path: client.get(path, headers=admin), document)
    # the walk looked where the secrets would be: in script output, errors, the profile, the spec
    attempts = bodies["/api/v1/certificates/web1/attempts"] + bodies["/api/v1/certificates/broken/attempts"]
    for name in SENSITIVE:
        assert f"stdout {name}=***" in attempts and f"stderr {name}=***" in attempts
    assert "CA rejected *** and ***" in bodies["/api/v1/certificates/broken/attempts"]
    assert '"api_token":"***"' in bodies["/api/v1/certificates/web1"]
    assert '"pin":"***"' in bodies["/api/v1/hsm-groups/hsm1"]
    assert bodies["/metrics"].count("certpilot_certificate_ready_status") > 2
    r = client.post("/api/v1/certificates/web1/export", headers=admin, json={"format": "pem"})
    assert r.status_code == 200 and "PRIVATE KEY" in r.text
    bodies["export"] = r.text
    assert "broken" in caplog.text, "the renewal loop's log was captured"
    assert_nowhere(secret_values, {**bodies, "the log": caplog.text})


def test_writing_back_stars_keeps_the_secrets(client: TestClient, tokens: RoleTokens, secret_values: dict[str, str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    admin = tokens.headers(Role.ADMIN)
    profile = client.get("/api/v1/profiles/corp", headers=admin).json()
    assert {p["name"]: p["value"] for p in profile["params"] if p["sensitive"]} == {
        "ca_key": "***", "ca_key_password": "***", "api_password": "***", "api_token": None}
    r = client.put("/api/v1/profiles/corp", headers=admin, json={**profile, "renew_before_days": 15})
    assert r.status_code == 200, r.text
    cert = client.get("/api/v1/certificates/web1", headers=admin).json()
    more_sans = [*cert["spec"]["subject_alt_names"], "DNS:www.web1.example.test"]
    r = client.put("/api/v1/certificates/web1", headers=admin,
                   json={**cert, "spec": {**cert["spec"], "subject_alt_names": more_sans}})
    assert r.status_code == 200 and r.json()["spec"]["dynamic_params"]["api_token"] == "***", r.text
    # the script signs only if the CA key password, api_password and api_token are what they were
    r = client.post("/api/v1/certificates/web1/renew?wait=true", headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["status"]["revision"], r.json()["status"]["last_error"]) == (3, None)
    assert_nowhere(secret_values, {"the answers": r.text, "the log": caplog.text})


# --- a real server -------------------------------------------------------------------


@pytest.fixture
def server(settings: Settings, tmp_path: Path, secret_values: dict[str, str]) -> Iterator[ServerProcess]:
    """`certpilot serve` on the test database (made and filled by `secret_values`)."""
    started = ServerProcess.start(settings, tmp_path)
    seen: set[int] = set()
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            seen = descendants(started.proc.pid)
        started.clean_up(seen)


def test_real_server(server: ServerProcess, tokens: RoleTokens, secret_values: dict[str, str],
                     document: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json()["status"] == "ready"
        r = http.get("/api/v1/certificates/web1")
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = http.get("/api/v1/certificates/web1", headers=tokens.headers(Role.VIEWER))
        assert r.status_code == 200, r.text
        assert r.json()["status"]["phase"] == "issued" and r.json()["spec"]["dynamic_params"]["api_token"] == "***"

        admin = tokens.headers(Role.ADMIN)
        bodies = every_get(lambda path: http.get(path, headers=admin), document)
        # the server's renewal loop renews `web1` and fails `broken` once more (`?wait=true`
        # is left out: test_wait_issues_once_while_the_loop_runs covers it with the loop running)
        for name in ("web1", "broken"):
            assert http.post(f"/api/v1/certificates/{name}/renew", headers=admin).status_code == 202

        def attempts(name: str) -> int:  # finished ones: a started attempt has stored nothing yet
            listed = http.get(f"/api/v1/certificates/{name}/attempts", headers=admin).json()
            return sum(1 for a in listed if a["outcome"] is not None)

        deadline = time.monotonic() + 30
        while attempts("web1") < 3 or attempts("broken") < 3:
            assert time.monotonic() < deadline, f"the server's renewal loop did not run:\n{server.stderr()[-3000:]}"
            time.sleep(0.2)
        assert http.get("/api/v1/certificates/web1", headers=admin).json()["status"]["revision"] == 3
        bodies["after the server's attempts"] = http.get("/api/v1/events?limit=1000", headers=admin).text

    children = descendants(server.proc.pid)
    assert children, "the server runs its script workers"
    assert server.terminate(timeout_s=30) in STOPPED_BY_SIGTERM, server.stderr()[-3000:]
    deadline = time.monotonic() + 10
    while any(is_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if is_alive(pid)], "processes left behind after SIGTERM"
    stderr = server.stderr()
    assert "renewal loop stopped" in stderr, stderr[-3000:]
    assert "GET /healthz" in server.stdout(), "uvicorn's access log was captured"
    assert "broken" in stderr and "web1" in stderr, "the renewal loop's attempts were logged"
    assert_nowhere(secret_values, {**bodies, "the server's stderr": stderr, "the server's stdout": server.stdout()})


def test_server_stops_on_sigterm_while_idle(server: ServerProcess) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        server.proc.wait(timeout=0.5)  # it keeps running until told
    assert server.terminate(timeout_s=30) in STOPPED_BY_SIGTERM, server.stderr()[-3000:]
    assert "Application shutdown complete" in server.stderr()
