"""`certpilot user disable|enable|remove|passwd|logout-everywhere` and `certpilot token
revoke` as an operator runs them on the server (issue 12): each change reaches the
tokens of the user at once, and a token's children die with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.services.app import App
from certpilot.services.users import AuthenticationFailed, authenticate_password, authenticate_token
from tests.support.cli import Cli, assert_clean_error

PASSWORD = "a-long-password-123"


def token_works(cli: Cli, token: str) -> bool:
    with App(Settings(data_dir=cli.data_dir, database_url=cli.database_url, insecure_test_password_hashing=True)) as app:
        try:
            authenticate_token(app, token)
        except AuthenticationFailed:
            return False
        return True


def password_works(cli: Cli, user: str, password: str) -> bool:
    with App(Settings(data_dir=cli.data_dir, database_url=cli.database_url, insecure_test_password_hashing=True)) as app:
        try:
            authenticate_password(app, user, password, source="test")
        except AuthenticationFailed:
            return False
        return True


@pytest.fixture
def installed(cli: Cli, tmp_path: Path) -> Cli:
    cli.ok("init")
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    cli.ok("user", "add", "alice", "--role", "operator", "--password-file", password_file)
    return cli


def test_user_lifecycle_from_the_cli(installed: Cli, tmp_path: Path) -> None:
    cli = installed
    token = cli.ok("token", "create", "alice").stdout.strip()
    assert token_works(cli, token)

    out = cli.ok("user", "disable", "alice").stdout
    assert "disabled" in out
    assert not token_works(cli, token) and not password_works(cli, "alice", PASSWORD)
    listed = {u["username"]: u for u in cli.json("user", "list", "--json")}
    assert listed["alice"]["disabled"] is True

    cli.ok("user", "enable", "alice")
    assert not token_works(cli, token), "enable revived a token that disable ended"
    assert password_works(cli, "alice", PASSWORD)

    token = cli.ok("token", "create", "alice").stdout.strip()
    new_file = tmp_path / "new-pw"
    new_file.write_text("another-long-password-789\n")
    cli.ok("user", "passwd", "alice", "--password-file", new_file)
    assert not token_works(cli, token)
    assert not password_works(cli, "alice", PASSWORD) and password_works(cli, "alice", "another-long-password-789")
    generated = cli.ok("user", "passwd", "alice").stdout
    assert "password (shown once): " in generated

    token = cli.ok("token", "create", "alice").stdout.strip()
    cli.ok("user", "logout-everywhere", "alice")
    assert not token_works(cli, token)

    token = cli.ok("token", "create", "alice").stdout.strip()
    cli.ok("user", "remove", "alice")
    assert not token_works(cli, token)
    assert "alice" not in [u["username"] for u in cli.json("user", "list", "--json")]
    assert_clean_error(cli.run("user", "disable", "alice"), "alice")
    assert_clean_error(cli.run("user", "remove", "admin"), "last")


def test_token_revoke_takes_the_tokens_made_with_it(installed: Cli) -> None:
    cli = installed
    parent = cli.ok("token", "create", "alice", "--expires-in", "2").stdout.strip()
    with App(Settings(data_dir=cli.data_dir, database_url=cli.database_url, insecure_test_password_hashing=True)) as app:
        from certpilot.services.users import create_token

        principal = authenticate_token(app, parent)
        child, child_info = create_token(app, "alice", parent_token_id=principal.token_id, actor="test")
    assert child_info.expires_at is not None, "a child outlives its parent"
    narrowed = cli.ok("token", "create", "alice", "--role", "viewer").stdout.strip()
    assert_clean_error(cli.run("token", "create", "alice", "--role", "admin"), "operator")
    rows = {t["prefix"]: t for t in cli.json("token", "list", "--json")}
    assert rows[narrowed[:10]]["role"] == "viewer"

    cli.ok("token", "revoke", str(principal.token_id))
    assert not token_works(cli, parent) and not token_works(cli, child)
    assert token_works(cli, narrowed)
