"""`certpilot`: the root command, setup commands and error handling."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certpilot.cli import certs, hsm, profiles, scripts, users
from certpilot.cli.context import (
    DatabaseUrlOption,
    DataDirOption,
    load_settings,
    local_actor,
    open_app,
    remember_overrides,
    reset_overrides,
    settings_flags,
)
from certpilot.cli.output import error, say
from certpilot.cli.usage import CertpilotGroup
from certpilot.domain.errors import CertpilotError, InvalidInput

if TYPE_CHECKING:
    from certpilot.services.app import App

app = typer.Typer(
    name="certpilot",
    cls=CertpilotGroup,
    # plain help and usage errors, as other command-line tools print them (and without importing Rich)
    rich_markup_mode=None,
    help="Obtain CA-signed certificates through issuer scripts and keep them renewed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(scripts.app, name="script")
app.add_typer(profiles.app, name="profile")
app.add_typer(certs.app, name="cert")
app.add_typer(users.user_app, name="user")
app.add_typer(users.token_app, name="token")
app.add_typer(hsm.app, name="hsm")
app.add_typer(db_app, name="db")

@app.callback()
def root(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    reset_overrides()
    remember_overrides(data_dir, database_url)

@app.command("init")
@settings_flags
def init(demo: Annotated[bool, typer.Option("--demo", help="Add a local demo CA and a `demo` profile.")] = False) -> None:
    """Create the data dir, the database, the master key and the `admin` user."""
    from certpilot.services.setup import initialise

    settings = load_settings()
    prepare_script_user()
    report = initialise(settings, demo=demo, actor=local_actor())
    say(f"certpilot initialised in {settings.data_dir.resolve()}")
    say(f"master key: {settings.effective_master_key_file.resolve()} (keep a backup; without it no secret can be read)")
    say(f"admin password (shown once): {report.admin_password}")
    if report.demo_profile:
        say(f"demo profile: {report.demo_profile} (try: certpilot cert request web1 --profile demo --cn web1.example.test --wait)")

@db_app.command("upgrade")
@settings_flags
def db_upgrade() -> None:
    """Apply the database migrations."""
    from certpilot.services.app import App

    settings = load_settings()
    ctx = App(settings, check_schema=False)
    try:
        ctx.db.upgrade()
    finally:
        ctx.close()
    say("database schema is up to date")

@app.command("serve")
@settings_flags
def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM, full chain).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The private key of --tls-cert.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="HTTP worker processes (default 1); "
                                         "the renewal loop runs once, in the parent process.")] = 1,
) -> None:
    """Serve the API, the web UI and the renewal loop."""
    import uvicorn

    from certpilot.server import create_server

    from certpilot.reconciler.loop import Reconciler

    configure_logging()
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("give both --tls-cert and --tls-key, or neither")
    scheme = "https" if tls_cert else "http"
    prepare_script_user()
    with open_app() as ctx:
        report_sandbox(ctx)
        if ctx.settings.insecure_test_password_hashing:
            error("warning: CERTPILOT_INSECURE_TEST_PASSWORD_HASHING is set: passwords are hashed at the "
                  "cheapest argon2 cost, for test suites only; never serve users like this")
        if workers > 1:
            from certpilot.cli.context import given_overrides
            from certpilot.cli.serve_workers import serve_in_workers

            say(f"certpilot serving on {scheme}://{host}:{port} with {workers} worker processes")
            serve_in_workers(ctx, host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key,
                             overrides=given_overrides())
            return
        api = create_server(ctx, Reconciler(ctx), https_only=tls_cert is not None)
        say(f"certpilot serving on {scheme}://{host}:{port}")
        uvicorn.run(api, host=host, port=port, log_level="info", ssl_certfile=tls_cert, ssl_keyfile=tls_key)


@app.command("worker")
@settings_flags
def worker() -> None:
    """Run the renewal loop only (any number of workers may share one PostgreSQL)."""
    import signal
    import threading

    from certpilot.reconciler.loop import Reconciler

    configure_logging()
    prepare_script_user()
    with open_app() as ctx:
        report_sandbox(ctx)
        reconciler = Reconciler(ctx)

        def on_signal(*_: object) -> None:
            # stop() takes locks the interrupted main thread may hold: call it from a thread
            threading.Thread(target=reconciler.stop, daemon=True).start()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        reconciler.run_forever()


def prepare_script_user() -> None:
    """Create the default unprivileged script user when root and it is missing."""
    from certpilot.issuers.sandbox import ensure_default_script_user

    note = ensure_default_script_user()
    if note:
        error(f"warning: {note}")


def report_sandbox(ctx: App) -> None:
    """Say how scripts are confined here, and every layer this machine cannot apply."""
    import logging

    log = logging.getLogger("certpilot.sandbox")
    log.info("%s", ctx.runner.describe())
    for sentence in ctx.runner.limitations():
        log.warning("script sandbox weaker here: %s", sentence)


def configure_logging() -> None:
    import logging

    from certpilot.log_format import OneLineFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # one record, one line: see log_format

def is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy error (only a command that imported SQLAlchemy can raise one)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError)


def run() -> None:
    try:
        app()
    except CertpilotError as exc:
        error(str(exc))
        sys.exit(1)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        error(f"database error: {getattr(exc, 'orig', None) or exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

