"""What `certpilot` imports before it answers (no timing here: bench/cli.py measures
it). `--help` and a typo need neither the database layer nor pydantic; `cert list` on
SQLite reads through the standard library and says exactly what the ordinary path
(`cert list --json`: App, SQLAlchemy, the services) says, for certificates in every
state the table shows; the values Typer would convert with pydantic are converted
the same way without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Cli, assert_clean_error

HEAVY = ("sqlalchemy", "alembic", "pydantic", "pydantic_settings", "certpilot.services.app")

PROBE = """
import json, sys
sys.argv = ["certpilot", *json.loads(sys.argv[1])]
from certpilot.cli.main import run
try:
    run()
except SystemExit:
    pass
finally:
    sys.stdout.flush()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY_ROOTS} or m in {HEAVY_NAMES})
    sys.stderr.write("\\nIMPORTED " + json.dumps(heavy) + "\\n")
"""


def imported_by(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The heavy modules a `certpilot` command imported, run as the console script runs it."""
    code = PROBE.replace("{HEAVY_ROOTS}", repr({h for h in HEAVY if "." not in h})).replace(
        "{HEAVY_NAMES}", repr({h for h in HEAVY if "." in h}))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    marker = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert marker, done.stderr
    return json.loads(marker[-1].removeprefix("IMPORTED ")), done


def plain_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env["CERTPILOT_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.parametrize("argv", [["--help"], ["cert", "--help"], ["cert", "request", "--help"], ["nosuchcommand"]],
                         ids=" ".join)
def test_help_and_typos_import_no_database_layer_and_no_pydantic(argv: list[str], tmp_path: Path) -> None:
    heavy, done = imported_by(argv, plain_env(tmp_path / "data"), tmp_path)
    assert "Usage: certpilot" in done.stdout + done.stderr
    assert heavy == [], heavy


REFUSE = "import sys\n\ndef certificate_request(csr, common_name, args_dict):\n    sys.exit('no')\n"


def table_rows(text: str) -> list[list[str]]:
    lines = text.strip().splitlines()
    assert lines[0].split() == ["NAME", "PROFILE", "PHASE", "EXPIRY", "NOT_AFTER", "REV", "FAILURES"], text
    return [line.split() for line in lines[1:]]


def json_rows(views: list[dict]) -> list[list[str]]:
    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    return [[v["name"], v["spec"]["profile"], v["status"]["phase"], cell(v["status"]["expiry_status"]),
             cell(v["status"]["not_after"]), cell(v["status"]["revision"]), cell(v["status"]["failures"])]
            for v in views]


def test_cert_list_on_sqlite_reads_without_sqlalchemy_and_says_what_the_ordinary_path_says(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data", None)
    cli.ok("init", "--demo")
    script = tmp_path / "refuse.py"
    script.write_text(REFUSE)
    cli.ok("script", "add", "refuse", "--file", script)
    cli.ok("profile", "create", "refuse", "--script", "refuse")
    # issued (GOOD), renewed (revision 2), failed before any revision, pending
    cli.ok("cert", "request", "good1", "--profile", "demo", "--cn", "good1.example.test", "--wait")
    cli.ok("cert", "request", "renewed1", "--profile", "demo", "--cn", "renewed1.example.test", "--wait")
    cli.ok("cert", "renew", "renewed1", "--wait")
    assert cli.run("cert", "request", "failed1", "--profile", "refuse", "--cn", "failed1.example.test",
                   "--wait").returncode == 1
    cli.ok("cert", "request", "pending1", "--profile", "demo", "--cn", "pending1.example.test")

    env = plain_env(tmp_path / "data")
    for extra in ([], ["--expiring-within", "0"], ["--expiring-within", "100"]):
        heavy, quick = imported_by(["cert", "list", *extra], env, tmp_path)
        assert quick.returncode == 0, quick.stderr
        assert heavy == [], heavy
        ordinary = cli.json("cert", "list", "--json", *extra)
        expected = json_rows(ordinary)
        if expected:
            assert table_rows(quick.stdout) == expected, (quick.stdout, expected)
        else:
            assert quick.stdout.strip() == "no certificates", quick.stdout
    rows = {r[0]: r for r in table_rows(imported_by(["cert", "list"], env, tmp_path)[1].stdout)}
    assert set(rows) == {"good1", "renewed1", "failed1", "pending1"}
    assert rows["renewed1"][5] == "2" and rows["failed1"][2:4] == ["failed", "-"] and rows["failed1"][6] == "1"
    assert rows["good1"][3] == "good"


def test_cert_list_elsewhere_takes_the_ordinary_path(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL (and SQLite named by URL) list through the services; a database
    URL the quick reader does not read is no reason to fail."""
    cli = Cli(tmp_path / "data", database_url)
    cli.ok("init", "--demo")
    cli.ok("cert", "request", "web1", "--profile", "demo", "--cn", "web1.example.test", "--wait")
    rows = table_rows(cli.ok("cert", "list").stdout)
    assert rows == json_rows(cli.json("cert", "list", "--json"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env.update({"CERTPILOT_DATA_DIR": str(tmp_path / "data"), "CERTPILOT_DATABASE_URL": database_url})
    heavy, done = imported_by(["cert", "list"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    if database_url.startswith("postgresql"):
        assert "sqlalchemy" in heavy  # the ordinary path
    else:
        assert heavy == []


def test_values_are_converted_without_pydantic_as_before(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data", None)
    cli.ok("init", "--demo")
    bad = cli.run("cert", "list", "--expiring-within", "soon")
    assert bad.returncode == 2 and "'soon' is not a valid integer" in bad.stderr, bad.stderr
    negative = cli.run("cert", "list", "--expiring-within", "-1")
    assert_clean_error(negative, "expiring")
    cli.ok("cert", "request", "multi", "--profile", "demo", "--cn", "multi.example.test", "--san", "a.example.test",
           "--san", "IP:127.0.0.1", "--wait")
    assert cli.json("cert", "show", "multi", "--json")["spec"]["subject_alt_names"] == [
        "DNS:multi.example.test", "DNS:a.example.test", "IP:127.0.0.1"]
    out = tmp_path / "relative-out"
    relative = Cli(tmp_path / "data", None, cwd=tmp_path)
    relative.ok("cert", "export", "multi", "--out", "relative-out")
    assert (out / "fullchain.pem").exists()
