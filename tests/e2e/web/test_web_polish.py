"""What the screenshots showed wrong, checked in the browser: the "Key storage" select
shows its whole text, labels are capitalised alike, a time never wraps mid-date, a
certificate that was never issued and failed offers "Retry now" with no expiry
shown, and the browser's `/favicon.ico` request is answered (no console error)."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.processes import certpilot_executable
from tests.support.web import SEED_CERT, WebServer

FAILING_SCRIPT = """\
import sys

def certificate_request(csr, common_name, args_dict):
    sys.stderr.write("CA refused: not today\\n")
    sys.exit(2)
"""

# Width the selected option's text needs in the select's font, against the room it has
SELECT_FITS = """(id) => {
  const select = document.getElementById(id);
  const style = getComputedStyle(select);
  const probe = document.createElement("span");
  probe.style.font = style.font;
  probe.style.whiteSpace = "pre";
  probe.style.position = "absolute";
  probe.textContent = select.options[select.selectedIndex].text;
  document.body.appendChild(probe);
  const needed = probe.getBoundingClientRect().width;
  probe.remove();
  const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
  return {needed, room};
}"""

# Cells holding a time whose text is laid out on more than one line
WRAPPED_TIMES = """() => Array.from(document.querySelectorAll("td.when")).filter(td => {
  const range = document.createRange();
  range.selectNodeContents(td);
  return range.getClientRects().length > 1;
}).map(td => td.textContent)"""


@pytest.fixture(scope="module")
def failed_never_issued(web_server: WebServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    script = tmp_path_factory.mktemp("polish") / "refuse.py"
    script.write_text(FAILING_SCRIPT)

    def cli(*args: object, ok: bool = True) -> None:
        done = subprocess.run([certpilot_executable(), *map(str, args)], env=web_server.env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert (done.returncode == 0) is ok, f"{args}\n{done.stdout}\n{done.stderr}"

    cli("script", "add", "polish-refuse", "--file", script)
    cli("profile", "create", "polish-refuse", "--script", "polish-refuse")
    cli("cert", "request", "polish-failed", "--profile", "polish-refuse", "--cn", "failed.example.test", "--wait",
        ok=False)
    return "polish-failed"


def test_key_storage_select_shows_its_whole_text(admin_page) -> None:  # type: ignore[no-untyped-def]
    admin_page.goto("/certificates/new")
    fit = admin_page.evaluate(SELECT_FITS, "hsm_group")
    assert fit["needed"] <= fit["room"], fit


def test_subject_labels_are_capitalised(admin_page) -> None:  # type: ignore[no-untyped-def]
    admin_page.goto("/certificates/new")
    # a dynamic parameter's input is labelled with the parameter's own name, as its profile spells it
    labels = admin_page.locator("label:not([for^='dyn_'])").all_inner_texts()
    assert "Common name" in labels
    assert [t for t in labels if t and t[0].islower()] == []
    admin_page.goto(f"/certificates/{SEED_CERT}")
    terms = admin_page.locator("dl.facts dt").all_inner_texts()
    assert "Common name" in terms
    assert [t for t in terms if t[:1].islower() and t != "cost_center"] == [], terms


def test_times_do_not_wrap_in_a_narrow_window(admin_page) -> None:  # type: ignore[no-untyped-def]
    admin_page.set_viewport_size({"width": 720, "height": 900})
    for path in (f"/certificates/{SEED_CERT}", "/events", "/certificates"):
        admin_page.goto(path)
        assert admin_page.locator("td.when").count() > 0, path
        assert admin_page.evaluate(WRAPPED_TIMES) == [], path


def test_a_never_issued_failed_certificate_offers_retry(admin_page, failed_never_issued: str) -> None:  # type: ignore[no-untyped-def]
    admin_page.goto(f"/certificates/{failed_never_issued}")
    expect(admin_page.get_by_role("button", name="Retry now")).to_be_visible()
    expect(admin_page.get_by_role("button", name="Renew now")).to_have_count(0)
    expiry = admin_page.locator("dl.facts dt:text-is('Expiry') + dd").inner_text().strip()
    assert expiry == "not issued yet", expiry

    admin_page.goto(f"/certificates/{SEED_CERT}")  # an issued one still says "Renew now"
    expect(admin_page.get_by_role("button", name="Renew now")).to_be_visible()


def test_favicon_is_served_and_no_page_logs_a_console_error(page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"{web_server.url}/favicon.ico", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("image/svg+xml")
        assert resp.read().startswith(b"<svg")
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto("/login")
    page.wait_for_load_state("networkidle")
    assert errors == [] and failed == [], (errors, failed)
