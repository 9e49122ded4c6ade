"""What every answer carries (issue 12): /api/docs is a page of the server's own under
the same Content-Security-Policy as the rest (nothing loaded from another site), and
over TLS every answer carries Strict-Transport-Security."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from certpilot.server import create_server
from certpilot.services.app import App


def test_api_docs_load_nothing_from_elsewhere_and_carry_the_csp(client: TestClient) -> None:
    r = client.get("/api/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "script-src 'self'" in csp, csp
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text), "the docs page loads from another site"
    assert "<script" not in r.text.lower()
    assert "/api/v1/certificates" in r.text and "/api/openapi.json" in r.text
    assert client.get("/api/openapi.json").json()["paths"]


def test_hsts_only_when_served_over_tls(api_app: App) -> None:
    with TestClient(create_server(api_app, https_only=True), base_url="https://testserver") as tls:
        for path in ("/login", "/healthz", "/api/v1/certificates", "/api/docs"):
            value = tls.get(path, follow_redirects=False).headers.get("strict-transport-security", "")
            assert value.startswith("max-age=") and int(value.split("=")[1].split(";")[0]) >= 15552000, (path, value)
    with TestClient(create_server(api_app)) as plain:
        assert "strict-transport-security" not in plain.get("/login").headers
