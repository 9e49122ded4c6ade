"""Helpers for the browser tests of the web UI.

A `WebServer` is the real `certpilot serve` process on a free port, started on a
data dir made by `certpilot init --demo` (run in the test process) and seeded through
the service layer. The page
helpers drive the UI the way a person does: by labels, roles and button names.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from certpilot.pki.local_ca import LocalCA, create_local_ca
from tests.support.cli import EXAMPLE_ISSUER, run_in_process
from tests.support.processes import certpilot_executable
from tests.support.script_access import share_with_scripts

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-output" / "screenshots"
DOCS_SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 860}

SERVER_START_TIMEOUT_S = 45
SERVER_STOP_TIMEOUT_S = 20

# Seeded through the CLI before the server starts (see conftest.web_server).
SEED_SCRIPT = "seed-local-ca"
SEED_PROFILE = "cli-corp"
SEED_CERT = "cli-web1"
VIEWER = "viewer1"
VIEWER_PASSWORD = "viewer-password-123"
SESSION_COOKIE = "certpilot_session"




def clean_env(data_dir: Path) -> dict[str, str]:
    """The inherited environment without any CERTPILOT_* setting, plus our data dir
    (SQLite in the data dir is the default database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env.update({
        "CERTPILOT_DATA_DIR": str(data_dir),
        "CERTPILOT_RECONCILE_INTERVAL_S": "5",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_cli(env: dict[str, str], *args: str) -> str:
    """`certpilot ARGS` with `env`'s CERTPILOT_* settings (in this process: see
    tests/support/cli.py); its stdout, or the test fails with what it printed."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CERTPILOT_")}
    overrides.update({k: v for k, v in env.items() if k.startswith("CERTPILOT_")})
    returncode, out, err = run_in_process(args, overrides, Path.cwd())
    if returncode != 0:
        pytest.fail(f"$ certpilot {' '.join(args)}\nexit {returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return out


def make_ca(directory: Path, name: str = "Web Test CA") -> LocalCA:
    """A test CA whose files a script may read once its profile grants `directory`
    (scripts run sandboxed as another user: the key is made readable to it)."""
    ca = create_local_ca(directory, name, dt.datetime.now(dt.timezone.utc))
    share_with_scripts(directory)
    ca.key_path.chmod(0o644)
    return ca


@dataclass
class WebServer:
    """A running `certpilot serve` and what the tests need to know about it."""

    url: str
    data_dir: Path
    work: Path
    env: dict[str, str]
    admin_password: str
    ca: LocalCA
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def start_server(work: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = work / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [certpilot_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"certpilot serve exited with {proc.returncode} before answering /healthz:\n"
                        f"{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return proc, log_path
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    stop_server(proc)
    pytest.fail(f"certpilot serve did not answer {url} within {SERVER_START_TIMEOUT_S} s:\n"
                f"{log_path.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then, if it hangs, SIGKILL to the process
    group this test started (the server and its issuer workers)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # issuer workers left behind in the group the server led
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def seed(data_dir: Path, ca: LocalCA) -> None:
    """Script `seed-local-ca`, profile `cli-corp` and the pending certificate `cli-web1`,
    through the service layer (a CLI call per object costs seconds of start-up)."""
    from certpilot.config import Settings
    from certpilot.domain.model import ProfileParam, make_subject
    from certpilot.services import certificates, profiles, scripts
    from certpilot.services.app import App

    settings = Settings(data_dir=data_dir, database_url=None, master_key_file=None)
    with App(settings) as app:
        scripts.add_script(app, SEED_SCRIPT, EXAMPLE_ISSUER.read_text(), actor="test:seed")
        profiles.create_profile(app, SEED_PROFILE, script=SEED_SCRIPT, actor="test:seed", params=[
            ProfileParam("ca_cert", ca.cert_path.read_text()),
            ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
            ProfileParam("ca_key_password", ca.password, sensitive=True),
            ProfileParam("validity_days", "90"),
            ProfileParam("cost_center", None, dynamic=True),
        ])
        certificates.request_certificate(
            app, SEED_CERT, profile=SEED_PROFILE, actor="test:seed",
            subject=make_subject("cli-web1.example.test", "Example", country="DE"),
            subject_alt_names=["DNS:www.cli-web1.example.test"], dynamic_params={"cost_center": "CC-1"},
        )


def wait_until_issued(server: WebServer, name: str, timeout_s: float = 60) -> None:
    state = http_login(server.url, "admin", server.admin_password)
    cookie = state["cookies"][0]
    request = urllib.request.Request(f"{server.url}/certificates/{name}",
                                     headers={"Cookie": f"{cookie['name']}={cookie['value']}"})
    deadline = time.monotonic() + timeout_s
    html = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as resp:
            html = resp.read().decode()
        if re.search(r"<h1>[^<]*<span class=\"badge issued\">", html):
            return
        time.sleep(0.25)
    pytest.fail(f"the renewal loop did not issue {name} within {timeout_s} s:\n{html[-3000:]}\n{server.log()}")


# --- screenshots ---------------------------------------------------------------

def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def publish_screenshot(source: Path, name: str) -> Path:
    """Copy a screenshot to docs/screenshots (shown in the README) only when asked with
    CERTPILOT_UPDATE_DOC_SCREENSHOTS=1, so that a test run leaves the work tree clean."""
    if os.environ.get("CERTPILOT_UPDATE_DOC_SCREENSHOTS") != "1":
        return source
    DOCS_SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    target = DOCS_SCREENSHOT_DIR / name
    shutil.copyfile(source, target)
    return target


# --- page helpers ----------------------------------------------------------------

def login(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto("/login")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()


def flash_ok(page):  # type: ignore[no-untyped-def]
    return page.locator(".flash.ok")


def fact(page, label: str):  # type: ignore[no-untyped-def]
    """The <dd> after the <dt> with exactly this text (the facts lists of detail pages)."""
    return page.locator("dl.facts dt", has_text=re.compile(rf"^{re.escape(label)}$")).locator(
        "xpath=following-sibling::dd[1]")


@dataclass(frozen=True)
class Param:
    name: str
    value: str = ""
    sensitive: bool = False
    dynamic: bool = False


def add_script(page, name: str, source: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto("/scripts")
    form = page.locator("form[action='/scripts']")
    form.get_by_label("Name").fill(name)
    form.get_by_label("…or paste the source").fill(source)
    form.get_by_role("button", name="Add script").click()
    expect(page).to_have_url(re.compile(rf"/scripts/{re.escape(name)}$"))
    expect(flash_ok(page)).to_contain_text(f"Script {name} added.")


def fill_profile_form(page, name: str, script: str, params: Iterable[Param],  # type: ignore[no-untyped-def]
                      allow_read: Iterable[str] = ()) -> None:
    """On /profiles/new: name, script, one row per param ("Add parameter" for more rows),
    and the paths the script may read."""
    from playwright.sync_api import expect

    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Script", exact=True).select_option(script)
    for i, p in enumerate(params):
        rows = page.locator("#param-rows tr[data-row]")
        if rows.count() <= i:
            page.get_by_role("button", name="Add parameter").click()
            expect(rows).to_have_count(i + 1)
            # the new row takes the focus, so a keyboard user can type straight on
            expect(page.locator(f"#param_name_{i}")).to_be_focused()
        page.locator(f"#param_name_{i}").fill(p.name)
        if p.sensitive:
            page.locator(f"#param_sensitive_{i}").check()
            expect(page.locator(f"#param_value_{i}")).to_have_attribute("type", "password")
        if p.dynamic:
            page.locator(f"#param_dynamic_{i}").check()
        if p.value:
            page.locator(f"#param_value_{i}").fill(p.value)
    if allow_read:
        page.get_by_label("Allowed read paths").fill("\n".join(allow_read))


def create_profile(page, name: str, script: str, params: Iterable[Param]) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto("/profiles/new")
    fill_profile_form(page, name, script, params)
    page.get_by_role("button", name="Create profile").click()
    expect(page).to_have_url(re.compile(rf"/profiles/{re.escape(name)}$"))
    expect(flash_ok(page)).to_contain_text(f"Profile {name} created.")


def ca_params(ca: LocalCA, *, extra: Iterable[Param] = ()) -> list[Param]:
    return [
        Param("ca_cert_path", str(ca.cert_path)),
        Param("ca_key_path", str(ca.key_path)),
        Param("validity_days", "90"),
        Param("ca_key_password", ca.password, sensitive=True),
        *extra,
    ]


def dyn_input(page, profile: str, param: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[id="dyn_{profile}_{param}"]')


def table_names(page, path: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The names in the first column of a list page (/certificates, /profiles, /scripts)."""
    page.goto(path)
    return set(page.locator("table tbody tr td:first-child a").all_inner_texts())


@dataclass
class SecretWatch:
    """Checks that no secret is in the HTML of any page seen, and remembers the URLs
    of the pages loaded so they can be fetched again at the end."""

    secrets: tuple[str, ...]
    checked: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def attach(self, page) -> None:  # type: ignore[no-untyped-def]
        page.on("framenavigated", lambda frame: self.loaded.append(frame.url) if frame.parent_frame is None else None)

    def check(self, page, what: str = "") -> None:  # type: ignore[no-untyped-def]
        html = page.content()
        self.checked.append(page.url)
        for secret in self.secrets:
            assert secret not in html, f"a sensitive value is in the HTML of {page.url} {what}"


def csrf_token(page) -> str:  # type: ignore[no-untyped-def]
    """The CSRF token of the page's session, scraped from a form (the Log out form has one)."""
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert token, f"no CSRF token on {page.url}"
    return str(token)


def delete_certificates(page, names: Iterable[str]) -> None:  # type: ignore[no-untyped-def]
    """Clean-up after a test that created what it should not have (so the others, and the
    screenshots, do not see it)."""
    for name in names:
        page.goto(f"/certificates/{name}")
        page.request.post(f"/certificates/{name}/delete", form={"csrf": csrf_token(page)})


def http_login(base_url: str, username: str, password: str) -> dict:
    """Log in with plain HTTP and return a Playwright storage state holding the session
    cookie, so a test that is not about logging in starts logged in (a browser login costs
    a second per test). The cookie's attributes are checked by a test that logs in itself."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base_url}/login", timeout=15) as resp:
        html = resp.read().decode()
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on /login"
    form = urllib.parse.urlencode({"csrf": found.group(1), "username": username, "password": password,
                                   "next": "/"}).encode()
    with opener.open(f"{base_url}/login", data=form, timeout=15) as resp:
        assert resp.status == 200 and urllib.parse.urlparse(resp.url).path == "/", resp.url
    cookie = next(c for c in jar if c.name == SESSION_COOKIE)
    return {"cookies": [{"name": cookie.name, "value": cookie.value or "", "domain": "127.0.0.1", "path": "/",
                         "expires": -1, "httpOnly": True, "secure": False, "sameSite": "Strict"}],
            "origins": []}


def session_is_live(base_url: str, state: dict) -> bool:
    """Whether the server still takes the session cookie of `state` (from `http_login`)."""
    cookie = state["cookies"][0]
    request = urllib.request.Request(f"{base_url}/", headers={"Cookie": f"{cookie['name']}={cookie['value']}"})
    with urllib.request.urlopen(request, timeout=15) as resp:
        return not resp.url.split("?")[0].endswith("/login")


def renew_now(page) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """Click "Renew now" on a certificate page; the flash shown and the revision after it."""
    page.get_by_role("button", name="Renew now").click()
    page.wait_for_load_state()
    flashes = " / ".join(page.locator(".flash").all_inner_texts())
    text = fact(page, "Revision").inner_text().strip()
    return flashes, int(text) if text.isdigit() else 0


def wait_for_revision(page, name: str, at_least: int, timeout_s: float = 30) -> int:  # type: ignore[no-untyped-def]
    """Reload the certificate page until it serves revision `at_least` or later (whoever
    issued it: the click or the renewal loop it woke)."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(f"/certificates/{name}")
        text = fact(page, "Revision").inner_text().strip()
        if text.isdigit() and int(text) >= at_least:
            return int(text)
        if time.monotonic() > deadline:
            phase = page.locator("h1 .badge").inner_text().strip()
            raise AssertionError(f"{name} is {phase} at revision {text}, not at {at_least} or later; "
                                 f"last error: {fact(page, 'Last error').inner_text()}")
        page.wait_for_timeout(300)


def check_issued(page, name: str, revision: int, problems: list[str], what: str) -> int:  # type: ignore[no-untyped-def]
    """After a click that issues: the page should say "Revision N of NAME issued." and show
    it. If not, note the problem (the caller fails at its end, so the rest of its flow still
    runs) and wait for the revision to be served; returns the revision served."""
    page.wait_for_load_state()
    flashes = " / ".join(page.locator(".flash").all_inner_texts())
    shown = fact(page, "Revision").inner_text().strip()
    phase = page.locator("h1 .badge").inner_text().strip()
    want = f"Revision {revision} of {name} issued."
    if flashes == want and shown == str(revision) and phase == "issued":
        return revision
    problems.append(f"{what}: {phase} at revision {shown}, flash {flashes!r}; expected {want!r} "
                    "(see test_renew_now_adds_exactly_one_revision)")
    return wait_for_revision(page, name, at_least=revision)
