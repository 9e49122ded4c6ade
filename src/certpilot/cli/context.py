"""Settings flags shared by every command, and the App they open.

Building the command tree imports only Typer and the domain: settings (pydantic),
the database (SQLAlchemy, Alembic) and the services are imported when a command
runs and needs them, so `certpilot --help` and a typo answer at once. Edges name
service modules through `lazy_module`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from certpilot.config_defaults import (
    DEFAULT_DATA_DIR,
    SQLITE_URL_PREFIX,
    default_database_url,
    environment_value,
    sqlite_file,
)
from certpilot.domain.errors import ConfigurationError, InvalidInput

if TYPE_CHECKING:
    from certpilot.config import Settings
    from certpilot.services.app import App

F = TypeVar("F", bound=Callable[..., Any])

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: $CERTPILOT_DATA_DIR, else ./certpilot-data in the current directory).", show_default=False),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Database URL (default: $CERTPILOT_DATABASE_URL, else SQLite in the data dir).", show_default=False),
]

# One command runs per invocation; the root callback resets this at its start.
_overrides: dict[str, Any] = {}

def reset_overrides() -> None:
    _overrides.clear()

def remember_overrides(data_dir: Path | None, database_url: str | None) -> None:
    overrides = _overrides
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url

def given_overrides() -> dict[str, Any]:
    """The settings given as flags (`--data-dir`, `--database-url`) to this command."""
    return dict(_overrides)

def settings_flags(func: F) -> F:
    """Give a command the `--data-dir` and `--database-url` flags too."""
    signature = inspect.signature(func)
    extra = [
        inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DataDirOption),
        inspect.Parameter("database_url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DatabaseUrlOption),
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, data_dir: Path | None = None, database_url: str | None = None, **kwargs: Any) -> Any:
        remember_overrides(data_dir, database_url)
        return func(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]

class lazy_module:  # noqa: N801 - stands in for a module
    """A module imported on first attribute access: `service = lazy_module("certpilot.services.x")`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._module(), attribute)


def local_actor() -> str:
    """The actor recorded for a command run on this host (see `services.app.local_actor`)."""
    from certpilot.services.app import local_actor as actor

    return actor()


def load_settings() -> Settings:
    from pydantic import ValidationError

    from certpilot.config import Settings

    try:
        return Settings(**_overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"setting {where} is not valid: {first['msg']}") from None

def sqlite_database_for_reads() -> Path | None:
    """The SQLite file the settings name, worked out without pydantic (for the quick
    `cert list`) from the names and defaults `Settings` uses (certpilot.config_defaults):
    the flags, else the environment, else the default. None when the database is not a
    SQLite file, or a setting is one this shortcut does not read exactly as `Settings`
    would (an empty value, a URL with options: then `load_settings` decides)."""
    env = {field: environment_value(field) for field in ("data_dir", "database_url")}
    if any(value is not None and not value.strip() for value in env.values()):
        return None
    url = _overrides.get("database_url") or env["database_url"]
    if url is None:
        url = default_database_url(Path(_overrides.get("data_dir") or env["data_dir"] or DEFAULT_DATA_DIR))
    if "?" in url or url == SQLITE_URL_PREFIX:
        return None
    return sqlite_file(url)


def open_app() -> App:
    from certpilot.services.app import App

    return App(load_settings())


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a file holding a secret (a password, a PIN): secrets come from
    files rather than argv, which other users of the host can read."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidInput(f"cannot read the {what} file {path}: {reason}") from None
    return lines[0] if lines else ""
