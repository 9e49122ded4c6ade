"""Subject fields that would read otherwise than they are (issue 12): Unicode
bidirectional controls such as the right-to-left override are refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from tests.support.api import RoleTokens, add_local_ca, assert_problem

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BIDI = {"RLO": "\u202e", "LRO": "\u202d", "RLE": "\u202b", "RLI": "\u2067", "PDI": "\u2069", "RLM": "\u200f",
        "ALM": "\u061c"}


def test_bidi_controls_in_subject_fields_are_refused(client: TestClient, tokens: RoleTokens,
                                                      test_ca: LocalCA) -> None:
    admin = tokens.headers(Role.ADMIN)
    add_local_ca(client, admin, test_ca)
    for field in ("organization", "organizational_unit", "locality", "state"):
        for label, char in BIDI.items():
            subject = {"common_name": "web1.example.test", field: f"ACME{char}gpj.exe"}
            r = client.post("/api/v1/certificates", headers=admin,
                            json={"name": "web1", "spec": {"profile": "corp", "subject": subject}})
            assert_problem(r, 422, field, "bidirectional")
    assert client.get("/api/v1/certificates", headers=admin).json() == [], "nothing was stored"
    ok = {"common_name": "web1.example.test", "organization": "شركة ACME", "locality": "Zürich"}
    r = client.post("/api/v1/certificates", headers=admin, json={"name": "web1", "spec": {"profile": "corp",
                                                                                          "subject": ok}})
    assert r.status_code == 202, r.text
