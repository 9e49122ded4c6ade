"""Fixtures for the HSM tests: a SoftHSM of this test run (its own SOFTHSM2_CONF and
token directory, tokens initialised here), an App with the local-CA profile and an
HSM group on it (on SQLite and PostgreSQL, through the root `app` fixture), and the
PKCS#11 sessions of this process closed after every test.

Without softhsm2 every test here is skipped, or fails under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certpilot.keys import pkcs11_backend
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from tests.conftest import missing
from tests.integration.keys.hsm_support import SoftHsm, add_hsm_group, add_local_ca_profile


@pytest.fixture(scope="session", autouse=True)
def softhsm() -> Iterator[SoftHsm]:
    """The SoftHSM of this test run, made before any test (tests/support/softhsm.py)."""
    from tests.support import softhsm as run_softhsm

    if run_softhsm.SETUP is None:
        missing(run_softhsm.UNAVAILABLE or "SoftHSM2 was not prepared")
    yield run_softhsm.SETUP
    pkcs11_backend.close_sessions()


@pytest.fixture(autouse=True)
def _close_pkcs11_sessions() -> Iterator[None]:
    """Each test starts with this process logged out of every token."""
    pkcs11_backend.close_sessions()
    yield
    pkcs11_backend.close_sessions()


@pytest.fixture
def hsm_app(app: App, test_ca: LocalCA) -> App:
    """The root `app` (SQLite and PostgreSQL) with profile `corp` on the bundled local-CA
    script and HSM group `hsm1` on the test token."""
    add_local_ca_profile(app, test_ca)
    add_hsm_group(app)
    return app
