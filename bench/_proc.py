"""certpilot as subprocesses (`certpilot worker`, `certpilot serve`): start, watch, stop.

Only processes this benchmark started are signalled, by pid: first SIGTERM to the
certpilot process (it stops its loop and its script workers itself), then, if it
has not exited in time, SIGKILL to it and to the children it was seen to have.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _cpu import proc_cpu_s

CERTPILOT = str(Path(sys.executable).with_name("certpilot"))


def certpilot_env(data_dir: Path, url: str, **settings: object) -> dict[str, str]:
    """This environment without any CERTPILOT_* of the caller's, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env["CERTPILOT_DATA_DIR"] = str(data_dir)
    env["CERTPILOT_DATABASE_URL"] = url
    for key, value in settings.items():
        env[f"CERTPILOT_{key.upper()}"] = str(value)
    return env


def start(args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    log_file = open(log_path, "ab")
    try:
        return subprocess.Popen([CERTPILOT, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT)
    finally:
        log_file.close()


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    found += [int(c) for c in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live children, each with the children they reaped
    (the script workers' forked script children)."""
    total = proc_cpu_s(pid, True) or 0.0
    for child in children(pid):
        total += proc_cpu_s(child, True) or 0.0
    return total


def status_kb(pid: int | str, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    seen = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *seen]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


class ChangingPidsCpu:
    """CPU seconds of a set of processes that changes while it is watched (PostgreSQL backends:
    a pool closes and opens connections). A pid seen at the first sample counts from its value
    then, one first seen later counts from 0 (it started since); each counts up to the last
    value seen, so a backend that exits between two samples loses at most one interval."""

    def __init__(self, pids) -> None:
        self._pids = pids
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._first = True

    def sample(self) -> float:
        for pid in self._pids():
            value = proc_cpu_s(pid, False)
            if value is None:
                continue
            if pid not in self._base:
                self._base[pid] = value if self._first else 0.0
            self._last[pid] = value
        self._first = False
        return self.spent()

    def spent(self) -> float:
        return sum(self._last[pid] - self._base[pid] for pid in self._last)


class Sampler:
    """Calls `sample()` of a ChangingPidsCpu every `interval_s` on a thread, until stopped."""

    def __init__(self, meter: ChangingPidsCpu, interval_s: float = 0.2) -> None:
        import threading

        self.meter = meter
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.meter.sample()

    def __enter__(self) -> Sampler:
        self.meter.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.meter.sample()
