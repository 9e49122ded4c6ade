"""Roles, CSRF, the session cookie and the security headers, seen from a browser."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect

from tests.support.web import (
    SEED_CERT,
    SEED_PROFILE,
    SEED_SCRIPT,
    SESSION_COOKIE,
    VIEWER,
    WebServer,
    csrf_token,
    fact,
    login,
    table_names,
)

ADMIN_CONTROLS = {  # page -> buttons or links an admin has there and a viewer must not
    "/certificates": ["New certificate"],
    f"/certificates/{SEED_CERT}": ["Renew now", "Export private key", "Delete certificate"],
    "/scripts": ["Add script"],
    f"/scripts/{SEED_SCRIPT}": ["Run the script", "Save (checks the syntax first)", "Remove script"],
    "/profiles": ["New profile"],
    f"/profiles/{SEED_PROFILE}": ["Save profile", "Remove profile", "Add parameter"],
}
ADMIN_ONLY_PAGES = ["/users", "/certificates/new", "/profiles/new"]
VALID_SOURCE = "def certificate_request(csr, common_name, args_dict):\n    return ''\n"


def _controls(page, name: str):  # type: ignore[no-untyped-def]
    return page.get_by_role("button", name=name, exact=True).or_(page.get_by_role("link", name=name, exact=True))


def test_admin_has_the_controls_a_viewer_lacks(admin_page) -> None:  # type: ignore[no-untyped-def]
    """The other half of the viewer test: the controls it looks for do exist."""
    page = admin_page
    for path, names in ADMIN_CONTROLS.items():
        page.goto(path)
        for name in names:
            expect(_controls(page, name), f"{name!r} on {path}").to_be_visible()
    for path in ADMIN_ONLY_PAGES:
        assert page.goto(path).status == 200, path


def test_viewer_sees_no_admin_actions(viewer_page) -> None:  # type: ignore[no-untyped-def]
    page = viewer_page
    page.goto("/")
    expect(page.get_by_role("banner")).to_contain_text(f"{VIEWER} (viewer)")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Users & tokens")).to_have_count(0)
    for path, names in ADMIN_CONTROLS.items():
        response = page.goto(path)
        assert response.status == 200, path
        for name in names:
            expect(_controls(page, name), f"{name!r} on {path}").to_have_count(0)
    # what a viewer may do is there
    page.goto(f"/certificates/{SEED_CERT}")
    expect(page.get_by_role("link", name="Full chain")).to_be_visible()
    page.goto(f"/profiles/{SEED_PROFILE}")
    expect(page.locator("#param_name_0")).to_have_attribute("readonly", "")
    expect(page.locator("#param_sensitive_0")).to_be_disabled()
    for path in ADMIN_ONLY_PAGES:
        response = page.goto(path)
        assert response.status == 403, f"{path} answered a viewer with {response.status}"
        expect(page.get_by_role("alert")).to_contain_text("role")


def test_viewer_forged_posts_are_refused(viewer_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = viewer_page
    page.goto(f"/certificates/{SEED_CERT}")
    revision = fact(page, "Revision").inner_text()
    token = csrf_token(page)
    scripts_before = table_names(page, "/scripts")
    profiles_before = table_names(page, "/profiles")
    certs_before = table_names(page, "/certificates")

    forged = {
        f"/certificates/{SEED_CERT}/renew": {"form": {"csrf": token}},
        "/scripts": {"multipart": {"csrf": token, "name": "forged", "timeout_s": "60", "source": VALID_SOURCE}},
        f"/scripts/{SEED_SCRIPT}": {"form": {"csrf": token, "timeout_s": "60", "source": VALID_SOURCE}},
        "/profiles": {"form": {"csrf": token, "name": "forged", "script": SEED_SCRIPT, "param_count": "0"}},
        "/certificates": {"form": {"csrf": token, "name": "forged", "profile": SEED_PROFILE,
                                   "common_name": "forged.example.test", "dyn.cli-corp.cost_center": "x"}},
        f"/certificates/{SEED_CERT}/export-key": {"form": {"csrf": token, "confirm": "on"}},
        f"/certificates/{SEED_CERT}/delete": {"form": {"csrf": token}},
        "/users": {"form": {"csrf": token, "username": "mallory", "role": "admin", "password": "mallory-password-1"}},
        "/tokens": {"form": {"csrf": token, "username": VIEWER, "label": "forged"}},
    }
    for path, body in forged.items():
        response = page.request.post(path, max_redirects=0, **body)
        assert response.status == 403, f"a viewer's POST {path} answered {response.status}"
        assert "PRIVATE KEY" not in response.text()

    page.goto(f"/certificates/{SEED_CERT}")
    expect(fact(page, "Revision")).to_have_text(revision)
    assert table_names(page, "/scripts") == scripts_before
    assert table_names(page, "/profiles") == profiles_before
    assert table_names(page, "/certificates") == certs_before
    page.goto(f"/events?object={SEED_CERT}&kind=KEY_EXPORTED")
    expect(page.locator("tbody tr").filter(has_text=VIEWER)).to_have_count(0)

    # the token was a good one: the refusals were the role's doing
    response = page.request.post("/logout", form={"csrf": token}, max_redirects=0)
    assert response.status == 303 and response.headers["location"].endswith("/login")


def test_post_without_the_csrf_token_is_refused_even_for_an_admin(admin_page) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    page.goto(f"/certificates/{SEED_CERT}")
    revision = int(fact(page, "Revision").inner_text())
    scripts_before = table_names(page, "/scripts")
    for body in ({"form": {}}, {"form": {"csrf": "not-the-token"}}, {"form": {"csrf": ""}}):
        response = page.request.post(f"/certificates/{SEED_CERT}/renew", max_redirects=0, **body)
        assert response.status == 403, f"renew with {body} answered {response.status}"
        assert "reload the page" in response.text()
    response = page.request.post("/scripts", max_redirects=0,
                                 multipart={"name": "no-csrf", "timeout_s": "60", "source": VALID_SOURCE})
    assert response.status == 403
    response = page.request.post("/users", max_redirects=0,
                                 form={"username": "no-csrf", "role": "admin", "password": "no-csrf-password-1"})
    assert response.status == 403
    assert table_names(page, "/scripts") == scripts_before
    page.goto("/users")
    expect(page.locator("tbody").first).not_to_contain_text("no-csrf")
    page.goto(f"/certificates/{SEED_CERT}")
    expect(fact(page, "Revision")).to_have_text(str(revision))

    # with the token, a POST goes through (a test run of a script: it stores nothing)
    response = page.request.post(f"/scripts/{SEED_SCRIPT}/test", max_redirects=0,
                                 form={"csrf": csrf_token(page), "profile": SEED_PROFILE, "common_name": "t.example.test"})
    assert response.status == 200 and "Test run:" in response.text()
    response = page.request.post(f"/scripts/{SEED_SCRIPT}/test", max_redirects=0,
                                 form={"profile": SEED_PROFILE, "common_name": "t.example.test"})
    assert response.status == 403


def test_session_cookie_is_httponly_and_samesite_strict(page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    login(page, "admin", web_server.admin_password)  # the cookie as the server sets it
    cookies = [c for c in page.context.cookies(web_server.url) if c["name"] == SESSION_COOKIE]
    assert len(cookies) == 1, page.context.cookies()
    cookie = cookies[0]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")


def test_responses_carry_security_headers(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    paths = ["/", "/certificates", f"/certificates/{SEED_CERT}", "/certificates/new", "/profiles",
             f"/profiles/{SEED_PROFILE}", "/profiles/new", "/scripts", f"/scripts/{SEED_SCRIPT}", "/events",
             "/users", "/certificates/no-such-certificate"]
    for path in paths:
        response = page.goto(path)
        headers = response.headers
        csp = headers.get("content-security-policy", "")
        for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
            assert directive in csp, f"{path}: CSP {csp!r} lacks {directive!r}"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, f"{path}: {csp}"
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("x-frame-options") == "DENY", path
        assert headers.get("cache-control") == "no-store", path
    # the login page, before any session
    anonymous = page.context.browser.new_context(base_url=web_server.url)
    try:
        response = anonymous.new_page().goto("/login")
        assert "default-src 'self'" in response.headers.get("content-security-policy", "")
    finally:
        anonymous.close()


CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  const el = e.target && e.target.outerHTML ? e.target.outerHTML.slice(0, 120) : "";
  window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
                              " at line " + e.lineNumber + " " + el);
});
"""


