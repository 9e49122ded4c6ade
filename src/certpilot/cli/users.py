"""`certpilot user …` and `certpilot token …`"""

from pathlib import Path
from typing import Annotated

import typer

from certpilot.cli.context import lazy_module, local_actor, open_app, read_secret_file, settings_flags
from certpilot.cli.output import print_json, print_table, say
from certpilot.services.views import timestamp, token_view

service = lazy_module("certpilot.services.users")

user_app = typer.Typer(help="Users and their roles (admin, operator, viewer).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (sent as Authorization: Bearer).", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


@user_app.command("add")
@settings_flags
def add(
    name: str,
    role: Annotated[str, typer.Option("--role", help="admin, operator or viewer.")],
    password_file: Annotated[Path | None, typer.Option("--password-file", help="Read the password from the first line.")] = None,
) -> None:
    """Add a user; without --password-file a password is generated and printed once."""
    parsed = service.parse_role(role)
    if password_file is not None:
        password, generated = read_secret_file(password_file, "password"), False
    else:
        password, generated = service.generate_password(), True
    with open_app() as ctx:
        service.add_user(ctx, name, parsed, password, actor=local_actor())
    say(f"user {name} added with role {parsed.value}")
    if generated:
        say(f"password (shown once): {password}")


@user_app.command("disable")
@settings_flags
def disable(name: str) -> None:
    """Disable a user: every web session and API token of theirs ends at once."""
    with open_app() as ctx:
        service.set_disabled(ctx, name, True, actor=local_actor())
    say(f"user {name} disabled; their sessions and tokens ended")


@user_app.command("enable")
@settings_flags
def enable(name: str) -> None:
    """Enable a disabled user again (their old sessions and tokens stay ended)."""
    with open_app() as ctx:
        service.set_disabled(ctx, name, False, actor=local_actor())
    say(f"user {name} enabled")


@user_app.command("remove")
@settings_flags
def remove(name: str) -> None:
    """Remove a user with their tokens and sessions (the events they caused stay)."""
    with open_app() as ctx:
        service.remove_user(ctx, name, actor=local_actor())
    say(f"user {name} removed")


@user_app.command("passwd")
@settings_flags
def passwd(
    name: str,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="Read the password from the first line.")] = None,
) -> None:
    """Set a new password (without --password-file one is generated and printed once);
    every web session and API token of the user ends."""
    if password_file is not None:
        password, generated = read_secret_file(password_file, "password"), False
    else:
        password, generated = service.generate_password(), True
    with open_app() as ctx:
        service.set_password(ctx, name, password, actor=local_actor())
    say(f"password of {name} changed; their sessions and tokens ended")
    if generated:
        say(f"password (shown once): {password}")


@user_app.command("logout-everywhere")
@settings_flags
def logout_everywhere(name: str) -> None:
    """End every web session and revoke every API token of user NAME."""
    with open_app() as ctx:
        ended = service.log_out_everywhere(ctx, name, actor=local_actor())
    say(f"{ended['sessions_ended']} sessions ended, {ended['tokens_revoked']} tokens revoked")


@user_app.command("list")
@settings_flags
def list_(json_: JsonFlag = False) -> None:
    """List users."""
    with open_app() as ctx:
        users = service.list_users(ctx)
    rows = [{"username": u.username, "role": u.role.value, "created_at": timestamp(u.created_at),
             "disabled": u.disabled} for u in users]
    if json_:
        print_json(rows)
        return
    print_table(["USER", "ROLE", "CREATED", "STATE"],
                [(r["username"], r["role"], r["created_at"], "disabled" if r["disabled"] else "enabled") for r in rows])


@token_app.command("create")
@settings_flags
def create(
    name: str,
    expires_in: Annotated[int | None, typer.Option("--expires-in", help="Days until the token expires.")] = None,
    label: Annotated[str, typer.Option("--label", help="What the token is for.")] = "cli",
    role: Annotated[str | None, typer.Option("--role", help="Narrow the token below the user's role.")] = None,
) -> None:
    """Create an API token for user NAME and print it (alone) on stdout, once."""
    parsed = service.parse_role(role) if role is not None else None
    with open_app() as ctx:
        token, _ = service.create_token(ctx, name, name=label, expires_in_days=expires_in, role=parsed,
                                        actor=local_actor())
    print(token)


@token_app.command("list")
@settings_flags
def tokens(user: Annotated[str | None, typer.Option("--user")] = None, json_: JsonFlag = False) -> None:
    """List tokens (never the tokens themselves: they are stored hashed)."""
    with open_app() as ctx:
        rows = [token_view(t) for t in service.list_tokens(ctx, user)]
    if json_:
        print_json(rows)
        return
    print_table(["ID", "USER", "LABEL", "PREFIX", "EXPIRES", "REVOKED", "LAST_USED"],
                [(r["id"], r["username"], r["name"], r["prefix"], r["expires_at"], r["revoked_at"], r["last_used_at"])
                 for r in rows], empty="no tokens")


@token_app.command("revoke")
@settings_flags
def revoke(token_id: int) -> None:
    """Revoke a token by its id, and every token made with it."""
    with open_app() as ctx:
        service.revoke_token(ctx, token_id, actor=local_actor())
    say(f"token {token_id} revoked (and the tokens made with it)")
