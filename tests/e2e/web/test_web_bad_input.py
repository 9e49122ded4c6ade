"""A form with bad input comes back with the error next to the field (marked
aria-invalid and described by the error), keeps what was typed, and creates nothing."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.support.web import (
    SEED_CERT,
    SEED_PROFILE,
    SEED_SCRIPT,
    Param,
    WebServer,
    delete_certificates,
    dyn_input,
    fill_profile_form,
    table_names,
)


def _fill_valid_certificate(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/certificates/new")
    page.get_by_label("Profile", exact=True).select_option(SEED_PROFILE)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Common name").fill(f"{name}.example.test")
    page.get_by_label("Country (2 letters)").fill("DE")
    page.get_by_label("Subject alternative names").fill(f"DNS:www.{name}.example.test")
    dyn_input(page, SEED_PROFILE, "cost_center").fill("CC-7")


def _country(page) -> str:  # type: ignore[no-untyped-def]
    page.get_by_label("Country (2 letters)").fill("DEU")
    return "country"


def _bad_san(page) -> str:  # type: ignore[no-untyped-def]
    page.get_by_label("Subject alternative names").fill("DNS:www.example.test\nDNS:not a host..name")
    return "subject_alt_names"


def _missing_dynamic_value(page) -> str:  # type: ignore[no-untyped-def]
    """Left empty, past the browser's own `required` check."""
    value = dyn_input(page, SEED_PROFILE, "cost_center")
    value.fill("")
    value.evaluate("el => el.removeAttribute('required')")
    return "dynamic_params"


def _absent_dynamic_value(page) -> str:  # type: ignore[no-untyped-def]
    """Not sent at all (a hand-made or scripted form)."""
    dyn_input(page, SEED_PROFILE, "cost_center").evaluate("el => el.remove()")
    return "dynamic_params"


def _duplicate_name(page) -> str:  # type: ignore[no-untyped-def]
    page.get_by_label("Name", exact=True).fill(SEED_CERT)
    return "name"


BAD_CERTIFICATE_INPUT: dict[str, Callable[..., str]] = {
    "country-DEU": _country,
    "bad-san": _bad_san,
    "empty-dynamic-value": _missing_dynamic_value,
    "absent-dynamic-value": _absent_dynamic_value,
    "duplicate-name": _duplicate_name,
}


@pytest.mark.parametrize("case", list(BAD_CERTIFICATE_INPUT))
def test_new_certificate_with_bad_input(admin_page, web_server: WebServer, case: str) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    before = table_names(page, "/certificates")
    try:
        _check_bad_certificate_input(page, case)
    finally:
        created = table_names(page, "/certificates") - before
        delete_certificates(page, created)
    assert not created, f"the form with bad input created {created}"


def _check_bad_certificate_input(page, case: str) -> None:  # type: ignore[no-untyped-def]
    name = f"bad-{case}"
    _fill_valid_certificate(page, name)
    field = BAD_CERTIFICATE_INPUT[case](page)
    typed_cn = page.get_by_label("Common name").input_value()

    response_status: list[int] = []
    page.on("response", lambda r: response_status.append(r.status) if r.request.method == "POST" else None)
    page.get_by_role("button", name="Request certificate").click()
    page.wait_for_load_state()
    if not page.url.endswith("/certificates"):
        flashes = " / ".join(page.locator(".flash").all_inner_texts())
        pytest.fail(f"the form with bad input ({case}) was accepted: now at {page.url} ({flashes})")

    # the page is rendered by the server: what is not there now will not come
    error = page.locator(f'[id="{field}-error"]')
    assert error.count() == 1, f"no error shown for {field}; page says: {page.locator('main').inner_text()[:300]}"
    expect(error).to_be_visible()
    expect(page).to_have_url(re.compile(r"/certificates$"))  # the POST answered with the form
    assert response_status == [422], response_status
    expect(page.locator(".flash.ok")).to_have_count(0)
    if field == "dynamic_params":
        # shown inside the picked profile's fieldset, right with its inputs
        fieldset = page.get_by_role("group", name=f"Parameters of profile {SEED_PROFILE}")
        expect(fieldset.locator('[id="dynamic_params-error"]')).to_contain_text("cost_center")
    else:
        control = page.locator(f'[id="{field}"]')
        assert control.get_attribute("aria-invalid") == "true"
        described_by = (control.get_attribute("aria-describedby") or "").split()
        assert f"{field}-error" in described_by, (
            f"the {field} input is not described by its error (aria-describedby={described_by}): "
            f"{control.evaluate('el => el.outerHTML')[:200]}")
        # next to the field: the error is in the same block as its input
        same_block = error.evaluate(
            "(el, id) => el.parentElement.contains(document.getElementById(id))", field)
        assert same_block, f"the {field} error is not next to its input"
    expected_words = {"country": "two-letter", "subject_alt_names": "not a host..name",
                      "name": "exists", "dynamic_params": "cost_center"}[field]
    expect(error).to_contain_text(expected_words)
    # what was typed is still there
    expect(page.get_by_label("Common name")).to_have_value(typed_cn)
    expect(page.get_by_label("Profile", exact=True)).to_have_value(SEED_PROFILE)


