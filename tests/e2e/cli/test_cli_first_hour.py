"""What a new user meets first, through the installed `certpilot` script: help that
reads like other command-line tools, an error outside a data dir that says where it
looked and how to point elsewhere, and tables whose columns all have a header
(`cert attempts` with the scrubbed output, `cert history`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certpilot.cli.main import app
from tests.support.cli import Cli, assert_clean_error
from tests.support.processes import certpilot_executable

# Typer's own renderings that read as Python rather than as a command line
PYTHON_TYPE_SHAPES = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\])>|\{[a-z_]+\}")


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the tree, as argv prefixes."""
    import typer.main

    paths: list[tuple[str, ...]] = [()]

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append((*prefix, name))
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


def help_text(*argv: str) -> str:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    result = subprocess.run([certpilot_executable(), *argv, "--help"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_request_help_reads_like_a_command_line() -> None:
    text = help_text("cert", "request")
    assert "Usage: certpilot cert request [OPTIONS] NAME" in text
    assert not PYTHON_TYPE_SHAPES.search(text), text
    assert re.search(r"--san\s+TEXT", text), text
    assert "--wait / --no-wait" in text, text
    assert re.search(r"--json\s+Print JSON only", text), text  # a flag: no value after it
    assert re.search(r"--data-dir\s+PATH\s+Data directory \(default: \$CERTPILOT_DATA_DIR, else\s+\./certpilot-data", text), text
    assert "$CERTPILOT_DATABASE_URL" in text


@pytest.mark.parametrize("argv", command_paths(), ids=lambda p: " ".join(p) or "certpilot")
def test_no_help_page_shows_python_types(argv: tuple[str, ...]) -> None:
    """In-process (the same click tree the console script builds), every page of the tree."""
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Usage: certpilot" in result.output
    assert not PYTHON_TYPE_SHAPES.search(result.output), result.output


def test_outside_a_data_dir_the_error_names_the_absolute_path_and_the_ways_to_point(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    cli = Cli(elsewhere / "certpilot-data", None, settings_via="defaults", cwd=elsewhere)
    message = assert_clean_error(cli.run("cert", "list"), "--data-dir", "CERTPILOT_DATA_DIR", "certpilot init")
    assert f"no certpilot database in {elsewhere.resolve() / 'certpilot-data'}:" in message

    relative = Cli(elsewhere / "rel", None, settings_via="defaults", cwd=elsewhere)
    message = assert_clean_error(relative.run("--data-dir", "rel/data", "cert", "list"))
    assert str(elsewhere.resolve() / "rel" / "data") in message


NOISY_SCRIPT = """\
import sys

def certificate_request(csr, common_name, args_dict):
    print("[step 1] asking the CA for " + common_name)
    print("token " + args_dict["token"] + " used")
    for n in range(40):
        print(f"padding line {n}")
    sys.stderr.write("CA refused: [policy] no\\n")
    sys.exit(2)
"""


def test_attempts_table_has_the_scrubbed_output_and_history_headers(tmp_path: Path) -> None:
    secret = "tok-S3cret-9a8b7c"
    cli = Cli(tmp_path / "data", None)
    cli.ok("init", "--demo")
    cli.ok("cert", "request", "ok1", "--profile", "demo", "--cn", "ok1.example.test", "--wait")
    cli.ok("cert", "renew", "ok1", "--wait")
    history = cli.ok("cert", "history", "ok1").stdout.splitlines()
    header = history[0].split()
    assert header == ["REV", "SERIAL", "NOT_BEFORE", "NOT_AFTER", "PUBLIC_KEY_SHA256", "SERVED"], history
    assert [line.split()[0] for line in history[1:]] == ["2", "1"], history
    assert [line.split()[-1] for line in history[1:]] == ["yes", "no"], history

    script = tmp_path / "noisy.py"
    script.write_text(NOISY_SCRIPT)
    cli.ok("script", "add", "noisy", "--file", script)
    cli.ok("profile", "create", "noisy", "--script", "noisy", "--sensitive-param", f"token={secret}")
    assert_clean_error(cli.run("cert", "request", "bad1", "--profile", "noisy", "--cn", "bad1.example.test", "--wait"))

    table = cli.ok("cert", "attempts", "bad1").stdout
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STARTED", "OUTCOME", "MS", "ERROR", "OUTPUT"], table
    assert len(lines) == 2, table  # one attempt, on one line however long its output
    row = lines[1]
    assert "[step 1] asking the CA for bad1.example.test | token *** used | padding line 0" in row, table
    assert "[policy]" in row  # values are text, not Rich markup
    assert "--json for all" in row and "padding line 39" not in row, table
    assert secret not in table

    full = cli.json("cert", "attempts", "bad1", "--json")[0]["output"]
    assert "padding line 39" in full and secret not in full

    ok_attempts = cli.ok("cert", "attempts", "ok1").stdout.splitlines()
    assert ok_attempts[0].split()[-1] == "OUTPUT" and len(ok_attempts) == 3, ok_attempts
