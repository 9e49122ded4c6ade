"""The seed flow through the browser: log in, upload the issuer script, make a profile with
normal, sensitive and dynamic parameters, request a certificate, renew it, download it.
Along the way a screenshot of every main page goes to test-output/screenshots/."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from tests.support.web import (
    EXAMPLE_ISSUER,
    SEED_CERT,
    SEED_PROFILE,
    Param,
    WebServer,
    add_script,
    ca_params,
    check_issued,
    dyn_input,
    fact,
    flash_ok,
    make_ca,
    publish_screenshot,
    renew_now,
    screenshot,
)

SCRIPT = "web-local-ca"
PROFILE = "web-corp"
CERT = "web-shop"
CN = "shop.example.test"


def test_seed_flow_in_the_browser(page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    ca = make_ca(web_server.work / "web-seed-ca")

    # --- log in ---------------------------------------------------------------
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "01-login")
    page.get_by_label("Username", exact=True).fill("admin")
    page.get_by_label("Password", exact=True).fill(web_server.admin_password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("Users & tokens")
    screenshot(page, "02-dashboard")

    # --- upload the issuer script ------------------------------------------------
    add_script(page, SCRIPT, EXAMPLE_ISSUER.read_text())
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Script {SCRIPT}")
    page.goto("/scripts")
    expect(page.get_by_role("link", name=SCRIPT, exact=True)).to_be_visible()
    screenshot(page, "03-scripts")

    # --- the profile, with a row added in the browser ------------------------------
    page.goto("/profiles/new")
    expect(page.get_by_role("heading", level=1)).to_have_text("New profile")
    page.get_by_label("Name", exact=True).fill(PROFILE)
    page.get_by_label("Script", exact=True).select_option(SCRIPT)
    params = ca_params(ca, extra=[Param("cost_center", dynamic=True)])
    assert page.locator("#param-rows tr[data-row]").count() == 3
    for i, p in enumerate(params):
        if i >= page.locator("#param-rows tr[data-row]").count():
            page.get_by_role("button", name="Add parameter").click()
            expect(page.locator(f"#param_name_{i}")).to_be_focused()
        page.locator(f"#param_name_{i}").fill(p.name)
        if p.sensitive:
            page.locator(f"#param_sensitive_{i}").check()
            expect(page.locator(f"#param_value_{i}")).to_have_attribute("type", "password")
        if p.dynamic:
            page.locator(f"#param_dynamic_{i}").check()
        if p.value:
            page.locator(f"#param_value_{i}").fill(p.value)
    expect(page.locator("#param-count")).to_have_value(str(len(params)))
    page.get_by_label("Allowed read paths").fill(str(ca.cert_path.parent))
    page.get_by_label("Renew this many days before expiry").fill("10")
    page.get_by_role("button", name="Create profile").click()
    expect(page).to_have_url(re.compile(rf"/profiles/{PROFILE}$"))
    expect(flash_ok(page)).to_contain_text(f"Profile {PROFILE} created.")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Profile {PROFILE}")
    names = [page.locator(f"#param_name_{i}").input_value() for i in range(len(params))]
    assert names == [p.name for p in params]
    expect(page.locator("#param_sensitive_3")).to_be_checked()
    expect(page.locator("#param_dynamic_4")).to_be_checked()
    expect(page.locator("#param_value_2")).to_have_value("90")
    page.reload()  # without the flash, for the picture in the README
    profile_form_png = screenshot(page, "06-profile-form")

    page.goto("/profiles")
    row = page.locator("tbody tr", has=page.get_by_role("link", name=PROFILE, exact=True))
    expect(row).to_contain_text(SCRIPT)
    expect(row).to_contain_text("cost_center")
    screenshot(page, "05-profiles")

    # --- a test run of the script with the new profile's parameters -------------------
    page.goto(f"/scripts/{SCRIPT}")
    page.get_by_label("Parameters from profile").select_option(PROFILE)
    page.get_by_role("button", name="Run the script").click()
    trial = page.get_by_role("region", name=re.compile("Test run:"))
    expect(trial.locator(".badge")).to_have_text("issued")
    expect(trial).to_contain_text("issued: serial")
    screenshot(page, "04-script-test-run")

    # --- request a certificate; the dynamic input shows once the profile is picked ------
    page.goto("/certificates/new")
    expect(page.get_by_role("heading", level=1)).to_have_text("New certificate")
    picker = page.get_by_label("Profile", exact=True)
    assert picker.input_value() != PROFILE, "the test needs another profile picked first"
    picker.select_option(SEED_PROFILE)
    expect(dyn_input(page, PROFILE, "cost_center")).to_be_hidden()
    expect(dyn_input(page, SEED_PROFILE, "cost_center")).to_be_visible()
    picker.select_option(PROFILE)
    expect(dyn_input(page, PROFILE, "cost_center")).to_be_visible()
    expect(dyn_input(page, SEED_PROFILE, "cost_center")).to_be_hidden()
    expect(page.get_by_role("group", name=f"Parameters of profile {PROFILE}")).to_be_visible()
    expect(page.get_by_role("group", name=f"Parameters of profile {SEED_PROFILE}")).to_be_hidden()

    page.get_by_label("Name", exact=True).fill(CERT)
    page.get_by_label("Common name").fill(CN)
    page.get_by_label("Organization", exact=True).fill("Example Shop")
    page.get_by_label("Country (2 letters)").fill("DE")
    page.get_by_label("Subject alternative names").fill("DNS:www.shop.example.test\nIP:192.0.2.10")
    dyn_input(page, PROFILE, "cost_center").fill("CC-4711")
    expect(page.get_by_label("Issue it now and wait for the CA")).to_be_checked()
    screenshot(page, "07-new-certificate")
    page.get_by_role("button", name="Request certificate").click()

    # One click, one revision. When not (the click races the renewal loop it wakes: see
    # test_renew_now_adds_exactly_one_revision) the rest of the flow still runs, and the
    # test fails at its end.
    problems: list[str] = []
    expect(page).to_have_url(re.compile(rf"/certificates/{CERT}$"))
    revision = check_issued(page, CERT, 1, problems, "after Request certificate with Issue it now")
    expect(fact(page, "Profile")).to_have_text(PROFILE)
    expect(fact(page, "cost_center")).to_have_text("CC-4711")
    expect(fact(page, "Alternative names")).to_contain_text("IP:192.0.2.10")

    # --- renew now ------------------------------------------------------------------
    page.get_by_role("button", name="Renew now").click()
    revision = check_issued(page, CERT, revision + 1, problems, "after one click on Renew now")
    expect(page.locator("table tbody tr", has_text="served").locator("td").first).to_have_text(str(revision))
    screenshot(page, "09-certificate-detail")

    # --- download the full chain --------------------------------------------------------
    with page.expect_download() as info:
        page.get_by_role("link", name="Full chain").click()
    download = info.value
    assert download.suggested_filename == f"{CERT}-fullchain.pem"
    pem = open(download.path(), "rb").read()
    chain = x509.load_pem_x509_certificates(pem)
    assert len(chain) == 2
    leaf, issuer = chain
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CN
    assert issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Web Test CA"
    assert leaf.issuer == issuer.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert CN in sans.get_values_for_type(x509.DNSName)
    serial_shown = fact(page, "Serial").inner_text().strip().lower().replace(":", "")
    assert format(leaf.serial_number, "x") in serial_shown or serial_shown in format(leaf.serial_number, "x")

    # --- the list, events and users pages ------------------------------------------------
    page.goto("/certificates")
    row = page.locator("tbody tr", has=page.get_by_role("link", name=CERT, exact=True))
    expect(row).to_contain_text(CN)
    expect(row.locator(".badge").first).to_have_text("issued")
    expect(row.locator("td").last).to_have_text(str(revision))
    certificates_png = screenshot(page, "08-certificates")
    page.get_by_label("Search").fill("shop")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody")).to_contain_text(CERT)

    page.goto(f"/events?object={CERT}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Events")
    expect(page.locator("tbody")).to_contain_text("CERT_REQUESTED")
    screenshot(page, "10-events")

    page.goto("/users")
    expect(page.get_by_role("heading", level=1)).to_have_text("Users and tokens")
    expect(page.locator("tbody").first).to_contain_text("viewer1")
    screenshot(page, "11-users")

    publish_screenshot(certificates_png, "certificates.png")
    publish_screenshot(profile_form_png, "profile-form.png")
    assert not problems, problems


def test_renew_now_adds_exactly_one_revision(admin_page) -> None:  # type: ignore[no-untyped-def]
    """One click on "Renew now", one new certificate from the CA. The click wakes the
    renewal loop and then runs an attempt itself, so this clicks a few times to catch the
    two racing."""
    page = admin_page
    page.goto(f"/certificates/{SEED_CERT}")
    start = int(fact(page, "Revision").inner_text())
    seen = []
    for click in range(1, 5):
        flashes, revision = renew_now(page)
        seen.append(f"{revision} ({flashes})")
        if revision != start + click or "issued" not in flashes:
            break
    page.goto(f"/events?object={SEED_CERT}")
    issued_by = [row for row in page.locator("tbody tr").all_inner_texts()
                 if re.search(r"CERT_(ISSUED|RENEWED|RENEWAL_REQUESTED)", row)]
    expected = [f"{start + i} (Revision {start + i} of {SEED_CERT} issued.)" for i in range(1, len(seen) + 1)]
    assert seen == expected, (
        f"revisions after each click, from {start}: {seen}; issued events:\n" + "\n".join(issued_by[:8]))
