"""Starting certpilot as a user does, for every suite: the installed console script, a
free port on loopback, and the environment a child gets (this run's CERTPILOT_* settings
removed, the test's own put in). One copy here; the suites' harnesses (tests/e2e/cli/
cli_harness.py, tests/e2e/web/web_harness.py, tests/integration/api/api_support.py,
tests/integration/reconciler/reconciler_support.py) import these names and re-export them."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from certpilot.config import Settings


def certpilot_executable() -> str:
    """The `certpilot` console script installed beside this Python (fails the test without it)."""
    candidate = Path(sys.prefix) / "bin" / "certpilot"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("certpilot", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("the certpilot console script is not installed next to this Python")
    return found


def certpilot_argv() -> list[str]:
    """argv[0:] that runs certpilot: the console script, else `python -m certpilot`."""
    script = Path(sys.executable).with_name("certpilot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certpilot"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_without_settings() -> dict[str, str]:
    """This process's environment without any CERTPILOT_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """A child's environment naming `settings`' data dir and database, with a 1 s
    reconcile interval unless `overrides` say otherwise."""
    env = env_without_settings()
    env.update(
        CERTPILOT_DATA_DIR=str(settings.data_dir),
        CERTPILOT_DATABASE_URL=settings.effective_database_url,
        CERTPILOT_RECONCILE_INTERVAL_S="1",
    )
    env.update(overrides)
    return env
