"""The application container: settings, database, sealer, script runner, clock.

Built once by an edge (CLI command, API app factory) and passed to services.
Nothing here happens at import time.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable

from certpilot.clock import Clock, SystemClock
from certpilot.config import Settings
from certpilot.config_defaults import SQLITE_FILE_NAME
from certpilot.domain.errors import ConfigurationError
from certpilot.issuers.runner import Issuer, RunnerConfig, ScriptRunner
from certpilot.issuers.sandbox import SandboxError
from certpilot.keys.sealing import Sealer, load_master_key
from certpilot.services.passwords import Passwords, cheap_hasher
from certpilot.store.session import Database
from certpilot.store.wakeup import wake_sqlite_loops


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        random_fraction: Callable[[], float] | None = None,
        check_schema: bool = True,
        issuer: Issuer | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.random_fraction = random_fraction or random.random
        if check_schema and settings.database_url is None and not (settings.data_dir / SQLITE_FILE_NAME).exists():
            raise ConfigurationError(
                f"no certpilot database in {settings.data_dir.resolve()}: point at your data dir with "
                "--data-dir or CERTPILOT_DATA_DIR, or create one there with `certpilot init`"
            )
        self.db = Database(settings.effective_database_url)
        if check_schema:
            self.db.check_ready()
        self._sealer: Sealer | None = None
        self._runner: Issuer | None = issuer  # None: the sandboxed script runner, built on first use
        self._lock = threading.Lock()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake_listeners: list[Callable[[], None]] = []
        # argon2 with a bound on hashes in flight; tests inject a cheap one (or set the insecure setting)
        self.passwords = passwords or Passwords(cheap_hasher() if settings.insecure_test_password_hashing else None)

    def add_wake_listener(self, listener: Callable[[], None]) -> None:
        """`listener` is called after work was made due in this process (a renewal loop's `wake`)."""
        self._wake_listeners.append(listener)

    def work_is_due(self) -> None:
        """Wake the renewal loops: those in this process directly, others through the
        database (PostgreSQL NOTIFY, sent by the service in its transaction) or, on
        SQLite, the wake-up sockets beside the database file."""
        for listener in self._wake_listeners:
            listener()
        wake_sqlite_loops(self.db.url)  # loops in other processes on this host (SQLite)

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer(load_master_key(self.settings.effective_master_key_file))
        return self._sealer

    @property
    def runner(self) -> Issuer:
        with self._lock:
            if self._runner is None:
                settings = self.settings
                self._runner = _build_runner(RunnerConfig(
                    max_in_flight=settings.max_in_flight,
                    memory_limit_bytes=settings.script_memory_limit_mb * 1024 * 1024,
                    script_user=settings.script_user,
                    forbidden_paths=tuple(str(path.resolve()) for _, path in settings.protected_paths),
                    recycle_after_calls=settings.script_recycle_calls,
                ))
            return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
        self.db.dispose()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_runner(config: RunnerConfig) -> ScriptRunner:
    try:
        return ScriptRunner(config)
    except SandboxError as exc:
        raise ConfigurationError(f"the script sandbox cannot be set up: {exc}") from exc


def local_actor() -> str:
    """Who is acting from the command line on this host."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"cli:{user}"
