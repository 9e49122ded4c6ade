"""Accounts in the browser (issue 12): an admin disables, re-passwords, enables and
removes a user on "Users & tokens", and each step ends that user's open session at
once; a user logs out everywhere from their account page."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.support.web import WebServer, login, run_cli

PASSWORD = "dora-password-123"
NEW_PASSWORD = "dora-new-password-456"


def logged_out(page) -> bool:  # type: ignore[no-untyped-def]
    page.goto("/certificates")
    return page.url.split("?")[0].endswith("/login")


def test_admin_ends_a_users_sessions_from_the_users_page(browser, web_server: WebServer, admin_page,  # type: ignore[no-untyped-def]
                                                         tmp_path) -> None:
    name = f"dora-{uuid.uuid4().hex[:6]}"
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    run_cli(web_server.env, "user", "add", name, "--role", "operator", "--password-file", str(password_file))
    user_ctx = browser.new_context(base_url=web_server.url)
    try:
        dora = user_ctx.new_page()
        login(dora, name, PASSWORD)
        assert not logged_out(dora)

        admin = admin_page
        admin.on("dialog", lambda dialog: dialog.accept())
        admin.goto("/users")
        admin.get_by_role("button", name=f"Disable {name}").click()
        expect(admin.locator(".flash.ok")).to_contain_text(f"User {name} disabled")
        expect(admin.get_by_role("row", name=name)).to_contain_text("disabled")
        assert logged_out(dora), "a disabled user's session went on"

        admin.get_by_label(f"New password for {name}").fill(NEW_PASSWORD)
        admin.get_by_role("row", name=name).get_by_role("button", name="Set password").click()
        expect(admin.locator(".flash.ok")).to_contain_text(f"Password of {name} changed")
        admin.get_by_role("button", name=f"Enable {name}").click()
        expect(admin.get_by_role("row", name=name)).to_contain_text("enabled")

        login(dora, name, NEW_PASSWORD)
        # from the account page: log out everywhere, this browser included
        dora.goto("/account")
        dora.on("dialog", lambda dialog: dialog.accept())
        dora.get_by_role("button", name="Log out everywhere").click()
        expect(dora.get_by_role("heading", name="Log in")).to_be_visible()
        assert logged_out(dora)

        admin.goto("/users")
        admin.get_by_role("button", name=f"Remove {name}").click()
        expect(admin.locator(".flash.ok")).to_contain_text(f"User {name} removed")
        expect(admin.get_by_role("row", name=name)).to_have_count(0)
    finally:
        user_ctx.close()
