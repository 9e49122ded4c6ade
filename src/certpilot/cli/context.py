"""Settings flags shared by every command, and the App they open."""

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from certpilot.config import Settings
from certpilot.domain.errors import ConfigurationError, InvalidInput
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

def load_settings() -> Settings:
    try:
        return Settings(**_overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"setting {where} is not valid: {first['msg']}") from None

def open_app() -> App:
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
