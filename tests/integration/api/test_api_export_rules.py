"""POST /certificates/{name}/export with PKCS#12 and the key (issue 12/13): a password,
or an explicit `no_password`, never an unprotected key by default."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.serialization import pkcs12
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from tests.support.api import RoleTokens, add_local_ca, assert_problem, certificate_body

EXPORT = "/api/v1/certificates/web1/export"


def test_pkcs12_with_the_key_needs_a_password_or_an_explicit_no(
    client: TestClient, tokens: RoleTokens, test_ca: LocalCA
) -> None:
    admin = tokens.headers(Role.ADMIN)
    add_local_ca(client, admin, test_ca)
    r = client.post("/api/v1/certificates?wait=true", headers=admin, json=certificate_body("web1"))
    assert r.status_code == 201, r.text

    assert_problem(client.post(EXPORT, headers=admin, json={"format": "pkcs12"}), 422, "password")
    assert_problem(client.post(EXPORT, headers=admin, json={"format": "pkcs12", "password": ""}), 422, "password")
    events = client.get("/api/v1/events", params={"kind": "KEY_EXPORTED"}, headers=admin).json()
    assert events == [], "a refused export was recorded as a key export"

    r = client.post(EXPORT, headers=admin, json={"format": "pkcs12", "no_password": True})
    assert r.status_code == 200, r.text
    key, _, _ = pkcs12.load_key_and_certificates(base64.b64decode(r.json()["pkcs12_base64"]), None)
    assert key is not None
    r = client.post(EXPORT, headers=admin, json={"format": "pkcs12", "include_key": False})
    assert r.status_code == 200, r.text