def test_new_profile_with_an_empty_sensitive_value(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    before = table_names(page, "/profiles")
    page.goto("/profiles/new")
    fill_profile_form(page, "bad-profile", SEED_SCRIPT, [
        Param("ca_cert_path", str(web_server.ca.cert_path)),
        Param("ca_key_path", str(web_server.ca.key_path)),
        Param("ca_key_password", "", sensitive=True),  # not dynamic, and no value
    ])
    page.get_by_role("button", name="Create profile").click()
    error = page.locator("#params-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("sensitive")
    expect(page.get_by_role("heading", level=1)).to_have_text("New profile")
    # the rows typed are still there
    expect(page.locator("#param_name_2")).to_have_value("ca_key_password")
    expect(page.locator("#param_sensitive_2")).to_be_checked()
    expect(page.locator("#param_value_0")).to_have_value(str(web_server.ca.cert_path))
    expect(page.get_by_label("Name", exact=True)).to_have_value("bad-profile")
    assert table_names(page, "/profiles") == before
    assert page.goto("/profiles/bad-profile").status == 404


def test_new_profile_with_a_duplicate_name(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    before = table_names(page, "/profiles")
    page.goto("/profiles/new")
    fill_profile_form(page, SEED_PROFILE, SEED_SCRIPT, [Param("validity_days", "7")])
    page.get_by_role("button", name="Create profile").click()
    page.wait_for_load_state()
    error = page.locator("#name-error")
    assert error.count() == 1, (
        "the duplicate name is not reported next to the Name field; the page says: "
        + " / ".join(page.locator(".error").all_inner_texts()))
    expect(error).to_contain_text("exists")
    assert page.get_by_label("Name", exact=True).get_attribute("aria-invalid") == "true"
    assert table_names(page, "/profiles") == before
    page.goto(f"/profiles/{SEED_PROFILE}")
    expect(page.locator("#param_name_3")).to_have_value("validity_days")  # the seed order: see tests/support/web.py
    expect(page.locator("#param_value_3")).to_have_value("90")  # the existing profile is untouched


def test_script_that_does_not_compile(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    before = table_names(page, "/scripts")
    page.goto("/scripts")
    form = page.locator("form[action='/scripts']")
    form.get_by_label("Name").fill("broken")
    source = "def certificate_request(csr, common_name, args_dict):\n    return (\n"
    form.get_by_label("…or paste the source").fill(source)
    form.get_by_role("button", name="Add script").click()
    error = page.locator("#source-error")
    expect(error).to_contain_text("does not compile")
    expect(error).to_contain_text("line")
    source_box = page.get_by_label("…or paste the source")
    expect(source_box).to_have_attribute("aria-invalid", "true")
    expect(source_box).to_have_attribute("aria-describedby", "source-error")
    expect(source_box).to_have_value(source)
    expect(page.get_by_label("Name", exact=True)).to_have_value("broken")
    assert table_names(page, "/scripts") == before
    assert "broken" not in before


def test_script_without_the_entry_point(admin_page, web_server: WebServer) -> None:  # type: ignore[no-untyped-def]
    page = admin_page
    before = table_names(page, "/scripts")
    page.goto("/scripts")
    form = page.locator("form[action='/scripts']")
    form.get_by_label("Name").fill("no-entry")
    form.get_by_label("…or paste the source").fill("def issue(csr):\n    return ''\n")
    form.get_by_role("button", name="Add script").click()
    expect(page.locator("#source-error")).to_contain_text("certificate_request")
    assert table_names(page, "/scripts") == before
