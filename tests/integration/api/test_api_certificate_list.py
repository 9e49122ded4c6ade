"""`GET /api/v1/certificates` is read with Core rows and answered without a second
validation against `CertificateOut`: what it sends must still be exactly what the
ordinary path gives (`certificate_view` of `get_certificate`, loaded through the ORM),
item for item, in every state a list meets (pending, issued, with dynamic and sensitive
dynamic parameters, two profiles with different renewal settings, a deferral, the CA's
renewal window), and exactly the response model's shape (no key more or less).

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import select, update

from certpilot.api.schemas import CertificateOut
from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services import certificates as service
from certpilot.services.app import App
from certpilot.services.views import certificate_view
from certpilot.store.tables import CertificateRow, CertificateStatusRow
from tests.support.api import RoleTokens, add_local_ca, add_profile, certificate_body

CERTS = "/api/v1/certificates"
DYNAMIC = [{"name": "team", "dynamic": True}, {"name": "api_token", "dynamic": True, "sensitive": True}]


@pytest.fixture
def listed(client: TestClient, tokens: RoleTokens, test_ca: LocalCA, api_app: App) -> list[str]:
    """Certificates in the states a list page meets; their names, sorted."""
    admin = tokens.headers(Role.ADMIN)
    add_local_ca(client, admin, test_ca, extra_params=DYNAMIC)
    add_profile(client, admin, test_ca, script="local-ca", profile="early", extra_params=DYNAMIC,
                renew_before_days=60, warning_days=[45, 7])
    made = {
        "a-issued": ("corp", True, {"team": "web", "api_token": "s3cret-token"}),
        "b-pending": ("corp", False, {"team": "db", "api_token": "other-token"}),
        "c-issued-early": ("early", True, {"team": "ops", "api_token": "t"}),
        "d-deferred": ("early", True, {"team": "x", "api_token": "y"}),
        "e-renewal-window": ("corp", True, {"team": "z", "api_token": "w"}),
    }
    for name, (profile, wait, dynamic) in made.items():
        r = client.post(CERTS, params={"wait": str(wait).lower()}, headers=admin,
                        json=certificate_body(name, profile, sans=[f"DNS:{name}.example.test"], dynamic=dynamic))
        assert r.status_code in (201, 202), r.text
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with api_app.db.transaction() as session:
        ids = dict(session.execute(select(CertificateRow.name, CertificateRow.id)).all())
        session.execute(update(CertificateStatusRow).where(CertificateStatusRow.certificate_id == ids["d-deferred"])
                        .values(deferred_since=now, deferred_poll_at=now + dt.timedelta(minutes=5), deferred_polls=2))
        session.execute(update(CertificateStatusRow)
                        .where(CertificateStatusRow.certificate_id == ids["e-renewal-window"])
                        .values(renewal_info_window_start=now + dt.timedelta(days=20),
                                renewal_info_window_end=now + dt.timedelta(days=22),
                                renewal_info_renew_at=now + dt.timedelta(days=21),
                                renewal_info_checked_at=now, renewal_info_check_at=now + dt.timedelta(hours=6),
                                renewal_info_explanation_url="https://ca.example.test/why"))
    return sorted(made)


def _ordinary(app: App, name: str) -> dict[str, Any]:
    """The view the rest of certpilot gives (ORM graph), through JSON as the API sends it."""
    return json.loads(json.dumps(certificate_view(service.get_certificate(app, name))))


def test_the_list_says_what_the_ordinary_path_says(client: TestClient, tokens: RoleTokens, api_app: App,
                                                    listed: list[str]) -> None:
    viewer = tokens.headers(Role.VIEWER)
    r = client.get(CERTS, headers=viewer)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert [item["name"] for item in body] == listed
    assert body == [_ordinary(api_app, name) for name in listed]
    for item in body:
        one = client.get(f"{CERTS}/{item['name']}", headers=viewer)
        assert one.status_code == 200 and one.json() == item
    by_name = {item["name"]: item for item in body}
    assert by_name["a-issued"]["spec"]["dynamic_params"] == {"team": "web", "api_token": "***"}
    assert by_name["b-pending"]["status"]["phase"] == "pending"
    assert by_name["c-issued-early"]["status"]["renew_at"] != by_name["a-issued"]["status"]["renew_at"]
    assert by_name["d-deferred"]["status"]["awaiting_ca"]["polls"] == 2
    assert by_name["e-renewal-window"]["status"]["renewal_info"]["explanation_url"] == "https://ca.example.test/why"
    assert "s3cret-token" not in r.text


def test_the_list_is_exactly_the_response_models_shape(client: TestClient, tokens: RoleTokens,
                                                        listed: list[str]) -> None:
    """Validated against `list[CertificateOut]` and dumped again, the body is unchanged:
    no key the model does not declare, none missing, every type as declared."""
    r = client.get(CERTS, headers=tokens.headers(Role.VIEWER))
    body = r.json()
    adapter = TypeAdapter(list[CertificateOut])
    assert adapter.dump_python(adapter.validate_python(body), mode="json") == body
    one = client.get(f"{CERTS}/{listed[0]}", headers=tokens.headers(Role.VIEWER)).json()
    assert CertificateOut.model_validate(one).model_dump(mode="json") == one


def test_filters_and_pages_agree_with_the_whole_list(client: TestClient, tokens: RoleTokens,
                                                     listed: list[str]) -> None:
    viewer = tokens.headers(Role.VIEWER)
    everything = client.get(CERTS, headers=viewer).json()

    def names(**params: Any) -> list[str]:
        r = client.get(CERTS, params=params, headers=viewer)
        assert r.status_code == 200, r.text
        return [item["name"] for item in r.json()]

    assert names(phase="issued") == [c["name"] for c in everything if c["status"]["phase"] == "issued"]
    assert names(profile="early") == [c["name"] for c in everything if c["spec"]["profile"] == "early"]
    assert names(expiring_within=36500) == [c["name"] for c in everything if c["status"]["not_after"]]
    assert names(expiring_within=0) == []
    assert names(limit=2, cursor=listed[1]) == listed[2:4]
    page = client.get(CERTS, params={"limit": 2}, headers=viewer)
    assert page.headers["x-next-cursor"] == listed[1]
    assert f"cursor={listed[1]}" in page.headers["link"]
    last = client.get(CERTS, params={"limit": 2, "cursor": listed[3]}, headers=viewer)
    assert [c["name"] for c in last.json()] == listed[4:] and "link" not in last.headers


def test_concurrent_reads_take_turns_in_the_read_slots(api_app: App, tokens: RoleTokens,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight list requests at once: at most `READ_SLOTS` pages are read at the same time
    (one GIL: more at once only costs switching), and every request is answered."""
    import asyncio
    import threading
    import time

    import httpx

    from certpilot.api.concurrency import READ_SLOTS
    from certpilot.api.routes import certificates as route
    from certpilot.server import create_server

    lock, inside, most = threading.Lock(), [0], [0]
    real = route.service.list_certificates

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(route.service, "list_certificates", counted)
    server = create_server(api_app, web=False)

    async def eight() -> list[int]:
        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers=tokens.headers(Role.VIEWER)) as client:
            answers = await asyncio.gather(*(client.get(CERTS) for _ in range(8)))
        return [a.status_code for a in answers]

    assert asyncio.run(eight()) == [200] * 8
    assert most[0] == READ_SLOTS, f"{most[0]} pages read at once"
