"""`profile create --allow-read/--allow-write/--concurrency` through the real `certpilot`
script, on SQLite and PostgreSQL: the settings come back flat in `profile show --json`
and `profile list --json`, and bad ones fail with one clear sentence, storing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_clean_error, copy_example_issuer


@pytest.fixture
def installed(cli: Cli, tmp_path: Path) -> Cli:
    """`init` and the script `local-ca`; no profile yet."""
    cli.ok("init")
    cli.ok("script", "add", "local-ca", "--file", copy_example_issuer(tmp_path / "scripts"))
    return cli


def test_sandbox_flags_round_trip_through_json(installed: Cli) -> None:
    installed.ok("profile", "create", "corp", "--script", "local-ca", "--concurrency", "4",
                 "--allow-read", "/etc/ssl/private/", "--allow-read", "/srv//ca",
                 "--allow-write", "/srv/deploy")
    installed.ok("profile", "create", "plain", "--script", "local-ca")

    corp = installed.json("profile", "show", "corp", "--json")
    assert (corp["concurrency"], corp["allow_read"], corp["allow_write"]) == (
        4, ["/etc/ssl/private", "/srv/ca"], ["/srv/deploy"])
    plain = installed.json("profile", "show", "plain", "--json")
    assert (plain["concurrency"], plain["allow_read"], plain["allow_write"]) == (16, [], [])
    assert installed.json("profile", "list", "--json") == [corp, plain]

    shown = installed.ok("profile", "show", "corp").stdout
    assert "/etc/ssl/private" in shown and "/srv/deploy" in shown


def test_bad_sandbox_flags_fail_clearly_and_store_nothing(installed: Cli) -> None:
    data_dir = str(installed.data_dir.resolve())
    create = ("profile", "create", "p2", "--script", "local-ca")
    cases = {
        "relative": ((*create, "--allow-read", "srv/ca"), ("allow_read", "srv/ca", "absolute")),
        "dot-dot": ((*create, "--allow-write", "/srv/../etc"), ("allow_write", "'..'")),
        "data-dir": ((*create, "--allow-read", data_dir), (f"certpilot's data dir ({data_dir})",)),
        "inside-data-dir": ((*create, "--allow-write", f"{data_dir}/scripts"), ("certpilot's data dir",)),
        "master-key": ((*create, "--allow-read", f"{data_dir}/master.key"),
                       (f"certpilot's master key file ({data_dir}/master.key)",)),
        "concurrency-0": ((*create, "--concurrency", "0"), ("concurrency", "1 to 256")),
    }
    results = installed.run_parallel(*(argv for argv, _ in cases.values()))
    for (what, (_, says)), result in zip(cases.items(), results):
        assert_clean_error(result, *says)
        assert result.stdout == "", f"{what}\n{result.describe()}"
    assert installed.json("profile", "list", "--json") == []
