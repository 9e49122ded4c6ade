"""Fixtures for the HSM tests: a SoftHSM of this test run (its own SOFTHSM2_CONF and
token directory, tokens initialised here), an App with the local-CA profile and an
HSM group on it (on SQLite and PostgreSQL, through the root `app` fixture), and the
PKCS#11 sessions of this process closed after every test.

Without softhsm2 every test here is skipped, or fails under CI=true.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator

import pytest

from certpilot.keys import pkcs11_backend
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from tests.conftest import missing
from tests.integration.keys.hsm_support import (
    MODULE,
    PIN,
    SECRET_TOKEN,
    TOKEN,
    SoftHsm,
    add_hsm_group,
    add_local_ca_profile,
    init_token,
    softhsm_available,
)


@pytest.fixture(scope="session", autouse=True)
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """SOFTHSM2_CONF of this run, set before the PKCS#11 module is first loaded here."""
    reason = softhsm_available()
    if reason is not None:
        missing(reason)
    loaded = sys.modules.get("pkcs11")
    if loaded is not None and MODULE in getattr(loaded, "_loaded", {}):
        pytest.fail(f"{MODULE} was loaded in this process before SOFTHSM2_CONF was set for the HSM tests: "
                    "they would use another token directory")
    root = tmp_path_factory.mktemp("softhsm")
    token_dir = root / "tokens"
    token_dir.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    secret_pin = f"Pin-{secrets.token_hex(12)}"
    init_token(conf, TOKEN, PIN)
    init_token(conf, SECRET_TOKEN, secret_pin)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))  # for this process and every subprocess it starts
        yield SoftHsm(conf=conf, token_dir=token_dir, secret_pin=secret_pin)
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
