"""Authentication and authorisation of the REST API (DESIGN §5).

Every operation comes from the app's own OpenAPI document, so a route added
later is checked as soon as it exists: it must be in MINIMUM_ROLE below (or the
table test fails), it answers 401 to a missing, unknown, revoked or expired
token, 403 to a role below its minimum, and lets its minimum role through.
Runs on SQLite and PostgreSQL (token expiry and revocation are database times).
"""

from __future__ import annotations

import base64
import hashlib
import datetime as dt
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.setup import bundled_local_ca_source
from certpilot.services.users import add_user, create_token
from tests.support.api import (
    ACTOR,
    PASSWORD,
    MovableClock,
    RoleTokens,
    add_local_ca,
    add_profile,
    assert_problem,
    bearer,
    certificate_body,
    fill_path,
    openapi_operations,
)

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN

# The contract, route by route: the least role that may call it.
MINIMUM_ROLE: dict[tuple[str, str], Role] = {
    ("GET", "/metrics"): VIEWER,
    ("GET", "/api/v1/scripts"): VIEWER,
    ("POST", "/api/v1/scripts"): ADMIN,
    ("GET", "/api/v1/scripts/{name}"): VIEWER,
    ("PUT", "/api/v1/scripts/{name}"): ADMIN,
    ("DELETE", "/api/v1/scripts/{name}"): ADMIN,
    ("GET", "/api/v1/profiles"): VIEWER,
    ("POST", "/api/v1/profiles"): ADMIN,
    ("GET", "/api/v1/profiles/{name}"): VIEWER,
    ("PUT", "/api/v1/profiles/{name}"): ADMIN,
    ("DELETE", "/api/v1/profiles/{name}"): ADMIN,
    ("GET", "/api/v1/profiles/{name}/state"): ADMIN,  # key names only, but they describe the CA account
    ("GET", "/api/v1/certificates"): VIEWER,
    ("POST", "/api/v1/certificates"): OPERATOR,
    ("GET", "/api/v1/certificates/{name}"): VIEWER,
    ("PUT", "/api/v1/certificates/{name}"): OPERATOR,
    ("DELETE", "/api/v1/certificates/{name}"): OPERATOR,
    ("POST", "/api/v1/certificates/{name}/renew"): OPERATOR,
    ("POST", "/api/v1/certificates/{name}/deploy"): OPERATOR,
    ("GET", "/api/v1/certificates/{name}/deployments"): VIEWER,
    ("GET", "/api/v1/certificates/{name}/pem"): VIEWER,
    ("GET", "/api/v1/certificates/{name}/revisions"): VIEWER,
    ("GET", "/api/v1/certificates/{name}/attempts"): VIEWER,
    ("POST", "/api/v1/certificates/{name}/export"): ADMIN,
    ("GET", "/api/v1/events"): VIEWER,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("DELETE", "/api/v1/users/{name}"): ADMIN,
    ("POST", "/api/v1/users/{name}/disable"): ADMIN,
    ("POST", "/api/v1/users/{name}/enable"): ADMIN,
    ("PUT", "/api/v1/users/{name}/password"): ADMIN,
    ("POST", "/api/v1/logout-everywhere"): VIEWER,
    ("GET", "/api/v1/tokens"): VIEWER,
    ("POST", "/api/v1/tokens"): VIEWER,
    ("DELETE", "/api/v1/tokens/{token_id}"): VIEWER,
    ("GET", "/api/v1/hsm-groups"): VIEWER,
    ("POST", "/api/v1/hsm-groups"): ADMIN,
    ("GET", "/api/v1/hsm-groups/{name}"): VIEWER,
    ("DELETE", "/api/v1/hsm-groups/{name}"): ADMIN,
    ("POST", "/api/v1/hsm-groups/{name}/check"): ADMIN,
}
ROLES_BELOW = {VIEWER: (), OPERATOR: (VIEWER,), ADMIN: (VIEWER, OPERATOR)}

MINIMAL_SCRIPT = "def certificate_request(csr, common_name, args_dict):\n    raise ValueError('no CA')\n"

