"""Scripts, profiles, certificates and events through the REST API (DESIGN §5):
CRUD, issuance with `?wait=true`, PEM, history, export, pagination, filters,
errors as problem+json, and objects written back as they were read.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from fastapi.testclient import TestClient

from certpilot.server import create_server
from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from tests.support.api import (
    MovableClock,
    RoleTokens,
    add_local_ca,
    add_profile,
    assert_problem,
    certificate_body,
    checking_local_ca_source,
    sha256_hex,
)

CERTS = "/api/v1/certificates"


@pytest.fixture
def admin(tokens: RoleTokens) -> dict[str, str]:
    return tokens.headers(Role.ADMIN)


@pytest.fixture
def operator(tokens: RoleTokens) -> dict[str, str]:
    return tokens.headers(Role.OPERATOR)


@pytest.fixture
def corp(client: TestClient, admin: dict[str, str], test_ca: LocalCA) -> dict[str, Any]:
    """Script `local-ca` (the bundled one, checking `*_sha256` params) and profile `corp`."""
    return add_local_ca(client, admin, test_ca, source=checking_local_ca_source())


def events(client: TestClient, headers: dict[str, str], **filters: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/events", params={"limit": 1000, **filters}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def kinds(client: TestClient, headers: dict[str, str], name: str) -> list[str]:
    """The certificate's event kinds, oldest first."""
    return [e["kind"] for e in reversed(events(client, headers, object_type="certificate", object=name))]


