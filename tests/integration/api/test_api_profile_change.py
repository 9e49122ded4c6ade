"""Changing a certificate's profile (issue 12): a sensitive dynamic value an admin set
for one profile's script is never handed to another profile's script unasked."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from tests.support.api import (
    RoleTokens,
    add_local_ca,
    add_profile,
    assert_problem,
    certificate_body,
    checking_local_ca_source,
    sha256_hex,
)

CERTS = "/api/v1/certificates"
SECRET = "admin-set-secret-for-corp"


def test_changing_the_profile_drops_or_reasks_sensitive_dynamic_values(
    client: TestClient, tokens: RoleTokens, test_ca: LocalCA
) -> None:
    admin, operator = tokens.headers(Role.ADMIN), tokens.headers(Role.OPERATOR)
    dynamic = [{"name": "api_token", "sensitive": True, "dynamic": True},
               {"name": "api_token_sha256", "dynamic": True}]
    add_local_ca(client, admin, test_ca, script="corp-ca", profile="corp", source=checking_local_ca_source(),
                 extra_params=dynamic)
    # another profile whose script checks what it receives: it would accept the corp secret
    add_local_ca(client, admin, test_ca, script="other-ca", profile="other", source=checking_local_ca_source(),
                 extra_params=dynamic)
    body = certificate_body("web1", "corp", dynamic={"api_token": SECRET, "api_token_sha256": sha256_hex(SECRET)})
    r = client.post(f"{CERTS}?wait=true", headers=admin, json=body)
    assert r.status_code == 201, r.text

    read: dict[str, Any] = client.get(f"{CERTS}/web1", headers=operator).json()
    assert read["spec"]["dynamic_params"]["api_token"] == "***"
    moved = {"name": "web1", "spec": {**read["spec"], "profile": "other"}}
    r = client.put(f"{CERTS}/web1", headers=operator, json=moved)
    assert_problem(r, 422, "api_token", "other")
    assert client.get(f"{CERTS}/web1", headers=operator).json()["spec"]["profile"] == "corp", "it moved anyway"

    # the same profile keeps the masked value (nothing to re-ask)
    assert client.put(f"{CERTS}/web1", headers=operator, json={"name": "web1", "spec": read["spec"]}).status_code == 200

    # with the value sent again, the move goes through and the new script gets that value
    fresh = "operator-set-value-for-other"
    moved["spec"]["dynamic_params"] = {"api_token": fresh, "api_token_sha256": sha256_hex(fresh)}
    r = client.put(f"{CERTS}/web1", headers=operator, json=moved)
    assert r.status_code == 200 and r.json()["spec"]["profile"] == "other", r.text
    r = client.post(f"{CERTS}/web1/renew?wait=true", headers=operator)
    assert r.status_code == 200, r.text
