"""Settings from the environment (`CERTPILOT_*`) or the matching CLI flag."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from certpilot.config_defaults import (
    DEFAULT_DATA_DIR,
    ENV_PREFIX,
    MASTER_KEY_FILE_NAME,
    default_database_url,
    sqlite_file,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    master_key_file: Path | None = None
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    lease_margin_s: float = Field(default=60.0, gt=0)  # a lease lasts the script's timeout plus this
    deferred_poll_min_s: float = Field(default=30.0, gt=0)  # the soonest a deferred request is polled again
    renewal_info_min_check_s: float = Field(default=3600.0, gt=0)  # the soonest the CA's renewal window is asked again
    hsm_key_grace_days: float | None = Field(default=None, ge=0)  # unset: keep while the revision is in history
    script_memory_limit_mb: int = Field(default=2048, ge=0)
    max_in_flight: int = Field(default=64, ge=1)  # script calls in flight per process
    script_user: str | None = None  # when root: the user scripts run as (default certpilot-script)
    script_recycle_calls: int = Field(default=1000, ge=1)  # a warm script host serves this many calls
    # notifications by mail: smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://…;
    # `?from=ADDR` sets the sender, `?cafile=PATH` trusts a private CA
    smtp_url: str | None = None
    # argon2 at the smallest cost: only for test suites, which would otherwise spend most of their time
    # hashing; honoured only when set explicitly, and `serve` warns loudly when it is
    insecure_test_password_hashing: bool = False

    @field_validator("script_user")
    @classmethod
    def _empty_user_is_default(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("database_url")
    @classmethod
    def _empty_is_default(cls, value: str | None) -> str | None:
        return value or None

    @property
    def effective_database_url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)

    @property
    def effective_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / MASTER_KEY_FILE_NAME

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_file(self.effective_database_url)

    @property
    def protected_paths(self) -> tuple[tuple[str, Path], ...]:
        """What no script grant or deploy root may reach, as (what, path): the master key
        file, the SQLite database (when it is one), the data dir. Most specific first, so
        that an error names the master key rather than the data dir holding it."""
        protected = [("master key file", self.effective_master_key_file)]
        if self.sqlite_path is not None:
            protected.append(("database", self.sqlite_path))
        return (*protected, ("data dir", self.data_dir))