def test_pages_break_no_rule_of_their_own_csp(admin_page) -> None:  # type: ignore[no-untyped-def]
    """An inline style or script the CSP blocks is a page that does not look or work as meant."""
    page = admin_page
    page.add_init_script(CSP_RECORDER)
    violations: dict[str, list[str]] = {}
    for path in ["/", "/certificates", "/certificates/new", f"/certificates/{SEED_CERT}", "/profiles",
                 "/profiles/new", f"/profiles/{SEED_PROFILE}", "/scripts", f"/scripts/{SEED_SCRIPT}",
                 "/events", "/users"]:
        page.goto(path)
        page.wait_for_load_state("load")
        page.wait_for_timeout(50)
        found = page.evaluate("window.__cspViolations")
        if found:
            violations[path] = found
    assert not violations, f"CSP violations: {violations}"


def test_api_accepts_the_web_session(admin_page) -> None:  # type: ignore[no-untyped-def]
    """DESIGN §5: every API endpoint requires a Bearer token "(or the web session)"; what
    it shows of a sensitive value is "***"."""
    page = admin_page
    response = page.request.get(f"/api/v1/profiles/{SEED_PROFILE}")
    assert response.status == 200, f"{response.status}: {response.text()}"
    params = {p["name"]: p for p in response.json()["params"]}
    assert params["ca_key_password"] == {"name": "ca_key_password", "value": "***", "sensitive": True,
                                         "dynamic": False}
    response = page.request.get(f"/api/v1/certificates/{SEED_CERT}")
    assert response.status == 200
    assert re.fullmatch(r"\d+", str(response.json()["status"]["revision"]))


def test_admin_key_export_needs_the_confirmation(admin_page) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    page.goto(f"/certificates/{SEED_CERT}")
    confirm = page.get_by_label("I understand that exporting the private key is recorded")
    expect(confirm).not_to_be_checked()
    # the browser will not send the form unticked ...
    assert confirm.evaluate("el => el.required && el.validity.valueMissing")
    # ... and the server refuses it unticked
    response = page.request.post(f"/certificates/{SEED_CERT}/export-key", form={"csrf": csrf_token(page)},
                                 max_redirects=0)
    assert response.status == 303 and "PRIVATE KEY" not in response.text()

    confirm.check()
    dialogs: list[str] = []

    def accept(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    with page.expect_download() as info:
        page.get_by_role("button", name="Export private key").click()
    assert dialogs and "recorded in the audit log" in dialogs[0], dialogs
    download = info.value
    assert download.suggested_filename == f"{SEED_CERT}-key.pem"
    key = serialization.load_pem_private_key(open(download.path(), "rb").read(), password=None)
    leaf = x509.load_pem_x509_certificate(page.request.get(f"/certificates/{SEED_CERT}/download/cert.pem").body())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
    page.goto(f"/events?object={SEED_CERT}&kind=KEY_EXPORTED")
    expect(page.locator("tbody")).to_contain_text("admin")
