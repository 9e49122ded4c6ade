"""SQLite wake-up sockets: a listener hears `wake_sqlite_loops` from this process, also
when the data dir lies so deep that the socket's path is longer than a unix socket
address may be (108 bytes), and leaves no socket behind."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from certpilot.store.wakeup import SqliteWakeListener, sqlite_wake_dir, wake_sqlite_loops


@pytest.mark.parametrize("depth", [0, 12], ids=["short-path", "path-beyond-108-bytes"])
def test_a_listener_hears_a_wake_up(tmp_path: Path, depth: int) -> None:
    data_dir = tmp_path.joinpath(*[f"deep-directory-{n:02d}" for n in range(depth)])
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{data_dir / 'certpilot.db'}"
    wake_dir = sqlite_wake_dir(url)
    assert wake_dir is not None
    if depth:
        assert len(str(wake_dir / "123456-abcdefgh.sock")) > 108

    woken = threading.Event()
    listener = SqliteWakeListener(url, woken.set)
    listener.start()
    try:
        assert [p.name.endswith(".sock") for p in wake_dir.iterdir()] == [True]
        wake_sqlite_loops(url)
        assert woken.wait(10), "the listener was not woken"
    finally:
        listener.stop()
    assert list(wake_dir.iterdir()) == []
    wake_sqlite_loops(url)  # nobody listens: nothing to do, no error


def listening(tmp_path: Path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'certpilot.db'}"
    wake_dir = sqlite_wake_dir(url)
    assert wake_dir is not None
    wake_dir.mkdir(mode=0o700)
    return url, wake_dir


def test_a_socket_that_keeps_failing_is_logged_once_and_the_others_are_still_woken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wake-up is best effort (the loop's interval bounds the delay), but a failure that
    persists is said once, not swallowed: here a stream socket where a datagram one belongs."""
    url, wake_dir = listening(tmp_path)
    odd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    odd.bind(str(wake_dir / "odd.sock"))
    woken = threading.Event()
    listener = SqliteWakeListener(url, woken.set)
    listener.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="certpilot.wakeup"):
            for _ in range(3):
                woken.clear()
                wake_sqlite_loops(url)
                assert woken.wait(10), "a failing socket kept the others from being woken"
    finally:
        listener.stop()
        odd.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "odd.sock" in warnings[0].getMessage() and "Protocol wrong type" in warnings[0].getMessage()


def test_what_cannot_be_cleaned_up_is_no_error_for_the_waker(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Work was made due and committed already: the wake-up never turns that into an error."""
    url, wake_dir = listening(tmp_path)
    (wake_dir / "stray.sock").mkdir()  # refuses like a gone loop, but cannot be unlinked
    with caplog.at_level(logging.WARNING, logger="certpilot.wakeup"):
        wake_sqlite_loops(url)
        wake_sqlite_loops(url)
    assert len(caplog.records) == 1 and "stray.sock" in caplog.records[0].getMessage()


def test_a_listener_that_stops_hearing_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = listening(tmp_path)
    listener = SqliteWakeListener(url, lambda: None)
    with caplog.at_level(logging.WARNING, logger="certpilot.wakeup"):
        listener.start()
        listener._socket.close()  # noqa: SLF001 - the failure under test: its socket is gone
        listener._thread.join(timeout=10)  # noqa: SLF001
    listener.stop()
    assert any("wakes on its interval only" in r.getMessage() for r in caplog.records), caplog.text
