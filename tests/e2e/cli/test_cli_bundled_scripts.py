"""`certpilot script bundled` lists the scripts that ship with certpilot with their
parameters; `script add NAME --bundled KIND` stores one like any script."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_clean_error

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_bundled_scripts_are_listed_and_added(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    listed = {b["kind"]: b for b in cli.json("script", "bundled", "--json")}
    assert set(listed) == {"acme", "certmonger", "local-ca"}
    acme = {p["name"]: p for p in listed["acme"]["params"]}
    assert acme["directory_url"]["required"] and acme["tsig_secret"]["sensitive"] and acme["eab_hmac_key"]["sensitive"]
    assert not acme["email"]["sensitive"]
    assert {p["name"] for p in listed["certmonger"]["params"]} >= {"helper"}
    text = cli.ok("script", "bundled").stdout
    assert "acme:" in text and "certmonger:" in text and "tsig_secret" in text

    cli.ok("script", "add", "public-acme", "--bundled", "acme", "--timeout", "120")
    cli.ok("script", "add", "corp-helper", "--bundled", "certmonger")
    shown = cli.ok("script", "show", "public-acme").stdout
    assert "RFC 8555" in shown and "def certificate_poll" in shown
    names = {s["name"] for s in cli.json("script", "list", "--json")}
    assert {"public-acme", "corp-helper"} <= names

    assert_clean_error(cli.run("script", "add", "nope", "--bundled", "letsencrypt"), "acme", "certmonger")
    assert_clean_error(cli.run("script", "add", "neither"), "--file", "--bundled")
    source = tmp_path / "s.py"
    source.write_text("def certificate_request(csr, common_name, args_dict):\n    return ''\n")
    assert_clean_error(cli.run("script", "add", "both", "--file", source, "--bundled", "acme"), "--file", "--bundled")
