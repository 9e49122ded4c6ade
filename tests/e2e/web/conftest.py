"""Fixtures for the browser tests: one real `certpilot serve` for the session (SQLite),
seeded through the CLI, and a headless Debian Chromium per module driven by Playwright."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.support.processes import free_port
from tests.support.web import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SEED_CERT,
    VIEWER,
    VIEWER_PASSWORD,
    VIEWPORT,
    WebServer,
    clean_env,
    http_login,
    make_ca,
    run_cli,
    seed,
    session_is_live,
    start_server,
    stop_server,
    wait_until_issued,
)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium; no browser is ever downloaded. Missing: skip, or fail under CI=true."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright Python package is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def web_server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """`certpilot init --demo` and `certpilot user add viewer1`; script `seed-local-ca`,
    profile `cli-corp` (with a dynamic `cost_center`) and certificate `cli-web1`, which the
    server's renewal loop issues; then `certpilot serve`."""
    work = tmp_path_factory.mktemp("web")
    data_dir = work / "data"
    env = clean_env(data_dir)

    out = run_cli(env, "init", "--demo")
    found = re.search(r"admin password \(shown once\): (\S+)", out)
    assert found, f"`certpilot init --demo` printed no admin password:\n{out}"
    admin_password = found.group(1)

    password_file = work / "viewer-password"
    password_file.write_text(VIEWER_PASSWORD + "\n")
    run_cli(env, "user", "add", VIEWER, "--role", "viewer", "--password-file", str(password_file))

    ca = make_ca(work / "ca")
    seed(data_dir, ca)

    port = free_port()
    proc, log_path = start_server(work, env, port)
    server = WebServer(url=f"http://127.0.0.1:{port}", data_dir=data_dir, work=work, env=env,
                       admin_password=admin_password, ca=ca, process=proc, log_path=log_path)
    try:
        wait_until_issued(server, SEED_CERT)  # by the server's renewal loop
    except BaseException:
        stop_server(proc)
        raise
    try:
        yield server
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def _sessions(web_server: WebServer) -> dict[str, dict]:
    """Logged-in storage states by user name, shared by the session's tests."""
    return {}


def _live_state(web_server: WebServer, sessions: dict[str, dict], username: str, password: str) -> dict:
    """A storage state whose session the server still honours: the one shared so far,
    unless a test logged it out (then a new login)."""
    state = sessions.get(username)
    if state is None or not session_is_live(web_server.url, state):
        state = sessions[username] = http_login(web_server.url, username, password)
    return state


@pytest.fixture
def admin_state(web_server: WebServer, _sessions: dict[str, dict]) -> dict:
    return _live_state(web_server, _sessions, "admin", web_server.admin_password)


@pytest.fixture
def viewer_state(web_server: WebServer, _sessions: dict[str, dict]) -> dict:
    return _live_state(web_server, _sessions, VIEWER, VIEWER_PASSWORD)


def _new_context(browser, web_server: WebServer, state: dict | None = None):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=web_server.url, viewport=VIEWPORT, accept_downloads=True,
                                  locale="en-GB", timezone_id="UTC", storage_state=state)
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def context(browser, web_server: WebServer) -> Iterator[object]:  # type: ignore[no-untyped-def]
    ctx = _new_context(browser, web_server)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context) -> object:  # type: ignore[no-untyped-def]
    return context.new_page()


def _logged_in_page(browser, web_server: WebServer, state: dict) -> Iterator[object]:  # type: ignore[no-untyped-def]
    ctx = _new_context(browser, web_server, state)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


@pytest.fixture
def admin_page(browser, web_server: WebServer, admin_state: dict) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A page in a fresh context that is logged in as admin (see `http_login`)."""
    yield from _logged_in_page(browser, web_server, admin_state)


@pytest.fixture
def viewer_page(browser, web_server: WebServer, viewer_state: dict) -> Iterator[object]:  # type: ignore[no-untyped-def]
    yield from _logged_in_page(browser, web_server, viewer_state)
