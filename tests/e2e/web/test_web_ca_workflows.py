"""CA workflows in the web UI: the profile form sets how long a CA may hold a deferred
request (`max_pending_days`, as the CLI and API do), and an admin sees the key names of
the profile's script state (`context.state`) on its page, never the values; a viewer
sees neither."""

from __future__ import annotations

import json
import re
import uuid

from playwright.sync_api import expect

from tests.support.web import SecretWatch, WebServer, add_script, flash_ok, run_cli

SCRIPT = "web-deferring-ca"
PROFILE = "web-deferring"

# keeps an account key and a counter in context.state, then asks to be polled later
DEFERRING_SOURCE = '''from certpilot.issuer import Pending

def certificate_request(csr, common_name, args_dict, context):
    context.state["account_key"] = args_dict["account_key"][::-1]
    context.state["submissions"] = str(int(context.state.get("submissions", "0")) + 1)
    raise Pending(retry_after_s=3600, cookie="request-1")

def certificate_poll(cookie, args_dict, context):
    raise Pending(retry_after_s=3600)
'''


def _create_profile(page, name: str, account_key: str,  # type: ignore[no-untyped-def]
                    max_pending_days: str | None = None) -> None:
    page.goto("/profiles/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Script", exact=True).select_option(SCRIPT)
    page.locator("#param_name_0").fill("account_key")
    page.locator("#param_sensitive_0").check()
    page.locator("#param_value_0").fill(account_key)
    if max_pending_days is not None:
        page.get_by_label("Days a CA may hold a request").fill(max_pending_days)
    page.get_by_role("button", name="Create profile").click()
    expect(page).to_have_url(re.compile(rf"/profiles/{name}$"))


def _script(page) -> None:  # type: ignore[no-untyped-def]
    if page.request.get(f"/scripts/{SCRIPT}").status != 200:
        add_script(page, SCRIPT, DEFERRING_SOURCE)


def test_max_pending_days_in_the_profile_form(  # type: ignore[no-untyped-def]
    admin_page, viewer_page, web_server: WebServer
) -> None:
    page = admin_page
    _script(page)
    page.goto("/profiles/new")
    expect(page.get_by_label("Days a CA may hold a request")).to_have_value("30")  # the default

    _create_profile(page, PROFILE, "k" * 40, max_pending_days="5")
    expect(page.get_by_label("Days a CA may hold a request")).to_have_value("5")
    assert json.loads(run_cli(web_server.env, "profile", "show", PROFILE, "--json"))["max_pending_days"] == 5

    page.get_by_label("Days a CA may hold a request").fill("7")
    page.get_by_role("button", name="Save profile").click()
    expect(flash_ok(page)).to_contain_text(f"Profile {PROFILE} saved.")
    assert json.loads(run_cli(web_server.env, "profile", "show", PROFILE, "--json"))["max_pending_days"] == 7
    viewer_page.goto(f"/profiles/{PROFILE}")
    expect(viewer_page.get_by_label("Days a CA may hold a request")).to_have_value("7")


def test_admins_see_the_script_state_key_names_never_the_values(  # type: ignore[no-untyped-def]
    admin_page, viewer_page, web_server: WebServer
) -> None:
    page = admin_page
    profile = f"{PROFILE}-state"
    account_key = f"acct-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    watch = SecretWatch(secrets=(account_key, account_key[::-1]))
    watch.attach(page)
    _script(page)
    _create_profile(page, profile, account_key)
    expect(page.get_by_role("heading", name="Script state")).to_be_visible()
    expect(page.get_by_text("The script has stored nothing.")).to_be_visible()

    run_cli(web_server.env, "cert", "request", "web-deferred", "--profile", profile, "--cn", "deferred.example.test",
            "--wait")
    page.goto(f"/profiles/{profile}")
    expect(page.locator("ul.state-keys li")).to_have_text(["account_key", "submissions"])
    watch.check(page, "(profile page with script state)")

    viewer_page.goto(f"/profiles/{profile}")
    expect(viewer_page.get_by_role("heading", name="Script state")).to_have_count(0)
    expect(viewer_page.locator("ul.state-keys")).to_have_count(0)
