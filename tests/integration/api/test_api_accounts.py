"""Accounts under abuse (issue 12): token lineage, server-side web sessions, and the
user lifecycle (disable, enable, remove, new password, log out everywhere), as a
user hits them over HTTP. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import re

import httpx
from fastapi.testclient import TestClient

from certpilot.domain.model import Role
from certpilot.server import create_server
from certpilot.services.app import App
from certpilot.services.users import add_user, create_token
from tests.support.api import ACTOR, PASSWORD, MovableClock, RoleTokens, assert_problem, bearer

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
SESSION_COOKIE = "certpilot_session"


def mint(client: TestClient, parent: str, **body: object) -> httpx.Response:
    return client.post("/api/v1/tokens", headers=bearer(parent), json={"name": "child", **body})


def works(client: TestClient, token: str) -> bool:
    r = client.get("/api/v1/scripts", headers=bearer(token))
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


# --- tokens made with tokens -----------------------------------------------------------


def test_a_token_made_with_a_token_expires_no_later_than_its_parent(
    api_app: App, client: TestClient, clock: MovableClock, tokens: RoleTokens
) -> None:
    parent, parent_info = create_token(api_app, "operator", name="day", expires_in_days=1, actor=ACTOR)
    forever = mint(client, parent)  # asks for no expiry at all
    longer = mint(client, parent, expires_in_days=30)
    for r in (forever, longer):
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"] is not None
        assert dt.datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00")) <= parent_info.expires_at
        assert r.json()["parent_id"] == parent_info.id
        assert works(client, r.json()["token"])
    grandchild = mint(client, forever.json()["token"], expires_in_days=3650)
    assert grandchild.status_code == 201, grandchild.text

    clock.advance(dt.timedelta(days=1, seconds=1))
    for token in (parent, forever.json()["token"], longer.json()["token"], grandchild.json()["token"]):
        assert not works(client, token), "a token outlived the token that made it"
    assert works(client, tokens[OPERATOR])


def test_a_token_made_with_a_token_carries_no_more_than_its_parents_role(
    api_app: App, client: TestClient, tokens: RoleTokens
) -> None:
    narrowed = client.post("/api/v1/tokens", headers=tokens.headers(ADMIN), json={"name": "ro", "role": "viewer"})
    assert (narrowed.status_code, narrowed.json()["role"]) == (201, "viewer"), narrowed.text
    viewer_token = narrowed.json()["token"]
    assert_problem(client.get("/api/v1/users", headers=bearer(viewer_token)), 403, "admin")

    # it cannot mint its way back up
    assert_problem(mint(client, viewer_token, role="admin"), 422, "viewer")
    assert_problem(mint(client, viewer_token, role="operator"), 422, "viewer")
    child = mint(client, viewer_token)
    assert (child.status_code, child.json()["role"]) == (201, "viewer"), child.text
    assert_problem(client.get("/api/v1/users", headers=bearer(child.json()["token"])), 403, "admin")
    assert_problem(client.post("/api/v1/users", headers=bearer(child.json()["token"]),
                               json={"username": "sneaky", "role": "admin", "password": PASSWORD}), 403)
    # nor above its user's role, with a password or a token
    assert_problem(client.post("/api/v1/tokens", headers=tokens.headers(OPERATOR), json={"role": "admin"}),
                   422, "operator")


def test_a_token_made_with_a_token_dies_with_it(api_app: App, client: TestClient, tokens: RoleTokens) -> None:
    parent, parent_info = create_token(api_app, "viewer", name="parent", actor=ACTOR)
    child = mint(client, parent).json()["token"]
    grandchild = mint(client, child).json()["token"]
    sibling, _ = create_token(api_app, "viewer", name="unrelated", actor=ACTOR)
    assert all(works(client, t) for t in (parent, child, grandchild, sibling))

    r = client.delete(f"/api/v1/tokens/{parent_info.id}", headers=bearer(parent))  # a token may revoke itself
    assert r.status_code == 204, r.text
    assert not any(works(client, t) for t in (parent, child, grandchild))
    assert works(client, sibling) and works(client, tokens[VIEWER])
    listed = {t["id"]: t for t in client.get("/api/v1/tokens", headers=tokens.headers(ADMIN)).json()}
    assert all(t["revoked_at"] for t in listed.values() if t["parent_id"] is not None)


# --- web sessions and the user lifecycle ----------------------------------------------------


def web_login(api_app: App, username: str, password: str) -> TestClient:
    """A browser of its own, logged in through the login form."""
    browser = TestClient(create_server(api_app))
    page = browser.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    r = browser.post("/login", data={"csrf": csrf.group(1), "username": username, "password": password, "next": "/"},
                     follow_redirects=False)
    assert r.status_code == 303, r.text
    assert browser.cookies.get(SESSION_COOKIE)
    return browser


def cookie_reads_api(api_app: App, cookie: str) -> bool:
    """What an attacker holding a copy of the cookie gets from the API."""
    with TestClient(create_server(api_app)) as thief:
        thief.cookies.set(SESSION_COOKIE, cookie)
        r = thief.get("/api/v1/certificates")
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def form_csrf(browser: TestClient, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', browser.get(path).text)
    assert found
    return found.group(1)


def test_logout_ends_the_session_on_the_server(api_app: App, client: TestClient, tokens: RoleTokens) -> None:
    browser = web_login(api_app, "viewer", PASSWORD)
    copied = browser.cookies[SESSION_COOKIE]
    assert cookie_reads_api(api_app, copied)
    r = browser.post("/logout", data={"csrf": form_csrf(browser)}, follow_redirects=False)
    assert r.status_code == 303
    assert not cookie_reads_api(api_app, copied), "a copied cookie kept reading the API after logout"
    page = TestClient(create_server(api_app))
    page.cookies.set(SESSION_COOKIE, copied)
    assert page.get("/", follow_redirects=False).status_code == 303  # the pages say: log in


def test_logging_in_again_ends_the_browsers_previous_session(api_app: App, client: TestClient,
                                                              tokens: RoleTokens) -> None:
    browser = web_login(api_app, "viewer", PASSWORD)
    copied = browser.cookies[SESSION_COOKIE]
    r = browser.post("/login", data={"csrf": form_csrf(browser), "username": "viewer", "password": PASSWORD,
                                     "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert browser.cookies[SESSION_COOKIE] != copied
    assert cookie_reads_api(api_app, browser.cookies[SESSION_COOKIE])
    assert not cookie_reads_api(api_app, copied), "the session before the new login stayed live on the server"


def test_disable_ends_every_session_and_token_and_enable_does_not_revive_them(
    api_app: App, client: TestClient, tokens: RoleTokens
) -> None:
    add_user(api_app, "alice", OPERATOR, PASSWORD, actor=ACTOR)
    token, _ = create_token(api_app, "alice", actor=ACTOR)
    cookie = web_login(api_app, "alice", PASSWORD).cookies[SESSION_COOKIE]
    assert works(client, token) and cookie_reads_api(api_app, cookie)

    r = client.post("/api/v1/users/alice/disable", headers=tokens.headers(ADMIN))
    assert (r.status_code, r.json()["disabled"]) == (200, True), r.text
    assert not works(client, token) and not cookie_reads_api(api_app, cookie)
    basic = httpx.BasicAuth("alice", PASSWORD)
    assert_problem(client.post("/api/v1/tokens", auth=basic, json={}), 401)

    r = client.post("/api/v1/users/alice/enable", headers=tokens.headers(ADMIN))
    assert (r.status_code, r.json()["disabled"]) == (200, False), r.text
    assert not works(client, token) and not cookie_reads_api(api_app, cookie), "enable revived an ended session"
    assert client.post("/api/v1/tokens", auth=basic, json={}).status_code == 201


def test_a_new_password_ends_every_session_and_token(api_app: App, client: TestClient, tokens: RoleTokens) -> None:
    add_user(api_app, "bob", VIEWER, PASSWORD, actor=ACTOR)
    token, _ = create_token(api_app, "bob", actor=ACTOR)
    cookie = web_login(api_app, "bob", PASSWORD).cookies[SESSION_COOKIE]
    new_password = "a-brand-new-password-456"

    assert_problem(client.put("/api/v1/users/bob/password", headers=tokens.headers(OPERATOR),
                              json={"password": new_password}), 403, "admin")
    assert_problem(client.put("/api/v1/users/bob/password", headers=tokens.headers(ADMIN),
                              json={"password": "short"}), 422)
    r = client.put("/api/v1/users/bob/password", headers=tokens.headers(ADMIN), json={"password": new_password})
    assert r.status_code == 200, r.text
    assert not works(client, token) and not cookie_reads_api(api_app, cookie)
    assert_problem(client.post("/api/v1/tokens", auth=("bob", PASSWORD), json={}), 401)
    assert client.post("/api/v1/tokens", auth=("bob", new_password), json={}).status_code == 201


def test_remove_deletes_the_user_with_their_tokens(api_app: App, client: TestClient, tokens: RoleTokens) -> None:
    add_user(api_app, "carol", VIEWER, PASSWORD, actor=ACTOR)
    token, _ = create_token(api_app, "carol", actor=ACTOR)
    cookie = web_login(api_app, "carol", PASSWORD).cookies[SESSION_COOKIE]
    assert client.delete("/api/v1/users/carol", headers=tokens.headers(ADMIN)).status_code == 204
    assert not works(client, token) and not cookie_reads_api(api_app, cookie)
    assert "carol" not in [u["username"] for u in client.get("/api/v1/users", headers=tokens.headers(ADMIN)).json()]
    assert_problem(client.delete("/api/v1/users/carol", headers=tokens.headers(ADMIN)), 404)
    # a new user of the same name does not inherit anything
    add_user(api_app, "carol", VIEWER, PASSWORD, actor=ACTOR)
    assert not works(client, token) and not cookie_reads_api(api_app, cookie)


def test_the_last_enabled_admin_cannot_be_disabled_or_removed(client: TestClient, tokens: RoleTokens) -> None:
    admin = tokens.headers(ADMIN)
    assert_problem(client.post("/api/v1/users/admin/disable", headers=admin), 409, "last")
    assert_problem(client.delete("/api/v1/users/admin", headers=admin), 409, "last")
    assert client.get("/api/v1/users", headers=admin).status_code == 200


def test_log_out_everywhere_ends_every_session_and_token_of_the_caller_only(
    api_app: App, client: TestClient, tokens: RoleTokens
) -> None:
    browsers = [web_login(api_app, "operator", PASSWORD) for _ in range(2)]
    cookies = [b.cookies[SESSION_COOKIE] for b in browsers]
    spare, _ = create_token(api_app, "operator", actor=ACTOR)
    others = web_login(api_app, "viewer", PASSWORD).cookies[SESSION_COOKIE]

    r = client.post("/api/v1/logout-everywhere", headers=bearer(spare))
    assert r.status_code == 200 and r.json() == {"sessions_ended": 2, "tokens_revoked": 2}, r.text
    assert not any(cookie_reads_api(api_app, c) for c in cookies)
    assert not works(client, spare) and not works(client, tokens[OPERATOR])
    assert cookie_reads_api(api_app, others) and works(client, tokens[VIEWER])

    # and from the account page of a browser
    browser = web_login(api_app, "viewer", PASSWORD)
    r = browser.post("/account/logout-everywhere", data={"csrf": form_csrf(browser, "/account")},
                     follow_redirects=False)
    assert r.status_code == 303
    assert not cookie_reads_api(api_app, others) and not works(client, tokens[VIEWER])


def test_too_many_wrong_current_passwords_answer_429_with_retry_after(api_app: App, tokens: RoleTokens) -> None:
    """The change-password page is throttled like the login page: 429 with Retry-After, not 422."""
    browser = web_login(api_app, "viewer", PASSWORD)
    statuses = []
    for _ in range(4):  # two free failures, a third that starts the wait, a fourth within it
        r = browser.post("/account/password", data={"csrf": form_csrf(browser, "/account"),
                                                     "current_password": "wrong", "new_password": "x" * 20},
                         follow_redirects=False)
        statuses.append(r.status_code)
    assert statuses == [422, 422, 422, 429], statuses
    assert int(r.headers["Retry-After"]) >= 1
    assert "Too many" in r.text