def issue(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(CERTS, params={"wait": "true"}, headers=headers, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"]["phase"] == "issued", r.text
    return r.json()  # type: ignore[no-any-return]


def pem_certificates(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def dns_names(cert: x509.Certificate) -> set[str]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


def without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- scripts -------------------------------------------------------------------------


def test_script_crud(client: TestClient, admin: dict[str, str], corp: dict[str, Any], clock: MovableClock) -> None:
    source = "def certificate_request(csr, common_name, args_dict):\n    raise ValueError('offline')\n"
    r = client.post("/api/v1/scripts", headers=admin, json={"name": "offline", "source": source, "timeout_s": 5})
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["name"], created["source"], created["timeout_s"]) == ("offline", source, 5)
    assert created["sha256"] == sha256_hex(source)
    assert {s["name"] for s in client.get("/api/v1/scripts", headers=admin).json()} == {"local-ca", "offline"}
    assert client.get("/api/v1/scripts/offline", headers=admin).json() == created

    before = events(client, admin, object_type="script", object="offline")
    clock.advance(dt.timedelta(seconds=5))  # a rewrite would show in `updated_at`
    r = client.put("/api/v1/scripts/offline", headers=admin, json=created)  # written back as read
    assert (r.status_code, r.json()) == (200, created)
    assert events(client, admin, object_type="script", object="offline") == before

    r = client.put("/api/v1/scripts/offline", headers=admin, json={**created, "timeout_s": 9})
    assert r.status_code == 200 and r.json()["timeout_s"] == 9, r.text
    assert client.get("/api/v1/scripts/offline", headers=admin).json()["timeout_s"] == 9

    assert_problem(client.delete("/api/v1/scripts/local-ca", headers=admin), 409, "corp")
    assert client.delete("/api/v1/scripts/offline", headers=admin).status_code == 204
    assert_problem(client.get("/api/v1/scripts/offline", headers=admin), 404, "offline")
    assert_problem(client.delete("/api/v1/scripts/offline", headers=admin), 404, "offline")


# --- profiles ------------------------------------------------------------------------


def test_profile_crud_and_written_back_secret_is_kept(client: TestClient, admin: dict[str, str],
                                                      test_ca: LocalCA, clock: MovableClock) -> None:
    api_password = "pw-" + uuid.uuid4().hex
    add_local_ca(client, admin, test_ca, source=checking_local_ca_source(), extra_params=[
        {"name": "api_password", "value": api_password, "sensitive": True},
        {"name": "api_password_sha256", "value": sha256_hex(api_password)},
    ])
    read = client.get("/api/v1/profiles/corp", headers=admin).json()
    params = {p["name"]: p for p in read["params"]}
    assert params["ca_key_password"] == {"name": "ca_key_password", "value": "***", "sensitive": True,
                                         "dynamic": False}
    assert params["api_password"]["value"] == "***"
    assert params["ca_cert"]["value"] == test_ca.cert_path.read_text()
    assert params["ca_key"]["value"] == "***"
    assert [p["name"] for p in client.get("/api/v1/profiles", headers=admin).json()] == ["corp"]

    before = events(client, admin, object_type="profile", object="corp")
    clock.advance(dt.timedelta(seconds=5))  # a rewrite would show in `updated_at`
    r = client.put("/api/v1/profiles/corp", headers=admin, json=read)  # written back as read, `***` included
    assert r.status_code == 200, r.text
    written_back = r.json()
    assert without(written_back, "updated_at") == without(read, "updated_at")
    assert events(client, admin, object_type="profile", object="corp") == before, "nothing changed"
    # the CA key password and the API password are intact: the script signs
    issue(client, admin, certificate_body("web1"))

    # a real change, the secrets still sent as `***`
    r = client.put("/api/v1/profiles/corp", headers=admin, json={**read, "renew_before_days": 20})
    assert r.status_code == 200 and r.json()["renew_before_days"] == 20, r.text
    (changed,) = [e for e in events(client, admin, object_type="profile", object="corp") if e not in before]
    assert changed["details"]["changed"] == ["renewal"]
    r = client.post(f"{CERTS}/web1/renew", params={"wait": "true"}, headers=admin)
    assert (r.status_code, r.json()["status"]["revision"]) == (200, 2), r.text

    # `***` for a value that was never stored is refused, not stored
    bad = {**read, "params": [*read["params"], {"name": "other", "value": "***", "sensitive": True}]}
    assert_problem(client.put("/api/v1/profiles/corp", headers=admin, json=bad), 422, "other")

    assert_problem(client.delete("/api/v1/profiles/corp", headers=admin), 409, "web1")
    add_profile(client, admin, test_ca, script="local-ca", profile="unused")
    assert client.delete("/api/v1/profiles/unused", headers=admin).status_code == 204
    assert_problem(client.get("/api/v1/profiles/unused", headers=admin), 404, "unused")

    # last, so that the rest is checked whatever this says: a write of what was read is no update
    assert written_back["updated_at"] == read["updated_at"], "writing back what was read bumped updated_at"


def test_profile_sandbox_settings_round_trip(client: TestClient, admin: dict[str, str], test_ca: LocalCA,
                                             api_app: App, clock: MovableClock) -> None:
    created = add_local_ca(client, admin, test_ca, concurrency=3, allow_read=["/etc/ssl/private/", "/srv//ca"],
                           allow_write=["/srv/deploy"])
    assert (created["concurrency"], created["allow_read"], created["allow_write"]) == (
        3, ["/etc/ssl/private", "/srv/ca"], ["/srv/deploy"])
    read = client.get("/api/v1/profiles/corp", headers=admin).json()
    assert read == created
    assert [p["allow_read"] for p in client.get("/api/v1/profiles", headers=admin).json()] == [read["allow_read"]]

    before = events(client, admin, object_type="profile", object="corp")
    clock.advance(dt.timedelta(seconds=5))
    r = client.put("/api/v1/profiles/corp", headers=admin, json=read)  # written back as read
    assert (r.status_code, r.json()) == (200, read), r.text
    assert events(client, admin, object_type="profile", object="corp") == before, "nothing changed"

    r = client.put("/api/v1/profiles/corp", headers=admin, json={**read, "concurrency": 1, "allow_write": []})
    assert r.status_code == 200, r.text
    assert (r.json()["concurrency"], r.json()["allow_write"]) == (1, [])
    (changed,) = [e for e in events(client, admin, object_type="profile", object="corp") if e not in before]
    assert changed["details"]["changed"] == ["sandbox"]

    # left out: the defaults; every profile object has the three fields
    other = add_profile(client, admin, test_ca, script="local-ca", profile="other")
    assert (other["concurrency"], other["allow_read"], other["allow_write"]) == (16, [], [])

    data_dir = str(api_app.settings.data_dir.resolve())
    bad = {
        "relative": ({"allow_read": ["srv/ca"]}, "allow_read", "absolute"),
        "dot-dot": ({"allow_write": ["/srv/../etc"]}, "allow_write", ".."),
        "data-dir": ({"allow_read": [data_dir]}, "allow_read", f"certpilot's data dir ({data_dir})"),
        "inside-data-dir": ({"allow_write": [data_dir + "/x"]}, "allow_write", "certpilot's data dir"),
        "concurrency-0": ({"concurrency": 0}, "concurrency", "concurrency"),
    }
    for what, (fields, field, says) in bad.items():
        body = {**read, **fields}
        refused = assert_problem(client.put("/api/v1/profiles/corp", headers=admin, json=body), 422, says)
        assert field in refused.get("field", refused["detail"]), (what, refused)
        assert_problem(client.post("/api/v1/profiles", headers=admin, json={**body, "name": "bad"}), 422, says)
    assert client.get("/api/v1/profiles/corp", headers=admin).json()["concurrency"] == 1
    assert_problem(client.get("/api/v1/profiles/bad", headers=admin), 404, "bad")


# --- certificates --------------------------------------------------------------------


def test_certificate_lifecycle(client: TestClient, admin: dict[str, str], operator: dict[str, str],
                               corp: dict[str, Any], test_ca: LocalCA) -> None:
    r = client.post(CERTS, headers=operator, json=certificate_body("queued"))
    assert r.status_code == 202, r.text
    assert r.json()["status"]["phase"] == "pending" and r.json()["status"]["revision"] is None
    assert_problem(client.get(f"{CERTS}/queued/pem", headers=admin), 404, "queued")

    issued = issue(client, operator, certificate_body("web1", sans=["DNS:www.web1.example.test"], key="rsa:2048"))
    st = issued["status"]
    assert (st["revision"], st["expiry_status"], st["failures"], st["last_error"]) == (1, "good", 0, None)
    assert issued["spec"]["subject_alt_names"] == ["DNS:web1.example.test", "DNS:www.web1.example.test"]
    assert client.get(f"{CERTS}/web1", headers=admin).json() == issued

    r = client.get(f"{CERTS}/web1/pem", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-pem-file")
    assert "PRIVATE KEY" not in r.text
    leaf, ca = pem_certificates(r.text)
    assert ca == x509.load_pem_x509_certificate(test_ca.cert_path.read_bytes()), "leaf, then the chain"
    assert leaf.serial_number == int(st["serial"], 16)
    assert dns_names(leaf) == {"web1.example.test", "www.web1.example.test"}
    assert leaf.not_valid_after_utc == parse_time(st["not_after"])

    (rev1,) = client.get(f"{CERTS}/web1/revisions", headers=admin).json()
    assert (rev1["revision"], rev1["current"], rev1["serial"]) == (1, True, st["serial"])
    assert rev1["fingerprint_sha256"] == st["fingerprint_sha256"]
    (attempt1,) = client.get(f"{CERTS}/web1/attempts", headers=admin).json()
    assert (attempt1["outcome"], attempt1["revision"], attempt1["error"]) == ("issued", 1, None)

    r = client.post(f"{CERTS}/web1/renew", params={"wait": "true"}, headers=operator)
    assert r.status_code == 200, r.text
    renewed = r.json()["status"]
    assert (renewed["phase"], renewed["revision"]) == ("issued", 2)
    assert renewed["serial"] != st["serial"]
    revisions = client.get(f"{CERTS}/web1/revisions", headers=admin).json()
    assert [(x["revision"], x["current"]) for x in revisions] == [(2, True), (1, False)]
    assert [a["revision"] for a in client.get(f"{CERTS}/web1/attempts", headers=admin).json()] == [2, 1]
    assert kinds(client, admin, "web1") == ["CERT_REQUESTED", "CERT_ISSUED", "CERT_RENEWAL_REQUESTED",
                                            "CERT_RENEWED"]

    r = client.post(f"{CERTS}/web1/export", headers=admin, json={"format": "pem", "include_key": True})
    assert r.status_code == 200, r.text
    exported = r.json()
    leaf = x509.load_pem_x509_certificate(exported["certificate"].encode())
    key = serialization.load_pem_private_key(exported["private_key"].encode(), password=None)
    assert exported["revision"] == 2
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    assert leaf.serial_number == int(renewed["serial"], 16)
    assert exported["fullchain"] == exported["certificate"] + exported["chain"]
    (exported_event,) = events(client, admin, kind="KEY_EXPORTED", object="web1")
    assert exported_event["details"]["revision"] == 2 and exported_event["actor"].startswith("admin")
    assert exported["private_key"] not in str(exported_event)

    r = client.post(f"{CERTS}/web1/export", headers=admin, json={"format": "pkcs12", "password": "p12-secret"})
    assert r.status_code == 200, r.text
    bundle = pkcs12.load_pkcs12(base64.b64decode(r.json()["pkcs12_base64"]), b"p12-secret")
    assert bundle.cert is not None and bundle.cert.certificate == leaf
    assert len(events(client, admin, kind="KEY_EXPORTED", object="web1")) == 2

    assert client.delete(f"{CERTS}/web1", headers=operator).status_code == 204
    assert_problem(client.get(f"{CERTS}/web1", headers=admin), 404, "web1")
    assert_problem(client.get(f"{CERTS}/web1/revisions", headers=admin), 404, "web1")
    assert kinds(client, admin, "web1")[-1] == "CERT_DELETED"


def test_pagination_walks_every_certificate_once(client: TestClient, admin: dict[str, str],
                                                 corp: dict[str, Any], test_ca: LocalCA) -> None:
    add_profile(client, admin, test_ca, script="local-ca", profile="other")
    names = [f"c{i:02d}" for i in range(1, 8)]
    for name in [*reversed(names), "other-1"]:  # made out of order; listed by name
        profile = "other" if name == "other-1" else "corp"
        assert client.post(CERTS, headers=admin, json=certificate_body(name, profile)).status_code == 202

    seen: list[str] = []
    url: str | None = f"{CERTS}?limit=3&profile=corp"
    pages = 0
    while url is not None:
        pages += 1
        assert pages <= 5, f"pagination does not end: {seen}"
        r = client.get(url, headers=admin)
        assert r.status_code == 200, r.text
        page = [c["name"] for c in r.json()]
        seen += page
        link = r.headers.get("link")
        if link is None:
            assert "x-next-cursor" not in r.headers
            url = None
            continue
        assert link.startswith("<") and link.endswith('>; rel="next"'), link
        assert r.headers["x-next-cursor"] == page[-1]
        url = link[1:link.index(">")]
        assert "profile=corp" in url and "limit=3" in url, f"the next link drops the query: {url}"
    assert seen == names, "every certificate exactly once, in name order"
    assert pages == 3


def test_list_filters(client: TestClient, admin: dict[str, str], corp: dict[str, Any], test_ca: LocalCA) -> None:
    add_profile(client, admin, test_ca, script="local-ca", profile="short", validity_days=10)
    issue(client, admin, certificate_body("long1"))
    issue(client, admin, certificate_body("short1", "short"))
    assert client.post(CERTS, headers=admin, json=certificate_body("queued1")).status_code == 202

    def names(**query: Any) -> list[str]:
        r = client.get(CERTS, params=query, headers=admin)
        assert r.status_code == 200, r.text
        return [c["name"] for c in r.json()]

    assert names() == ["long1", "queued1", "short1"]
    assert names(phase="issued") == ["long1", "short1"]
    assert names(phase="pending") == ["queued1"]
    assert names(profile="short") == ["short1"]
    assert names(profile="corp") == ["long1", "queued1"]
    assert names(phase="issued", profile="corp") == ["long1"]
    assert names(expiring_within=30) == ["short1"]
    assert names(expiring_within=100) == ["long1", "short1"]
    assert names(expiring_within=0) == []
    assert_problem(client.get(CERTS, params={"phase": "bogus"}, headers=admin), 422, "phase")
    assert_problem(client.get(CERTS, params={"expiring_within": -1}, headers=admin), 422, "expiring_within")
    assert_problem(client.get(CERTS, params={"limit": 0}, headers=admin), 422, "limit")


def test_events_filters_and_cursor(client: TestClient, admin: dict[str, str], corp: dict[str, Any]) -> None:
    issue(client, admin, certificate_body("web1"))
    issue(client, admin, certificate_body("web2"))
    assert client.post(f"{CERTS}/web1/renew", params={"wait": "true"}, headers=admin).status_code == 200

    everything = events(client, admin)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids), "newest first, each once"
    web1 = events(client, admin, object_type="certificate", object="web1")
    assert {e["object"] for e in web1} == {"web1"} and len(web1) == 4
    assert [e["object"] for e in events(client, admin, kind="CERT_ISSUED")] == ["web2", "web1"]
    assert events(client, admin, object_type="profile") == [e for e in everything if e["object_type"] == "profile"]

    walked: list[int] = []
    cursor: str | None = None
    for _ in range(len(everything) + 2):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/events", params=params, headers=admin)
        assert r.status_code == 200, r.text
        walked += [e["id"] for e in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert f"cursor={cursor}" in r.headers["link"]
    assert walked == ids, "the cursor walks every event exactly once"
    assert_problem(client.get("/api/v1/events", params={"cursor": "abc"}, headers=admin), 422, "cursor")


# --- errors --------------------------------------------------------------------------


@pytest.fixture
def with_dynamic(client: TestClient, admin: dict[str, str], test_ca: LocalCA, corp: dict[str, Any]) -> None:
    add_profile(client, admin, test_ca, script="local-ca", profile="dyn", extra_params=[
        {"name": "api_token", "sensitive": True, "dynamic": True},
        {"name": "cost_center", "dynamic": True},
    ])


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
    ("bad key spec", certificate_body("x", key="rsa:1000"), 422, ("rsa:1000",)),
    ("bad DNS SAN", certificate_body("x", sans=["DNS:exa mple.test"]), 422, ("exa mple.test",)),
    ("SAN of no known kind", certificate_body("x", sans=["FOO:bar"]), 422, ("FOO:bar",)),
    ("missing dynamic param", certificate_body("x", "dyn", dynamic={"cost_center": "CC-1"}), 422, ("api_token",)),
    ("unknown dynamic param", certificate_body("x", dynamic={"colour": "red"}), 422, ("colour",)),
    ("bad name", certificate_body("bad name!"), 422, ("name",)),
    ("bad country", {"name": "x", "spec": {"profile": "corp", "subject": {"common_name": "x.test",
                                                                          "country": "Germany"}}}, 422, ("country",)),
    ("no subject", {"name": "x", "spec": {"profile": "corp"}}, 422, ("subject",)),
    ("unknown profile", certificate_body("x", "nope"), 404, ("nope",)),
]


def test_bad_certificate_requests_are_problems(client: TestClient, admin: dict[str, str], with_dynamic: None) -> None:
    for case, body, status, words in BAD_REQUESTS:
        try:
            assert_problem(client.post(CERTS, headers=admin, json=body), status, *words)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None
    assert client.get(CERTS, headers=admin).json() == [], "nothing was stored"


def test_unknown_and_duplicate_names_are_problems(client: TestClient, admin: dict[str, str],
                                                  corp: dict[str, Any]) -> None:
    for path in (f"{CERTS}/nope", f"{CERTS}/nope/pem", f"{CERTS}/nope/revisions", f"{CERTS}/nope/attempts",
                 "/api/v1/profiles/nope", "/api/v1/scripts/nope"):
        assert_problem(client.get(path, headers=admin), 404, "nope")
    assert_problem(client.post(f"{CERTS}/nope/renew", headers=admin), 404, "nope")
    assert_problem(client.put(f"{CERTS}/nope", headers=admin, json=certificate_body("nope")), 404, "nope")
    assert_problem(client.delete(f"{CERTS}/nope", headers=admin), 404, "nope")

    assert client.post(CERTS, headers=admin, json=certificate_body("web1")).status_code == 202
    assert_problem(client.post(CERTS, headers=admin, json=certificate_body("web1")), 409, "web1")
    assert_problem(client.post("/api/v1/profiles", headers=admin, json=corp), 409, "corp")
    r = client.post(CERTS, headers={**admin, "content-type": "application/json"}, content=b"{not json")
    assert_problem(r, 422)


def test_wait_true_answers_with_the_attempts_outcome(client: TestClient, admin: dict[str, str],
                                                     corp: dict[str, Any]) -> None:
    """The rule for `?wait=true`: issued -> 201 (new) / 200 (renewed) with the certificate;
    not issued -> 502 with the attempt's error; without `wait` -> 202, nothing tried yet."""
    r = client.post(f"{CERTS}?wait=true", headers=admin, json=certificate_body("web1"))
    assert r.status_code == 201 and r.json()["status"]["revision"] == 1, r.text
    r = client.post(f"{CERTS}/web1/renew?wait=true", headers=admin)
    assert r.status_code == 200 and r.json()["status"]["revision"] == 2, r.text
    assert client.post(f"{CERTS}/web1/renew", headers=admin).status_code == 202

    down = "def certificate_request(csr, common_name, args_dict):\n    raise RuntimeError('CA is down')\n"
    r = client.put("/api/v1/scripts/local-ca", headers=admin, json={"source": down, "timeout_s": 30})
    assert r.status_code == 200, r.text
    r = client.post(f"{CERTS}/web1/renew?wait=true", headers=admin)
    assert_problem(r, 502, "CA is down")
    status = client.get(f"{CERTS}/web1", headers=admin).json()["status"]
    assert (status["revision"], status["failures"]) == (2, 1)  # the served revision stays
    r = client.post(f"{CERTS}?wait=true", headers=admin, json=certificate_body("web2"))
    assert_problem(r, 502, "CA is down")
    assert client.get(f"{CERTS}/web2", headers=admin).json()["status"]["phase"] == "failed"


# --- written as read -----------------------------------------------------------------


def test_certificate_written_back_as_read_changes_nothing(
    api_app: App, client: TestClient, admin: dict[str, str], operator: dict[str, str], test_ca: LocalCA,
    corp: dict[str, Any], clock: MovableClock,
) -> None:
    api_token = "tok-" + uuid.uuid4().hex
    add_profile(client, admin, test_ca, script="local-ca", profile="dyn", extra_params=[
        {"name": "api_token", "sensitive": True, "dynamic": True},
        {"name": "api_token_sha256", "dynamic": True},  # the script checks the token against it
    ])
    issue(client, operator, certificate_body(
        "web1", "dyn", dynamic={"api_token": api_token, "api_token_sha256": sha256_hex(api_token)}))
    read = client.get(f"{CERTS}/web1", headers=operator).json()
    assert read["spec"]["dynamic_params"]["api_token"] == "***"
    before = kinds(client, admin, "web1")
    clock.advance(dt.timedelta(seconds=5))  # a rewrite would show in the status times

    r = client.put(f"{CERTS}/web1", headers=operator, json=read)  # status, `***` and all
    assert (r.status_code, r.json()) == (200, read)
    assert client.get(f"{CERTS}/web1", headers=operator).json() == read
    assert kinds(client, admin, "web1") == before, "writing back what was read is no change"

    # a real change: one more SAN, the token still sent as `***`
    changed = {**read, "spec": {**read["spec"],
                                "subject_alt_names": [*read["spec"]["subject_alt_names"], "DNS:www.web1.example.test"]}}
    r = client.put(f"{CERTS}/web1", headers=operator, json=changed)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["subject_alt_names"] == changed["spec"]["subject_alt_names"]
    assert r.json()["status"]["revision"] == 1
    assert parse_time(r.json()["status"]["next_action_at"]) <= api_app.clock.now(), "a reissue is due now"
    assert kinds(client, admin, "web1")[len(before):] == ["CERT_UPDATED"]

    # the renewal loop reissues it, and the script gets the token kept from before
    assert Reconciler(api_app).run_once() == 1
    now = client.get(f"{CERTS}/web1", headers=operator).json()
    assert (now["status"]["phase"], now["status"]["revision"]) == ("issued", 2), now["status"]
    leaf, _ = pem_certificates(client.get(f"{CERTS}/web1/pem", headers=operator).text)
    assert dns_names(leaf) == {"web1.example.test", "www.web1.example.test"}


# --- hostile input -------------------------------------------------------------------

BIG = "99999999999999999999999"  # beyond any integer column
INT4 = str(2**31)  # beyond a 32-bit integer column
NUL = "\x00"  # PostgreSQL text cannot hold it


HOSTILE: list[tuple[str, str, str, Any]] = [
    ("event cursor beyond any integer", "GET", f"/api/v1/events?cursor={BIG}", None),
    ("event cursor beyond int4", "GET", f"/api/v1/events?cursor={INT4}", None),
    ("token id beyond any integer", "DELETE", f"/api/v1/tokens/{BIG}", None),
    ("token id beyond int4", "DELETE", f"/api/v1/tokens/{INT4}", None),
    ("NUL in a certificate name", "GET", f"{CERTS}/a%00b", None),
    ("NUL in the certificate cursor", "GET", f"{CERTS}?cursor=%00", None),
    ("NUL in the profile filter", "GET", f"{CERTS}?profile=%00", None),
    ("NUL in the event kind filter", "GET", "/api/v1/events?kind=%00", None),
    ("NUL in a token name", "POST", "/api/v1/tokens", {"name": f"a{NUL}b"}),
    ("NUL in a profile param value", "POST", "/api/v1/profiles",
     {"name": "p2", "script": "local-ca", "params": [{"name": "region", "value": f"eu{NUL}"}]}),
    ("NUL in a profile's script", "POST", "/api/v1/profiles", {"name": "p2", "script": f"local{NUL}-ca"}),
    ("NUL in a certificate's profile", "POST", CERTS, certificate_body("x", f"co{NUL}rp")),
    ("NUL in a dynamic value", "POST", CERTS,
     certificate_body("x", "dyn", dynamic={"api_token": "t", "cost_center": f"C{NUL}"})),
]


def test_hostile_input_is_a_client_error(api_app: App, admin: dict[str, str], with_dynamic: None) -> None:
    """Out-of-range integers and NUL characters are the client's mistake: 4xx, never a 500."""
    server_errors = []
    with TestClient(create_server(api_app), raise_server_exceptions=False) as raw:
        for case, method, path, body in HOSTILE:
            r = raw.request(method, path, headers=admin, json=body)
            if r.status_code >= 500:
                server_errors.append(f"{case}: {method} {path} -> {r.status_code} {r.text[:100]}")
            elif r.status_code >= 400:
                assert_problem(r, r.status_code)
        login = "Basic " + base64.b64encode(f"ad{NUL}min:not-the-password".encode()).decode()
        r = raw.post("/api/v1/tokens", headers={"Authorization": login}, json={})
        if r.status_code != 401:
            server_errors.append(f"NUL in a login name (no token needed): POST /api/v1/tokens -> {r.status_code}")
    assert not server_errors, "server errors for bad input:\n" + "\n".join(server_errors)


# --- with the renewal loop running -----------------------------------------------------


RENEWALS = 5


def test_wait_issues_once_while_the_loop_runs(api_app: App, admin: dict[str, str], corp: dict[str, Any]) -> None:
    """`?wait=true` makes the attempt in the request; the renewal loop of the same
    process (as in `certpilot serve`), woken by the same request, must not make a second."""
    reconciler = Reconciler(api_app)
    with TestClient(create_server(api_app, reconciler)) as served:
        r = served.post(CERTS, params={"wait": "true"}, headers=admin, json=certificate_body("web1"))
        assert r.status_code == 201, r.text
        for _ in range(RENEWALS):  # a race: several chances to show it
            r = served.post(f"{CERTS}/web1/renew", params={"wait": "true"}, headers=admin)
            assert r.status_code == 200, r.text
        passes = reconciler.passes
        deadline = time.monotonic() + 10
        while reconciler.passes < passes + 2:  # the loop has looked at least once more
            assert time.monotonic() < deadline, "the renewal loop does not run"
            time.sleep(0.05)
        revisions = served.get(f"{CERTS}/web1/revisions", headers=admin).json()
        attempts = served.get(f"{CERTS}/web1/attempts", headers=admin).json()
    assert [a["outcome"] for a in attempts] == ["issued"] * (1 + RENEWALS), f"one attempt per request: {attempts}"
    assert [x["revision"] for x in revisions] == list(range(1 + RENEWALS, 0, -1)), "one revision per request"
