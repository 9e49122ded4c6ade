"""One SoftHSM2 for the whole test run.

SoftHSM reads SOFTHSM2_CONF, and sees the tokens of its directory, once per process
(at C_Initialize): a token made later is invisible to a process that already loaded
the module. So the configuration and the test tokens are made before any test runs
(`pytest_configure` in tests/conftest.py), and every test — an API test that adds an
HSM group as much as the HSM suite — uses the same, isolated token directory.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from tests.integration.keys.hsm_support import PIN, SECRET_TOKEN, TOKEN, SoftHsm, init_token, softhsm_available

SETUP: SoftHsm | None = None
UNAVAILABLE: str | None = None


def prepare() -> None:
    """Write a configuration, initialise the test tokens, export SOFTHSM2_CONF."""
    global SETUP, UNAVAILABLE
    UNAVAILABLE = softhsm_available()
    root = Path(tempfile.mkdtemp(prefix="certpilot-softhsm-"))
    token_dir = root / "tokens"
    token_dir.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # never the machine's own tokens, in this process or its children
    if UNAVAILABLE is not None:
        return
    secret_pin = f"Pin-{secrets.token_hex(12)}"
    init_token(conf, TOKEN, PIN)
    init_token(conf, SECRET_TOKEN, secret_pin)
    SETUP = SoftHsm(conf=conf, token_dir=token_dir, secret_pin=secret_pin)
