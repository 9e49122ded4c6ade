"""SQLite wake-up sockets: a listener hears `wake_sqlite_loops` from this process, also
when the data dir lies so deep that the socket's path is longer than a unix socket
address may be (108 bytes), and leaves no socket behind."""

from __future__ import annotations

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
