"""Deployment and notifications in the web UI: the profile form takes a deploy root,
command and webhook URL (the URL never reappears in any page, and saving the form
untouched keeps it), a bad deploy root comes back next to its field, and the
certificate page shows the deployed revision and deploys again on "Deploy now"."""

from __future__ import annotations

import json
import re
import uuid

from playwright.sync_api import expect

from tests.support.web import (
    EXAMPLE_ISSUER,
    SecretWatch,
    WebServer,
    add_script,
    ca_params,
    fact,
    fill_profile_form,
    flash_ok,
    make_ca,
    run_cli,
)

SCRIPT = "web-deploy-ca"
PROFILE = "web-deploy"
CERT = "web-deploy-cert"


def test_deploy_settings_in_the_profile_form_and_deploy_now(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    ca = make_ca(web_server.work / "deploy-ca", "Deploy Test CA")
    live = web_server.work / "live"
    live.mkdir()
    log = web_server.work / "deploy-hook.log"
    hook = web_server.work / "deploy-hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$CERTPILOT_CERTIFICATE $CERTPILOT_REVISION" >> {log}\n')
    hook.chmod(0o755)
    token = f"hook-{uuid.uuid4().hex}"
    url = f"http://127.0.0.1:9/hooks/{token}"  # nothing listens: deliveries fail quietly, retried
    watch = SecretWatch(secrets=(token, ca.password))
    watch.attach(page)

    add_script(page, SCRIPT, EXAMPLE_ISSUER.read_text())
    page.goto("/profiles/new")
    fill_profile_form(page, PROFILE, SCRIPT, ca_params(ca), allow_read=[str(ca.cert_path.parent)])
    page.get_by_label("Deploy root").fill("relative/live")
    page.get_by_label("Deploy command").fill(str(hook))
    page.get_by_label("Webhook URL", exact=True).fill(url)
    page.get_by_role("button", name="Create profile").click()
    expect(page.locator("#deploy_root-error")).to_contain_text("not absolute")
    expect(page.get_by_label("Deploy root")).to_have_attribute("aria-invalid", "true")
    watch.check(page, "(form returned with an error)")

    page.get_by_label("Deploy root").fill(str(live))
    page.get_by_label("Webhook URL", exact=True).fill(url)  # write-only: typed again after the error
    for i in range(4):  # the sensitive value is not sent back either
        if page.locator(f"#param_name_{i}").input_value() == "ca_key_password":
            page.locator(f"#param_value_{i}").fill(ca.password)
    page.get_by_role("button", name="Create profile").click()
    expect(page).to_have_url(re.compile(rf"/profiles/{PROFILE}$"))
    expect(page.get_by_label("Deploy root")).to_have_value(str(live))
    expect(page.get_by_label("Webhook URL", exact=True)).to_have_attribute("placeholder", re.compile("stored"))
    watch.check(page, "(profile page)")

    page.get_by_role("button", name="Save profile").click()  # untouched: the stored URL stays
    expect(flash_ok(page)).to_contain_text(f"Profile {PROFILE} saved.")
    shown = json.loads(run_cli(web_server.env, "profile", "show", PROFILE, "--json"))
    assert (shown["notify_url"], shown["deploy_root"], shown["deploy_command"]) == ("***", str(live), str(hook))

    run_cli(web_server.env, "cert", "request", CERT, "--profile", PROFILE, "--cn", "deploy.example.test", "--wait")
    assert (live / CERT / "fullchain.pem").is_file()
    page.goto(f"/certificates/{CERT}")
    expect(fact(page, "Deployed revision")).to_have_text("1")
    page.get_by_role("button", name="Deploy now").click()
    expect(flash_ok(page)).to_contain_text(f"Revision 1 of {CERT} deployed.")
    assert log.read_text().splitlines() == [f"{CERT} 1", f"{CERT} 1"]
    expect(page.locator("details", has_text="revision 1")).to_have_count(2)
    watch.check(page, "(certificate page)")
