"""Bad input through the real `certpilot` script: each case exits non-zero with one
clear `error:` sentence on stderr, no traceback, and changes nothing.

The cases share one installation per database (script `local-ca`, profile `corp`,
certificate `web1` issued), set up once per module; every case checks that the
lists are the same afterwards, so a case that wrote something is caught by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Cli, SeededInstallation, assert_clean_error

REQUEST_WEB2 = ("cert", "request", "web2", "--profile", "corp", "--cn", "web2.example.test")
CC = ("--param", "cost_center=CC-2")


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    says: tuple[str, ...]  # fragments the one-line message must contain (case-insensitive)


BAD_INPUT = {
    "unknown-profile": Case(
        ("cert", "request", "web2", "--profile", "nope", "--cn", "web2.example.test"), ("profile", "nope")),
    "key-rsa-1024": Case((*REQUEST_WEB2, *CC, "--key", "rsa:1024"), ("rsa:1024",)),
    "san-with-space": Case((*REQUEST_WEB2, *CC, "--san", "DNS:bad name"), ("bad name",)),
    "country-three-letters": Case((*REQUEST_WEB2, *CC, "--country", "DEU"), ("country", "DEU")),
    "certificate-name-not-valid": Case(
        ("cert", "request", "bad name", "--profile", "corp", "--cn", "web2.example.test", *CC), ("bad name",)),
    "duplicate-certificate": Case(
        ("cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test", *CC), ("web1",)),
    "missing-dynamic-param": Case(REQUEST_WEB2, ("cost_center",)),
    "unknown-param": Case((*REQUEST_WEB2, *CC, "--param", "nope=1"), ("nope",)),
    "value-for-static-param": Case((*REQUEST_WEB2, *CC, "--param", "validity_days=1"), ("validity_days",)),
    "param-without-equals": Case((*REQUEST_WEB2, "--param", "cost_center"), ("--param", "cost_center")),
    "duplicate-profile": Case(
        ("profile", "create", "corp", "--script", "local-ca", "--param", "validity_days=1"), ("corp",)),
    "profile-unknown-script": Case(("profile", "create", "p2", "--script", "nope"), ("script", "nope")),
    "duplicate-script": Case(("script", "add", "local-ca", "--file", "{issuer}"), ("local-ca",)),
    "script-does-not-compile": Case(("script", "add", "broken", "--file", "{broken}"), ("compile",)),
    "script-without-certificate-request": Case(
        ("script", "add", "nofunc", "--file", "{nofunc}"), ("certificate_request",)),
    "script-file-missing": Case(("script", "add", "ghost", "--file", "{missing}"), ("does not exist",)),
    "show-unknown-certificate": Case(("cert", "show", "nope", "--json"), ("nope",)),
    "export-unknown-format": Case(("cert", "export", "web1", "--out", "{out}", "--format", "der"), ("der",)),
    "expiring-within-negative": Case(("cert", "list", "--expiring-within", "-1", "--json"), ("expiring",)),
}


def snapshot(cli: Cli) -> tuple[Any, ...]:
    """What `cert list`, `profile list` and `script list` print as JSON."""
    results = cli.run_parallel(("cert", "list", "--json"), ("profile", "list", "--json"), ("script", "list", "--json"))
    for result in results:
        assert result.returncode == 0, result.describe()
    return tuple(r.json() for r in results)


@pytest.fixture(scope="module")
def bad_input_env(seeded_installation: SeededInstallation) -> dict[str, Any]:
    files = seeded_installation.work_dir / "bad-scripts"
    files.mkdir()
    (files / "broken.py").write_text("def certificate_request(csr, common_name, args_dict)\n    return csr\n")
    (files / "nofunc.py").write_text("def sign(csr):\n    return csr\n")
    return {
        "installation": seeded_installation,
        "files": {
            "issuer": seeded_installation.issuer_file,
            "broken": files / "broken.py",
            "nofunc": files / "nofunc.py",
            "missing": files / "missing.py",
            "out": seeded_installation.work_dir / "export-out",
        },
        "baseline": snapshot(seeded_installation.cli),
    }


def assert_unchanged(env: dict[str, Any], what: str) -> None:
    after = snapshot(env["installation"].cli)
    baseline, env["baseline"] = env["baseline"], after  # later cases are judged on their own
    assert after == baseline, f"{what} changed the installation"
    assert not (env["files"]["out"] / "cert.pem").exists()


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_fails_clearly_and_changes_nothing(bad_input_env: dict[str, Any], case: Case) -> None:
    cli: Cli = bad_input_env["installation"].cli
    argv = tuple(a.format(**bad_input_env["files"]) for a in case.argv)

    result = cli.run(*argv)

    assert_clean_error(result, *case.says)
    assert result.stdout == "", result.describe()
    assert_unchanged(bad_input_env, " ".join(argv))


def test_unknown_names_are_named(bad_input_env: dict[str, Any]) -> None:
    cli: Cli = bad_input_env["installation"].cli
    out = bad_input_env["files"]["out"]
    results = cli.run_parallel(
        ("cert", "show", "nope"), ("cert", "history", "nope", "--json"), ("cert", "events", "nope", "--json"),
        ("cert", "renew", "nope", "--wait"), ("cert", "export", "nope", "--out", out, "--include-key"),
        ("profile", "show", "nope", "--json"), ("script", "show", "nope", "--json"),
    )
    for result in results:
        assert_clean_error(result, "'nope'", "does not exist")
        assert result.stdout == "", result.describe()
    assert_unchanged(bad_input_env, "commands on unknown names")


def test_web1_stays_served_after_all_bad_input(bad_input_env: dict[str, Any]) -> None:
    installation: SeededInstallation = bad_input_env["installation"]
    view = installation.cli.json("cert", "show", "web1", "--json")
    assert view["status"]["phase"] == "issued"
    assert view["status"]["revision"] == 1
    assert view["status"]["failures"] == 0 and view["status"]["last_error"] is None
    assert [h["revision"] for h in installation.cli.json("cert", "history", "web1", "--json")] == [1]
    assert installation.ca.password not in installation.cli.all_output()


BEFORE_INIT = (
    ("cert", "list", "--json"),
    ("profile", "list", "--json"),
    ("script", "add", "local-ca", "--file", "{issuer}"),
    ("profile", "create", "corp", "--script", "local-ca"),
    ("cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test", "--wait"),
    ("cert", "show", "web1", "--json"),
)


def test_commands_before_init_say_run_init(tmp_path: Path, database_url: str) -> None:
    issuer = tmp_path / "issuer.py"
    issuer.write_text("def certificate_request(csr, common_name, args_dict):\n    return ''\n")
    commands = [tuple(a.format(issuer=issuer) for a in c) for c in BEFORE_INIT]
    clis = [Cli(tmp_path / "data", database_url)]
    if database_url.startswith("sqlite"):  # and with no settings at all: ./certpilot-data, SQLite inside
        clis.append(Cli(tmp_path / "certpilot-data", None, settings_via="defaults", cwd=tmp_path))
    for cli in clis:
        for result in cli.run_parallel(*commands):
            assert_clean_error(result, "certpilot init")
            assert result.stdout == "", result.describe()
    assert not (tmp_path / "data" / "master.key").exists()
