"""Keyboard use of the login form, and a label for every form control of the
new-certificate and profile pages."""

from __future__ import annotations

from collections import Counter

import pytest
from playwright.sync_api import expect

from tests.support.web import SEED_PROFILE, WebServer

FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return "body";
  return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.type ? "[" + el.type + "]" : "")
         + ":" + (el.innerText || el.value || "").trim().slice(0, 30);
}"""

# Every visible-or-not form control (hidden inputs aside) and how it is named, if at all.
UNLABELLED = """() => {
  const out = [];
  document.querySelectorAll("input, select, textarea").forEach(el => {
    if (el.type === "hidden") return;
    const labels = Array.from(el.labels || []).map(l => l.textContent.trim()).filter(Boolean);
    const aria = (el.getAttribute("aria-label") || "").trim();
    const by = (el.getAttribute("aria-labelledby") || "").split(/\\s+/).filter(Boolean)
      .map(id => (document.getElementById(id) || {}).textContent || "").join(" ").trim();
    if (!labels.length && !aria && !by) out.push(el.outerHTML.slice(0, 160));
  });
  return out;
}"""

DUPLICATE_IDS = """() => {
  const seen = {}, dup = [];
  document.querySelectorAll("[id]").forEach(el => { if (seen[el.id]) dup.push(el.id); seen[el.id] = true; });
  return dup;
}"""


def test_login_by_keyboard(page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    expect(page.get_by_label("Username", exact=True)).to_be_focused()  # autofocus
    forward = []
    for _ in range(2):
        page.keyboard.press("Tab")
        forward.append(page.evaluate(FOCUSED))
    assert forward[0].startswith("input#password[password]"), forward
    assert forward[1].startswith("button[submit]:Log in"), forward
    # and from the top of the page, Username is the first field reached: only the skip
    # link and the home link come before it
    page.get_by_label("Username", exact=True).focus()
    backward = []
    for _ in range(2):
        page.keyboard.press("Shift+Tab")
        backward.append(page.evaluate(FOCUSED))
    assert backward == ["a:certpilot", "a:Skip to content"], backward
    assert page.evaluate("document.querySelectorAll('[tabindex]:not([tabindex=\"-1\"])').length") == 0

    # type and submit with Enter
    page.goto("/login")
    expect(page.get_by_label("Username", exact=True)).to_be_focused()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password", exact=True)).to_be_focused()
    page.keyboard.type(web_server.admin_password)
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Log in")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()


def test_wrong_password_is_announced(page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_label("Password", exact=True).press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect(page.get_by_label("Username", exact=True)).to_have_value("admin")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")


@pytest.mark.parametrize("path", ["/certificates/new", "/profiles/new", f"/profiles/{SEED_PROFILE}",
                                  "/certificates/new?bad"])
def test_every_form_control_has_a_label(admin_page, path: str) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    if path == "/certificates/new?bad":  # the form as it comes back with errors
        page.goto("/certificates/new")
        page.get_by_label("Profile", exact=True).select_option(SEED_PROFILE)
        page.get_by_label("Name", exact=True).fill("labels")
        page.get_by_label("Common name").fill("labels.example.test")
        page.get_by_label("Country (2 letters)").fill("DEU")
        page.get_by_label("Subject alternative names").fill("DNS:bad..name")
        page.locator(f'[id="dyn_{SEED_PROFILE}_cost_center"]').fill("CC-1")
        page.get_by_role("button", name="Request certificate").click()
        expect(page.locator("#country-error")).to_be_visible()
    else:
        page.goto(path)
    if path.startswith("/profiles"):
        # rows added in the browser are labelled too
        rows = page.locator("#param-rows tr[data-row]")
        count = rows.count()
        page.get_by_role("button", name="Add parameter").click()
        expect(rows).to_have_count(count + 1)
    assert page.evaluate(UNLABELLED) == [], f"form controls without a label on {path}"
    assert page.evaluate(DUPLICATE_IDS) == [], f"duplicate ids on {path} (a label may point at the wrong input)"

    # the same through Playwright: each label text finds (at least) the controls it names
    names = page.evaluate("""() => Array.from(document.querySelectorAll("input:not([type=hidden]), select, textarea"))
        .map(el => el.labels && el.labels.length ? el.labels[0].textContent.trim() : "")""")
    assert len(names) > 5
    for name, count in Counter(names).items():
        if name:
            assert page.get_by_label(name, exact=True).count() >= count, f"{path}: {name!r}"


def test_added_parameter_rows_are_told_apart(admin_page) -> None:  # type: ignore[no-untyped-def]
    """Each row's remove button says which row it removes, rows added in the browser too."""
    page = admin_page
    page.goto("/profiles/new")
    add = page.get_by_role("button", name="Add parameter")
    add.click()
    add.click()
    rows = page.locator("#param-rows tr[data-row]")
    expect(rows).to_have_count(5)
    names = [rows.nth(i).locator("button[data-remove]").get_attribute("aria-label") for i in range(5)]
    assert names == [f"Remove parameter row {i}" for i in range(1, 6)], names
    # the clones' controls carry their own ids, and their labels follow
    for i in (3, 4):
        for part in ("name", "value", "sensitive", "dynamic"):
            control = page.locator(f"#param_{part}_{i}")
            expect(control).to_have_count(1)
            assert control.get_attribute("name") == f"param_{part}_{i}"
            assert control.evaluate("el => el.labels.length") == 1
