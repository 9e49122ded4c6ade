"""`/metrics` (DESIGN §5): behind a token, and after issuing it shows each
certificate's expiry, renewal time and readiness, issuer attempts by outcome,
and when a renewal loop last finished a pass.

Runs on SQLite and PostgreSQL (the figures are read from the database).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from tests.support.api import RoleTokens, add_local_ca, assert_problem, certificate_body

FAILING_SCRIPT = "def certificate_request(csr, common_name, args_dict):\n    raise RuntimeError('CA is down')\n"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, headers: dict[str, str]) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    key = (metric, frozenset(labels.items()))
    assert key in samples, f"no sample {metric}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


def timestamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_metrics_need_a_token(client: TestClient, tokens: RoleTokens) -> None:
    r = client.get("/metrics")
    assert_problem(r, 401)
    assert "certpilot_" not in r.text
    assert_problem(client.get("/metrics", headers={"Authorization": "Bearer cpt_wrong"}), 401)
    scrape(client, tokens.headers(Role.VIEWER))  # the least role may scrape


@pytest.fixture
def issued(client: TestClient, tokens: RoleTokens, test_ca: LocalCA) -> dict[str, Any]:
    """`web1` issued on profile `corp`; `down1` failed once on profile `down`."""
    admin = tokens.headers(Role.ADMIN)
    add_local_ca(client, admin, test_ca)
    r = client.post("/api/v1/scripts", headers=admin, json={"name": "down", "source": FAILING_SCRIPT})
    assert r.status_code == 201, r.text
    assert client.post("/api/v1/profiles", headers=admin, json={"name": "down", "script": "down"}).status_code == 201
    r = client.post("/api/v1/certificates?wait=true", headers=admin, json=certificate_body("web1"))
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/certificates?wait=true", headers=admin, json=certificate_body("down1", "down"))
    assert r.status_code == 502 and "the attempt ended failed" in r.json()["detail"], r.text
    assert client.get("/api/v1/certificates/down1", headers=admin).json()["status"]["phase"] == "failed"
    return client.get("/api/v1/certificates/web1", headers=admin).json()  # type: ignore[no-any-return]


def test_metrics_after_issuing(api_app: App, client: TestClient, tokens: RoleTokens, issued: dict[str, Any]) -> None:
    viewer = tokens.headers(Role.VIEWER)
    samples = scrape(client, viewer)
    web1 = {"name": "web1", "profile": "corp"}
    down1 = {"name": "down1", "profile": "down"}
    status = issued["status"]

    assert value(samples, "certpilot_certificate_expiration_timestamp_seconds", **web1) == timestamp(status["not_after"])
    renewal = value(samples, "certpilot_certificate_renewal_timestamp_seconds", **web1)
    assert abs(renewal - timestamp(status["renew_at"])) < 1.0, "the renewal time is the status' renew_at"
    assert timestamp(status["not_before"]) < renewal < timestamp(status["not_after"])
    assert value(samples, "certpilot_certificate_ready_status", condition="True", **web1) == 1
    assert value(samples, "certpilot_certificate_ready_status", condition="False", **web1) == 0
    assert value(samples, "certpilot_certificate_failures", **web1) == 0

    # never issued: not ready, one failure, and no expiry to show
    assert value(samples, "certpilot_certificate_ready_status", condition="True", **down1) == 0
    assert value(samples, "certpilot_certificate_ready_status", condition="False", **down1) == 1
    assert value(samples, "certpilot_certificate_failures", **down1) == 1
    assert ("certpilot_certificate_expiration_timestamp_seconds", frozenset(down1.items())) not in samples

    attempts = "certpilot_issuer_attempts_total"
    assert value(samples, attempts, outcome="issued") == 1
    assert value(samples, attempts, outcome="failed") == 1
    assert value(samples, attempts, outcome="timeout") == 0
    r = client.post("/api/v1/certificates/web1/renew?wait=true", headers=tokens.headers(Role.OPERATOR))
    assert r.status_code == 200, r.text
    samples = scrape(client, viewer)
    assert value(samples, attempts, outcome="issued") == 2
    assert value(samples, "certpilot_certificate_expiration_timestamp_seconds", **web1) == timestamp(
        r.json()["status"]["not_after"])

    loop = "certpilot_renewal_loop_last_run_timestamp_seconds"
    assert value(samples, loop) == 0, "no renewal loop has run yet"
    Reconciler(api_app).run_once()
    last = value(scrape(client, viewer), loop)
    assert abs(last - api_app.clock.now().timestamp()) < 30, "a pass just finished"
