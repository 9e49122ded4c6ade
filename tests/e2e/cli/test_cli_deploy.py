"""`profile update`, the deploy flags, `cert request/renew --wait` that deploy, and
`cert deploy`, through the real `certpilot` script on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_clean_error, copy_example_issuer, corp_profile_args, make_test_ca


@pytest.fixture
def installed(cli: Cli, tmp_path: Path) -> Cli:
    """`init`, the script `local-ca` and the profile `corp` (no deployment yet)."""
    cli.ok("init")
    cli.ok("script", "add", "local-ca", "--file", copy_example_issuer(tmp_path / "scripts"))
    ca = make_test_ca(tmp_path / "ca")
    cli.ok(*corp_profile_args(ca))
    return cli


def test_profile_update_changes_only_the_flags_given(installed: Cli, tmp_path: Path) -> None:
    before = installed.json("profile", "show", "corp", "--json")
    installed.ok("profile", "update", "corp", "--concurrency", "3", "--param", "validity_days=10")
    after = installed.json("profile", "show", "corp", "--json")
    assert after["concurrency"] == 3
    assert {p["name"]: p["value"] for p in after["params"]}["validity_days"] == "10"
    unchanged = {k: v for k, v in before.items() if k not in ("concurrency", "params", "updated_at")}
    assert {k: after[k] for k in unchanged} == unchanged
    assert [p for p in after["params"] if p["name"] != "validity_days"] == [
        p for p in before["params"] if p["name"] != "validity_days"], "sensitive values kept, others as they were"

    installed.ok("profile", "update", "corp", "--remove-param", "cost_center", "--allow-read", "/srv/ca",
                 "--renew-before-days", "5")
    again = installed.json("profile", "show", "corp", "--json")
    assert "cost_center" not in [p["name"] for p in again["params"]]
    assert (again["allow_read"], again["renew_before_days"], again["concurrency"]) == (["/srv/ca"], 5, 3)
    installed.ok("profile", "update", "corp", "--allow-read", "")
    assert installed.json("profile", "show", "corp", "--json")["allow_read"] == []

    # the stored secrets still work: the CA key is used for the next issuance
    installed.ok("cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test", "--wait")

    assert_clean_error(installed.run("profile", "update", "nope", "--concurrency", "2"), "profile", "nope")
    assert_clean_error(installed.run("profile", "update", "corp", "--remove-param", "nope"), "no parameter 'nope'")


def test_wait_deploys_and_cert_deploy_deploys_again(installed: Cli, tmp_path: Path) -> None:
    root = tmp_path / "live"
    root.mkdir()
    log = tmp_path / "reload.log"
    hook = tmp_path / "reload.sh"
    hook.write_text('#!/bin/sh\necho "$CERTPILOT_CERTIFICATE $CERTPILOT_REVISION" >> "$1"\n')
    hook.chmod(0o755)
    installed.ok("profile", "update", "corp", "--deploy-root", str(root), "--deploy-command", f"{hook} '{log}'",
                 "--notify-url", "https://hooks.example.test/services/T000/B000/XXXXsecret")
    shown = installed.json("profile", "show", "corp", "--json")
    assert (shown["deploy_root"], shown["deploy_command"]) == (str(root), f"{hook} '{log}'")
    assert shown["notify_url"] == "***", "the webhook URL is a credential: never shown"

    result = installed.ok("cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test",
                          "--param", "cost_center=CC-1", "--wait")
    assert "revision 1 deployed" in result.stdout
    assert (root / "web1" / "fullchain.pem").is_file() and (root / "web1" / "key.pem").is_file()
    assert log.read_text() == "web1 1\n"
    status = installed.json("cert", "show", "web1", "--json")["status"]
    assert (status["deployed_revision"], status["deploy_error"]) == (1, None)

    installed.ok("cert", "renew", "web1", "--wait")
    assert log.read_text() == "web1 1\nweb1 2\n", "the renewal's --wait returned after its deployment"
    installed.ok("cert", "deploy", "web1")
    assert log.read_text().splitlines()[-1] == "web1 2"

    hook.write_text("#!/bin/sh\necho reload refused >&2\nexit 7\n")
    failed = installed.run("cert", "deploy", "web1")
    assert_clean_error(failed, "deployment of revision 2 failed", "exited with status 7")
    status = installed.json("cert", "show", "web1", "--json")["status"]
    assert (status["revision"], status["deployed_revision"]) == (2, None)
    assert "reload refused" in status["deploy_error"]
    runs = installed.json("cert", "deployments", "web1", "--json")
    assert [(d["revision"], d["outcome"]) for d in runs] == [(2, "failed"), (2, "deployed"), (2, "deployed"),
                                                             (1, "deployed")]
    assert "reload refused" in runs[0]["output"]
    assert "reload refused" in installed.ok("cert", "deployments", "web1").stdout

    installed.ok("profile", "update", "corp", "--concurrency", "2")  # the stored URL survives other changes
    assert installed.json("profile", "show", "corp", "--json")["notify_url"] == "***"
    installed.ok("profile", "update", "corp", "--notify-url", "")
    assert installed.json("profile", "show", "corp", "--json")["notify_url"] is None


def test_bad_deploy_and_notify_flags_fail_clearly(installed: Cli, tmp_path: Path) -> None:
    update = ("profile", "update", "corp")
    cases = {
        "relative": ((*update, "--deploy-root", "live"), ("deploy_root", "not absolute")),
        "dot-dot": ((*update, "--deploy-root", "/srv/../etc"), ("'..'",)),
        "no-executable": ((*update, "--deploy-root", "/srv/live", "--deploy-command", "/no/such/reload"),
                          ("'/no/such/reload' is not an executable",)),
        "command-without-root": ((*update, "--deploy-command", "/bin/true"), ("needs a deploy root",)),
        "unknown-owner": ((*update, "--deploy-root", "/srv/live", "--deploy-owner", "nobody-here-x"),
                          ("no user 'nobody-here-x'",)),
        "bad-url": ((*update, "--notify-url", "ftp://example.test/x"), ("notify_url", "http")),
        "bad-mail": ((*update, "--notify-email", "not-an-address"), ("notify_email",)),
        "deploy-no-root": (("cert", "deploy", "nope"), ("nope",)),
    }
    results = installed.run_parallel(*(argv for argv, _ in cases.values()))
    for (what, (_, says)), result in zip(cases.items(), results):
        assert_clean_error(result, *says)
        assert result.stdout == "", f"{what}\n{result.describe()}"
    shown = installed.json("profile", "show", "corp", "--json")
    assert (shown["deploy_root"], shown["deploy_command"], shown["notify_url"], shown["notify_email"]) == (
        None, None, None, None), "nothing was stored"
