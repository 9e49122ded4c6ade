"""Waking renewal loops in other processes: PostgreSQL LISTEN/NOTIFY.

SQLite has no such channel; there the loop's interval bounds the delay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

CHANNEL = "certpilot_wake"
log = logging.getLogger("certpilot.wakeup")


def notify_wake(session: Session) -> None:
    """Queue a wake-up; PostgreSQL delivers it when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class WakeListener:
    """Calls `on_wake` whenever a NOTIFY arrives, on a thread of its own (PostgreSQL only)."""

    def __init__(self, database_url: str, on_wake: Callable[[], None]) -> None:
        url = make_url(database_url)
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)

    @staticmethod
    def is_supported(database_url: str) -> bool:
        return make_url(database_url).get_backend_name() == "postgresql"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._on_wake()
            except psycopg.Error as exc:  # the loop's interval still bounds the delay meanwhile
                log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(5)
