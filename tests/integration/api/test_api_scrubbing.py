"""A script that prints a sensitive value encoded (issue 12): base64 (also inside a
longer base64 text, as in HTTP Basic auth), URL-safe base64, percent-encoding, hex,
JSON \\u escapes, reversed, or half on stdout and half on stderr. In none of these
forms may it reach the attempts, `last_error` or the events, all of which viewers read.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from tests.support.api import RoleTokens, certificate_body

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SECRET = "p@ss/w0rd+Sécret=42!"
LEAKY_SCRIPT = r'''
import base64, sys, urllib.parse

def certificate_request(csr, common_name, args_dict):
    s = args_dict["api_password"]
    how = args_dict["how"]
    if how == "split":
        half = len(s) // 2
        print("first part:", s[:half])
        print("second part:", s[half:], file=sys.stderr)
        raise RuntimeError("the CA said no")
    form = {
        "base64": lambda: base64.b64encode(s.encode()).decode(),
        "basic-auth": lambda: "Basic " + base64.b64encode(("svc-user:" + s).encode()).decode(),
        "urlsafe-base64": lambda: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
        "url": lambda: urllib.parse.quote(s, safe=""),
        "form-url": lambda: "password=" + urllib.parse.quote_plus(s),
        "hex": lambda: s.encode().hex(),
        "json-u": lambda: "".join("\\u%04x" % ord(c) for c in s),
        "reversed": lambda: s[::-1],
    }[how]()
    print("sending", form)
    print("debug:", form, file=sys.stderr)
    raise RuntimeError(f"the CA refused the credentials {form}")
'''

# what the script prints, as the test computes it: none of these may be seen
LEAKS = {
    "base64": [base64.b64encode(SECRET.encode()).decode()],
    "basic-auth": [base64.b64encode(b"svc-user:" + SECRET.encode()).decode()[12:]],  # the part that is the secret
    "urlsafe-base64": [base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("=")],
    "url": [urllib.parse.quote(SECRET, safe="")],
    "form-url": [urllib.parse.quote_plus(SECRET)],
    "hex": [SECRET.encode().hex()],
    "json-u": ["".join("\\u%04x" % ord(c) for c in SECRET), SECRET],
    "reversed": [SECRET[::-1]],
    "split": [SECRET[: len(SECRET) // 2], SECRET[len(SECRET) // 2:]],
}


def visible_texts(client: TestClient, viewer: dict[str, str], name: str) -> dict[str, str]:
    cert = client.get(f"/api/v1/certificates/{name}", headers=viewer).json()
    attempts = client.get(f"/api/v1/certificates/{name}/attempts", headers=viewer).json()
    events = client.get("/api/v1/events", params={"object": name}, headers=viewer).json()
    assert attempts and events, (attempts, events)
    return {
        "last_error": str(cert["status"]["last_error"]),
        "attempts": json.dumps(attempts, ensure_ascii=False),
        "attempts (as JSON text)": json.dumps(attempts),
        "events": json.dumps(events, ensure_ascii=False),
    }


def test_encoded_secrets_are_scrubbed_everywhere_viewers_look(client: TestClient, tokens: RoleTokens) -> None:
    admin, viewer = tokens.headers(Role.ADMIN), tokens.headers(Role.VIEWER)
    r = client.post("/api/v1/scripts", headers=admin, json={"name": "leaky", "source": LEAKY_SCRIPT, "timeout_s": 30})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/profiles", headers=admin, json={"name": "leaky", "script": "leaky", "params": [
        {"name": "api_password", "value": SECRET, "sensitive": True}, {"name": "how", "dynamic": True}]})
    assert r.status_code == 201, r.text

    leaked: list[str] = []
    for how, forms in LEAKS.items():
        name = f"leak-{how}"
        r = client.post("/api/v1/certificates?wait=true", headers=admin,
                        json=certificate_body(name, "leaky", dynamic={"how": how}))
        assert r.status_code == 502, r.text
        texts = visible_texts(client, viewer, name)
        assert "***" in texts["attempts"], f"{how}: the script's output did not arrive at all: {texts['attempts']}"
        for where, text in texts.items():
            for form in forms:
                if form in text:
                    leaked.append(f"{how}: {form!r} in {where}")
    assert not leaked, "\n".join(leaked)
