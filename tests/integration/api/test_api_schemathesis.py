"""Property-based requests against the app's own OpenAPI document: whatever a client
sends, well-formed or not, certpilot answers without a server error (5xx).

SQLite only (a module `database_url` narrows the root fixture), a fixed seed and a
bounded number of examples per operation and generation mode, so a run is short
and repeatable.

schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) does not
work with pytest 9 in schemathesis 4.32.5 (it sets `Function._nodeid`), so each
operation's strategy is driven here with Hypothesis' `@given`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from certpilot.server import create_server
from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.users import create_token
from tests.support.api import ACTOR, RoleTokens, add_local_ca, bearer, certificate_body

SEED = 20240917
MAX_EXAMPLES = 20


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only, to bound the run's time (the behaviour checked does not depend on the database)."""
    yield f"sqlite:///{tmp_path / 'certpilot.db'}"


@pytest.fixture
def api_schema(api_app: App, tokens: RoleTokens, test_ca: LocalCA) -> schemathesis.BaseSchema:
    asgi_app = create_server(api_app)
    with TestClient(asgi_app) as client:  # something to find: a script, a profile, an issued certificate
        admin = tokens.headers(Role.ADMIN)
        add_local_ca(client, admin, test_ca)
        r = client.post("/api/v1/certificates?wait=true", headers=admin, json=certificate_body("web1"))
        assert r.status_code == 201, r.text
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"database": "none"}})
    return schemathesis.openapi.from_asgi("/api/openapi.json", asgi_app, config=config,
                                          headers=tokens.headers(Role.ADMIN))


def test_no_request_makes_a_server_error(api_schema: schemathesis.BaseSchema, api_app: App) -> None:
    def call(case: schemathesis.Case) -> None:
        # a token per case: a generated DELETE /api/v1/tokens/{id} may have revoked the last one
        token, _ = create_token(api_app, "admin", name="schemathesis", actor=ACTOR)
        case.call_and_validate(headers=bearer(token), checks=[not_a_server_error])

    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is not valid: {result}"
        operation = result.ok()
        operations += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            test = seed(SEED)(settings(
                max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
                phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                suppress_health_check=list(HealthCheck),
            )(given(case=operation.as_strategy(generation_mode=mode))(call)))
            try:
                test()
            except Exception as exc:  # a failed check, or an exception the app let through (a 500)
                how = "\n".join(note for note in getattr(exc, "__notes__", []) if "curl" in note)
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:1500]}\n{how}")
    assert operations >= 20, f"only {operations} operations in the document"
    assert not failures, "server errors:\n\n" + "\n\n".join(failures)
