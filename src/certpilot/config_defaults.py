"""What the settings are called in the environment and what they default to.

The one place both `config.Settings` (pydantic-settings) and the CLI's quick SQLite
reader (`cli.context.sqlite_database_for_reads`, which must not import pydantic) take
them from. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "CERTPILOT_"
DEFAULT_DATA_DIR = Path("./certpilot-data")
SQLITE_FILE_NAME = "certpilot.db"  # the database in the data dir when no database URL is given
MASTER_KEY_FILE_NAME = "master.key"  # the master key in the data dir when no key file is given
SQLITE_URL_PREFIX = "sqlite:///"


def default_database_url(data_dir: Path) -> str:
    """The database URL when none is given: SQLite in the data dir."""
    return f"{SQLITE_URL_PREFIX}{(data_dir / SQLITE_FILE_NAME).resolve()}"


def sqlite_file(database_url: str) -> Path | None:
    """The file a `sqlite:///PATH` URL names; None for any other database."""
    return Path(database_url.removeprefix(SQLITE_URL_PREFIX)) if database_url.startswith(SQLITE_URL_PREFIX) else None


def environment_value(field: str) -> str | None:
    """The environment's value for a settings field (`data_dir` -> CERTPILOT_DATA_DIR), the
    name matched regardless of case as pydantic-settings matches it; None when unset."""
    wanted = f"{ENV_PREFIX}{field}".upper()
    found = [value for name, value in os.environ.items() if name.upper() == wanted]
    return found[-1] if found else None
