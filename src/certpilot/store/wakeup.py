"""Waking renewal loops in other processes.

PostgreSQL: LISTEN/NOTIFY, sent in the transaction that made work due. SQLite (one
host): each loop binds a unix datagram socket in a directory beside the database
file (`certpilot.db.wake/`), and whoever made work due sends one byte to every
socket there; a socket whose loop has gone is removed by the next sender. A unix
socket's path holds at most 107 bytes: a longer one is reached through the
directory's descriptor (`/proc/self/fd/N/NAME`), so a deep data dir works too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

CHANNEL = "certpilot_wake"
log = logging.getLogger("certpilot.wakeup")


def notify_wake(session: Session) -> None:
    """Queue a wake-up; PostgreSQL delivers it when the transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


def sqlite_wake_dir(database_url: str) -> Path | None:
    """Where the loops on this SQLite database listen, or None for another database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database + ".wake")


_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes with its NUL; keep a margin


class _ShortPaths:
    """Socket addresses for the files of `directory` that fit in sun_path."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd: int | None = None
        if len(os.fsencode(directory)) + 32 > _MAX_SOCKET_PATH:
            self._fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def address(self, name: str) -> str:
        if self._fd is None:
            return str(self._directory / name)
        return f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Reported:
    """Which wake-up failures were logged already: a persistent one is said once (until a
    wake-up of that directory goes through), not on every request that makes work due."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int | None]] = set()
        self._lock = threading.Lock()

    def first(self, directory: Path, what: str, exc: OSError) -> bool:
        key = (str(directory), what, exc.errno)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def cleared(self, directory: Path) -> None:
        with self._lock:
            self._seen = {key for key in self._seen if key[0] != str(directory)}


_reported = _Reported()


def _failed(directory: Path, what: str, exc: OSError) -> None:
    """Log a failed wake-up once (a warning), then only at debug level."""
    level = logging.WARNING if _reported.first(directory, what, exc) else logging.DEBUG
    log.log(level, "cannot wake the renewal loop at %s (%s); it wakes on its interval instead", what, exc)


def wake_sqlite_loops(database_url: str) -> None:
    """Wake every renewal loop listening on this SQLite database (none: nothing to do).

    Best effort, never an error for the caller (its work is committed; each loop's
    interval bounds the delay): a full queue means a wake-up is pending already; a
    socket whose loop has gone is removed; any other failure is logged once."""
    directory = sqlite_wake_dir(database_url)
    if directory is None or not directory.is_dir():
        return
    try:
        paths = _ShortPaths(directory)
    except OSError as exc:
        _failed(directory, str(directory), exc)
        return
    failed = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for path in directory.glob("*.sock"):
                try:
                    _send(sender, paths.address(path.name), path)
                except OSError as exc:
                    failed = True
                    _failed(directory, str(path), exc)
    except OSError as exc:  # no socket to send from, the directory unreadable
        failed = True
        _failed(directory, str(directory), exc)
    finally:
        paths.close()
    if not failed:
        _reported.cleared(directory)


def _send(sender: socket.socket, address: str, path: Path) -> None:
    try:
        sender.sendto(b"w", address)
    except BlockingIOError:
        pass  # a full queue: that loop has a wake-up pending already
    except (ConnectionRefusedError, FileNotFoundError):  # its loop has gone
        path.unlink(missing_ok=True)


class SqliteWakeListener:
    """Calls `on_wake` whenever another process on this host made work due (SQLite)."""

    def __init__(self, database_url: str, on_wake: Callable[[], None]) -> None:
        directory = sqlite_wake_dir(database_url)
        assert directory is not None
        self._path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.settimeout(1.0)
        paths = _ShortPaths(directory)
        try:
            self._socket.bind(paths.address(self._path.name))
        except OSError as exc:
            # the loop still runs on its interval: slower to react, never stopped by this
            log.warning("cannot listen for wake-ups at %s (%s); the renewal loop wakes on its interval only",
                        self._path, exc)
            self._socket.close()
            self._stop.set()
        finally:
            paths.close()

    def start(self) -> None:
        if not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()
        self._path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._socket.recv(64)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():  # not closed by stop(): say so, the loop goes on
                    log.warning("stopped listening for wake-ups at %s (%s); the renewal loop wakes on its "
                                "interval only", self._path, exc)
                return
            self._on_wake()


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
