"""Sensitive values are write-only in the web UI: the CA key password of a profile and a
sensitive dynamic value of a certificate never appear in any page's HTML — not on the
profile edit page, not when a form comes back with an error, not in a script's output —
and saving the profile form untouched keeps the stored secret working."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import expect

from tests.support.web import (
    EXAMPLE_ISSUER,
    Param,
    SecretWatch,
    WebServer,
    add_script,
    ca_params,
    dyn_input,
    fact,
    fill_profile_form,
    flash_ok,
    make_ca,
    renew_now,
    wait_for_revision,
)

SCRIPT = "web-chatty"
PROFILE = "web-secret"
CERT = "web-secret-cert"

# The bundled local-CA script, wrapped so that it prints every argument it gets: the
# runner must mask the sensitive ones in what it keeps of the output.
CHATTY_WRAPPER = '''

_sign = certificate_request


def certificate_request(csr, common_name, args_dict):
    import sys
    print("args:", sorted(args_dict.items()))
    print("password on stderr:", args_dict.get("ca_key_password"), file=sys.stderr)
    return _sign(csr, common_name, args_dict)
'''


def test_sensitive_values_never_reach_a_page(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    ca = make_ca(web_server.work / "secret-ca", "Secret Test CA")
    token = f"tok-{uuid.uuid4().hex}"
    watch = SecretWatch(secrets=(ca.password, token))
    watch.attach(page)
    params = ca_params(ca, extra=[Param("cost_center", dynamic=True),
                                  Param("requester_token", sensitive=True, dynamic=True)])

    add_script(page, SCRIPT, EXAMPLE_ISSUER.read_text() + CHATTY_WRAPPER)
    watch.check(page, "(script page)")

    # --- a new profile that comes back with an error does not echo the password ------
    page.goto("/profiles/new")
    fill_profile_form(page, PROFILE, SCRIPT, params, allow_read=[str(ca.cert_path.parent)])
    page.get_by_label("Renew this many days before expiry").fill("5")
    page.get_by_label("…or when this % of the lifetime is left").fill("50")
    page.get_by_role("button", name="Create profile").click()
    expect(page.locator("#renew_before_days-error")).to_contain_text("not both")
    watch.check(page, "(profile form with an error)")
    expect(page.locator("#param_name_3")).to_have_value("ca_key_password")
    expect(page.locator("#param_value_3")).to_have_value("")
    expect(page.locator("#param_sensitive_3")).to_be_checked()
    # type the password again, fix the error
    page.locator("#param_value_3").fill(ca.password)
    page.get_by_label("…or when this % of the lifetime is left").fill("")
    page.get_by_role("button", name="Create profile").click()
    expect(flash_ok(page)).to_contain_text(f"Profile {PROFILE} created.")
    watch.check(page, "(profile created)")

    # --- the edit page: the stored secret is an empty input with a placeholder ------------
    page.goto(f"/profiles/{PROFILE}")
    stored = page.locator("#param_value_3")
    expect(page.locator("#param_name_3")).to_have_value("ca_key_password")
    expect(stored).to_have_value("")
    expect(stored).to_have_attribute("type", "password")
    expect(stored).to_have_attribute("placeholder", re.compile("stored"))
    expect(page.locator("#param_name_5")).to_have_value("requester_token")
    expect(page.locator("#param_value_5")).to_have_value("")
    watch.check(page, "(profile edit page)")
    page.goto("/profiles")
    watch.check(page)

    # --- a test run of the chatty script: its output is shown, the password masked ----------
    page.goto(f"/scripts/{SCRIPT}")
    page.get_by_label("Parameters from profile").select_option(PROFILE)
    page.get_by_role("button", name="Run the script").click()
    trial = page.get_by_role("region", name=re.compile("Test run:"))
    expect(trial.locator(".badge")).to_have_text("issued")
    expect(trial.get_by_label("Script output")).to_contain_text("ca_cert_path")
    expect(trial.get_by_label("Script output")).to_contain_text("password on stderr")
    watch.check(page, "(test run output)")

    # --- the new-certificate form with an error does not echo the sensitive dynamic value ---
    page.goto("/certificates/new")
    page.get_by_label("Profile", exact=True).select_option(PROFILE)
    secret_input = dyn_input(page, PROFILE, "requester_token")
    expect(secret_input).to_have_attribute("type", "password")
    page.get_by_label("Name", exact=True).fill(CERT)
    page.get_by_label("Common name").fill("secret.example.test")
    page.get_by_label("Country (2 letters)").fill("DEU")
    dyn_input(page, PROFILE, "cost_center").fill("CC-9")
    secret_input.fill(token)
    page.get_by_role("button", name="Request certificate").click()
    expect(page.locator("#country-error")).to_be_visible()
    watch.check(page, "(new certificate form with an error)")
    expect(dyn_input(page, PROFILE, "cost_center")).to_have_value("CC-9")
    expect(secret_input).to_have_value("")
    page.get_by_label("Country (2 letters)").fill("DE")
    secret_input.fill(token)
    page.get_by_role("button", name="Request certificate").click()
    expect(page).to_have_url(re.compile(rf"/certificates/{CERT}$"))
    watch.check(page, "(certificate requested)")
    # issued, by the click or by the renewal loop it wakes (test_renew_now_adds_exactly_one_revision)
    wait_for_revision(page, CERT, at_least=1)
    expect(fact(page, "requester_token")).to_have_text("***")
    expect(fact(page, "cost_center")).to_have_text("CC-9")
    expect(page.get_by_label("Script output").filter(has_text="requester_token").first).to_be_attached()
    watch.check(page, "(certificate detail with the script output)")

    for path in ("/", "/certificates", f"/certificates?q={CERT}", "/events", f"/events?object={PROFILE}",
                 f"/events?object={CERT}", "/scripts", "/users"):
        page.goto(path)
        watch.check(page)

    # --- saving the profile form untouched keeps the stored password -------------------------
    page.goto(f"/profiles/{PROFILE}")
    page.get_by_role("button", name="Save profile").click()
    expect(flash_ok(page)).to_contain_text(f"Profile {PROFILE} saved.")
    expect(page.locator("#param_value_3")).to_have_attribute("placeholder", re.compile("stored"))
    watch.check(page, "(profile saved)")
    page.goto(f"/certificates/{CERT}")
    revision = int(fact(page, "Revision").inner_text())
    renew_now(page)
    watch.check(page, "(renew clicked)")
    # issued again with the stored password (by the click or by the renewal loop it wakes:
    # see test_renew_now_adds_exactly_one_revision)
    wait_for_revision(page, CERT, at_least=revision + 1)
    watch.check(page, "(renewed after the untouched save)")

    # --- every page loaded on the way, fetched again ---------------------------------------------
    fetched = 0
    for url in dict.fromkeys(watch.loaded):
        resp = page.request.get(url, max_redirects=0)
        if resp.status != 200 or "text/html" not in resp.headers.get("content-type", ""):
            continue  # a form's POST target, or a redirect
        fetched += 1
        body = resp.text()
        for secret in watch.secrets:
            assert secret not in body, f"a sensitive value is in the HTML of {url}"
    assert fetched >= 10, watch.loaded
    assert len(watch.checked) >= 15