# Path values for requests that must be turned away before anything is looked up.
ANY_PATH_VALUES = {"name": "web1", "token_id": "1"}


def hsm_group_body(name: str) -> dict[str, str]:
    return {"name": name, "module_path": "/usr/lib/softhsm/libsofthsm2.so", "token_label": f"{name}-token",
            "pin": "1234"}


def request(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None,
            json: Any = None) -> httpx.Response:
    return client.request(method, path, headers=headers or {}, json=json)


def some_body(method: str) -> Any:
    """A well-formed body, so that only the credentials can be what is wrong."""
    if method not in ("POST", "PUT"):
        return None
    return {"name": "x", "source": "", "script": "s", "spec": certificate_body("x")["spec"],
            "username": "someone", "role": "viewer", "password": PASSWORD,
            "module_path": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t", "pin": "1234"}


@pytest.fixture
def document(client: TestClient, tokens: RoleTokens) -> dict[str, Any]:
    r = client.get("/api/openapi.json", headers=tokens.headers(VIEWER))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_every_operation_has_a_minimum_role(document: dict[str, Any]) -> None:
    listed = openapi_operations(document)
    assert listed - MINIMUM_ROLE.keys() == set(), "operations missing from MINIMUM_ROLE: add them"
    assert MINIMUM_ROLE.keys() - listed == set(), "MINIMUM_ROLE names operations the API no longer has"


def test_probes_answer_without_authentication(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert (r.status_code, r.json()["status"]) == (200, "ready")
    sandbox = r.json()["script_sandbox"]
    assert "issuer scripts run as" in sandbox["description"]
    assert sandbox["limitations"] == []  # this machine (root, Landlock ABI >= 6) has every layer


def test_every_operation_needs_a_token(client: TestClient, document: dict[str, Any]) -> None:
    for method, template in sorted(openapi_operations(document)):
        r = request(client, method, fill_path(template, ANY_PATH_VALUES), json=some_body(method))
        assert_problem(r, 401)
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), f"{method} {template}: {r.headers}"


def test_unknown_revoked_and_expired_tokens_are_refused(
    api_app: App, client: TestClient, tokens: RoleTokens, clock: MovableClock, document: dict[str, Any]
) -> None:
    # a token made over the API, then revoked by an administrator
    r = client.post("/api/v1/tokens", headers=tokens.headers(VIEWER), json={"name": "to-revoke"})
    assert r.status_code == 201, r.text
    revoked, revoked_id = r.json()["token"], r.json()["id"]
    assert client.get("/api/v1/scripts", headers=bearer(revoked)).status_code == 200
    assert client.delete(f"/api/v1/tokens/{revoked_id}", headers=tokens.headers(ADMIN)).status_code == 204

    # a token valid for one day, then a day and a second later
    expiring, _ = create_token(api_app, "viewer", name="short", expires_in_days=1, actor=ACTOR)
    assert client.get("/api/v1/scripts", headers=bearer(expiring)).status_code == 200
    clock.advance(dt.timedelta(days=1, seconds=1))

    refused = {
        "unknown": "cpt_" + uuid.uuid4().hex,
        "malformed": "not a token at all",
        "revoked": revoked,
        "expired": expiring,
        "admin token with a changed letter": tokens[ADMIN][:-1] + ("A" if tokens[ADMIN][-1] != "A" else "B"),
    }
    for what, token in refused.items():
        for method, template in sorted(openapi_operations(document)):
            r = request(client, method, fill_path(template, ANY_PATH_VALUES), bearer(token),
                        some_body(method))
            assert r.status_code == 401, f"{what} token, {method} {template}: {r.status_code} {r.text}"
            assert_problem(r, 401)
            assert r.headers.get("www-authenticate", "").startswith("Bearer")
    # the tokens that never expire still work a day later
    assert client.get("/api/v1/scripts", headers=tokens.headers(VIEWER)).status_code == 200


# --- the role matrix -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    path: str
    body: Callable[[], Any] = lambda: None
    # False where this suite has no working backend to succeed with: any answer past
    # authorisation (not 401 or 403) will do
    succeeds: bool = True


@pytest.fixture
def calls(client: TestClient, tokens: RoleTokens, test_ca: LocalCA, api_app: App,
          tmp_path: Path) -> dict[tuple[str, str], Call]:
    """For each operation, a call on real objects that its minimum role may make.

    Deletions take spare objects, so the other calls keep theirs whatever the order."""
    admin = tokens.headers(ADMIN)
    (tmp_path / "live").mkdir()
    add_local_ca(client, admin, test_ca, deploy_root=str(tmp_path / "live"))
    r = client.post("/api/v1/scripts", headers=admin,
                    json={"name": "spare-script", "source": bundled_local_ca_source()})
    assert r.status_code == 201, r.text
    add_profile(client, admin, test_ca, script="local-ca", profile="spare-profile")
    r = client.post("/api/v1/certificates?wait=true", headers=admin, json=certificate_body("web1"))
    assert (r.status_code, r.json()["status"]["phase"]) == (201, "issued"), r.text
    r = client.post("/api/v1/certificates", headers=admin, json=certificate_body("spare-cert"))
    assert r.status_code == 202, r.text
    _, spare_token = create_token(api_app, "viewer", name="spare", actor=ACTOR)
    for spare_user in ("spare-user", "other-user"):
        add_user(api_app, spare_user, VIEWER, PASSWORD, actor=ACTOR)
    for group in ("hsm1", "spare-hsm"):
        r = client.post("/api/v1/hsm-groups", headers=admin, json=hsm_group_body(group))
        assert r.status_code == 201, r.text

    def read(path: str) -> Callable[[], Any]:
        return lambda: client.get(path, headers=admin).json()  # written back as read

    cert = "/api/v1/certificates/web1"
    return {
        ("GET", "/metrics"): Call("/metrics"),
        ("GET", "/api/v1/scripts"): Call("/api/v1/scripts"),
        ("POST", "/api/v1/scripts"): Call("/api/v1/scripts", lambda: {"name": "new-script", "source": MINIMAL_SCRIPT}),
        ("GET", "/api/v1/scripts/{name}"): Call("/api/v1/scripts/local-ca"),
        ("PUT", "/api/v1/scripts/{name}"): Call("/api/v1/scripts/local-ca", read("/api/v1/scripts/local-ca")),
        ("DELETE", "/api/v1/scripts/{name}"): Call("/api/v1/scripts/spare-script"),
        ("GET", "/api/v1/profiles"): Call("/api/v1/profiles"),
        ("POST", "/api/v1/profiles"): Call("/api/v1/profiles", lambda: {"name": "new-profile", "script": "local-ca"}),
        ("GET", "/api/v1/profiles/{name}"): Call("/api/v1/profiles/corp"),
        ("PUT", "/api/v1/profiles/{name}"): Call("/api/v1/profiles/corp", read("/api/v1/profiles/corp")),
        ("DELETE", "/api/v1/profiles/{name}"): Call("/api/v1/profiles/spare-profile"),
        ("GET", "/api/v1/profiles/{name}/state"): Call("/api/v1/profiles/corp/state"),
        ("GET", "/api/v1/certificates"): Call("/api/v1/certificates"),
        ("POST", "/api/v1/certificates"): Call("/api/v1/certificates", lambda: certificate_body("new-cert")),
        ("GET", "/api/v1/certificates/{name}"): Call(cert),
        ("PUT", "/api/v1/certificates/{name}"): Call(cert, read(cert)),
        ("DELETE", "/api/v1/certificates/{name}"): Call("/api/v1/certificates/spare-cert"),
        ("POST", "/api/v1/certificates/{name}/renew"): Call(f"{cert}/renew"),
        ("POST", "/api/v1/certificates/{name}/deploy"): Call(f"{cert}/deploy"),
        ("GET", "/api/v1/certificates/{name}/deployments"): Call(f"{cert}/deployments"),
        ("GET", "/api/v1/certificates/{name}/pem"): Call(f"{cert}/pem"),
        ("GET", "/api/v1/certificates/{name}/revisions"): Call(f"{cert}/revisions"),
        ("GET", "/api/v1/certificates/{name}/attempts"): Call(f"{cert}/attempts"),
        ("POST", "/api/v1/certificates/{name}/export"): Call(f"{cert}/export", lambda: {"format": "pem"}),
        ("GET", "/api/v1/events"): Call("/api/v1/events"),
        ("GET", "/api/v1/users"): Call("/api/v1/users"),
        ("POST", "/api/v1/users"): Call("/api/v1/users", lambda: {"username": "new-user", "role": "viewer",
                                                                  "password": PASSWORD}),
        ("DELETE", "/api/v1/users/{name}"): Call("/api/v1/users/spare-user"),
        ("POST", "/api/v1/users/{name}/disable"): Call("/api/v1/users/other-user/disable"),
        ("POST", "/api/v1/users/{name}/enable"): Call("/api/v1/users/other-user/enable"),
        ("PUT", "/api/v1/users/{name}/password"): Call("/api/v1/users/other-user/password",
                                                       lambda: {"password": PASSWORD + "-new"}),
        ("POST", "/api/v1/logout-everywhere"): Call("/api/v1/logout-everywhere"),
        ("GET", "/api/v1/tokens"): Call("/api/v1/tokens"),
        ("POST", "/api/v1/tokens"): Call("/api/v1/tokens", lambda: {"name": "new-token"}),
        ("DELETE", "/api/v1/tokens/{token_id}"): Call(f"/api/v1/tokens/{spare_token.id}"),
        ("GET", "/api/v1/hsm-groups"): Call("/api/v1/hsm-groups"),
        ("POST", "/api/v1/hsm-groups"): Call("/api/v1/hsm-groups", lambda: hsm_group_body("new-hsm")),
        ("GET", "/api/v1/hsm-groups/{name}"): Call("/api/v1/hsm-groups/hsm1"),
        ("DELETE", "/api/v1/hsm-groups/{name}"): Call("/api/v1/hsm-groups/spare-hsm"),
        # no token is set up in SoftHSM here: the check reaches the backend, which says so
        ("POST", "/api/v1/hsm-groups/{name}/check"): Call("/api/v1/hsm-groups/hsm1/check", succeeds=False),
    }


def test_role_matrix(client: TestClient, tokens: RoleTokens, document: dict[str, Any],
                     calls: dict[tuple[str, str], Call]) -> None:
    wrong: list[str] = []
    # logging out everywhere revokes the caller's token: it goes last
    everywhere = ("POST", "/api/v1/logout-everywhere")
    for method, template in sorted(openapi_operations(document), key=lambda op: (op == everywhere, op)):
        least = MINIMUM_ROLE[(method, template)]
        call = calls[(method, template)]
        for below in ROLES_BELOW[least]:
            r = request(client, method, call.path, tokens.headers(below), call.body())
            if r.status_code != 403 or not r.headers["content-type"].startswith("application/problem+json"):
                wrong.append(f"{method} {call.path} as {below.value}: {r.status_code} (want 403) {r.text[:200]}")
            elif least.value not in r.json()["detail"]:
                wrong.append(f"{method} {call.path} as {below.value}: 403 does not name the {least.value} role")
        r = request(client, method, call.path, tokens.headers(least), call.body())
        if r.status_code in (401, 403) or (call.succeeds and r.status_code >= 400):
            # on real objects, with a valid body: neither 401/403 nor any other refusal
            wrong.append(f"{method} {call.path} as {least.value}: {r.status_code} (want success) {r.text[:200]}")
    assert not wrong, "role matrix broken:\n" + "\n".join(wrong)


def test_tokens_of_others_are_out_of_reach_below_admin(client: TestClient, tokens: RoleTokens,
                                                       api_app: App) -> None:
    _, admins = create_token(api_app, "admin", name="admins-own", actor=ACTOR)
    listed = client.get("/api/v1/tokens", headers=tokens.headers(OPERATOR)).json()
    assert listed and {t["username"] for t in listed} == {"operator"}
    assert all("token" not in t for t in listed), "a token list must not show the tokens themselves"
    assert_problem(client.delete(f"/api/v1/tokens/{admins.id}", headers=tokens.headers(OPERATOR)), 404)
    everyone = client.get("/api/v1/tokens", headers=tokens.headers(ADMIN)).json()
    assert {t["username"] for t in everyone} == {"viewer", "operator", "admin"}


# --- tokens by password ----------------------------------------------------------------


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def test_token_by_password(client: TestClient, tokens: RoleTokens) -> None:
    r = client.post("/api/v1/tokens", headers=basic("operator", PASSWORD), json={"name": "ci", "expires_in_days": 7})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["username"] == "operator" and made["name"] == "ci" and made["expires_at"]
    assert made["token"].startswith(made["prefix"])
    assert client.get("/api/v1/certificates", headers=bearer(made["token"])).status_code == 200
    # the token carries the user's role, no more
    r = client.post("/api/v1/scripts", headers=bearer(made["token"]), json={"name": "s", "source": MINIMAL_SCRIPT})
    assert_problem(r, 403, "admin")


def test_wrong_password_is_refused_and_recorded(client: TestClient, tokens: RoleTokens) -> None:
    wrong_password = "wrong-password-" + uuid.uuid4().hex
    unknown_user = "nobody-" + uuid.uuid4().hex[:8]
    wrong = client.post("/api/v1/tokens", headers=basic("viewer", wrong_password), json={})
    unknown = client.post("/api/v1/tokens", headers=basic(unknown_user, wrong_password), json={})
    body = assert_problem(wrong, 401)
    assert wrong.headers.get("www-authenticate")
    # an unknown user gets the very same answer: no user enumeration
    assert assert_problem(unknown, 401)["detail"] == body["detail"]

    r = client.get("/api/v1/events", params={"kind": "LOGIN_FAILED"}, headers=tokens.headers(ADMIN))
    assert r.status_code == 200, r.text
    failed = {e["object"]: e for e in r.json()}
    # what was typed as an unknown name may be a password typed into the wrong box: only its hash is shown
    hashed = f"unknown user (sha256:{hashlib.sha256(unknown_user.encode()).hexdigest()[:12]})"
    assert set(failed) == {"viewer", hashed}
    assert failed["viewer"]["actor"].startswith("anonymous")
    assert wrong_password not in r.text, "a failed login must not record the password tried"
    for role in (VIEWER, ADMIN):  # viewers read events too
        r = client.get("/api/v1/events", headers=tokens.headers(role))
        assert unknown_user not in r.text, f"the typed name reached a {role.value}"


def test_password_typed_as_username_stays_out_of_events(client: TestClient, tokens: RoleTokens) -> None:
    typed = "Secret-Typed-In-The-Wrong-Box-" + uuid.uuid4().hex[:6]
    assert_problem(client.post("/api/v1/tokens", headers=basic(typed, "x" * 12), json={}), 401)
    for role in (VIEWER, OPERATOR, ADMIN):
        r = client.get("/api/v1/events", params={"kind": "LOGIN_FAILED"}, headers=tokens.headers(role))
        assert r.status_code == 200 and r.json(), r.text
        assert typed not in r.text and typed.lower() not in r.text.lower()


def test_repeated_failures_are_answered_429_with_retry_after(client: TestClient, api_app: App) -> None:
    # users of their own: the throttle is per user name and origin, held by the App (one per server process)
    name, fresh = ("throttled-" + uuid.uuid4().hex[:8] for _ in range(2))
    for user in (name, fresh):
        add_user(api_app, user, Role.VIEWER, PASSWORD, actor=ACTOR)

    for _ in range(3):  # two failures are free (a typo), the third starts the throttle
        assert_problem(client.post("/api/v1/tokens", headers=basic(name, "not-the-password-123"), json={}), 401)
    # at once again: refused without a password check, told when to come back (no worker sleeps on it)
    again = client.post("/api/v1/tokens", headers=basic(name, PASSWORD), json={})
    assert_problem(again, 429, "too many")
    assert int(again.headers["retry-after"]) >= 1
    # another name from the same place is not slowed down by it
    assert client.post("/api/v1/tokens", headers=basic(fresh, PASSWORD), json={}).status_code == 201
