"""Real certpilot processes, for every suite: the installed console script, a free port
on loopback, the environment a child gets (this run's CERTPILOT_* settings removed, the
test's own put in), `certpilot serve` and `certpilot worker` with their output in files,
the processes they leave behind (Linux /proc), and polling for what a process does."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import pytest

if TYPE_CHECKING:
    from certpilot.config import Settings

T = TypeVar("T")


def certpilot_executable() -> str:
    """The `certpilot` console script installed beside this Python (fails the test without it)."""
    candidate = Path(sys.prefix) / "bin" / "certpilot"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("certpilot", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("the certpilot console script is not installed next to this Python")
    return found


def certpilot_argv() -> list[str]:
    """argv[0:] that runs certpilot: the console script, else `python -m certpilot`."""
    script = Path(sys.executable).with_name("certpilot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certpilot"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_without_settings() -> dict[str, str]:
    """This process's environment without any CERTPILOT_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """A child's environment naming `settings`' data dir and database, with a 1 s
    reconcile interval unless `overrides` say otherwise."""
    env = env_without_settings()
    env.update(
        CERTPILOT_DATA_DIR=str(settings.data_dir),
        CERTPILOT_DATABASE_URL=settings.effective_database_url,
        CERTPILOT_RECONCILE_INTERVAL_S="1",
    )
    env.update(overrides)
    return env


# --- what a process left behind (Linux /proc) ------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> set[int]:
    """Every living descendant of `pid`."""
    found: set[int] = set()
    todo = _children(pid)
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo += _children(child)
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --- waiting -------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline,
    or at once when `alive` reports a reason (a worker process died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if alive is not None and (reason := alive()):
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(interval_s)


# --- `certpilot serve` ----------------------------------------------------------------


@dataclass
class ServerProcess:
    """`certpilot serve` on 127.0.0.1, its stdout and stderr in files."""

    proc: subprocess.Popen[bytes]
    base_url: str
    stdout_path: Path
    stderr_path: Path

    @classmethod
    def start(cls, settings: Settings, directory: Path, *, ready_timeout_s: float = 30.0) -> ServerProcess:
        port = free_port()
        stdout_path, stderr_path = directory / "serve.stdout", directory / "serve.stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [*certpilot_argv(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=settings_env(settings), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=directory,
            )
        server = cls(proc, f"http://127.0.0.1:{port}", stdout_path, stderr_path)
        server.wait_until_up(ready_timeout_s)
        return server

    def wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"certpilot serve exited with {self.proc.returncode}:\n{self.stderr()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"certpilot serve did not answer within {timeout_s:.0f} s:\n{self.stderr()[-4000:]}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then the exit status; raises TimeoutExpired if it does not stop in time."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def clean_up(self, leftovers: Iterable[int] = ()) -> None:
        """Stop the server whatever state it is in, and any process it left behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in leftovers:
            if is_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


# --- `certpilot worker` ---------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One `certpilot worker`, its output in files. The script worker processes it
    starts run in sessions of their own; they are remembered so that a worker killed
    with SIGKILL does not leave them behind."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    script_workers: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, name: str, env: dict[str, str], directory: Path) -> WorkerProcess:
        log_path = directory / f"worker-{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*certpilot_argv(), "worker"], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            )
        return cls(name, proc, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def died(self) -> str | None:
        """Why this worker is no longer running, or None while it runs."""
        if self.proc.poll() is None:
            return None
        return f"worker {self.name} exited with status {self.proc.returncode}:\n{self.log()[-4000:]}"

    def remember_script_workers(self) -> None:
        # the script worker processes and the children they fork for calls
        self.script_workers |= {p for p in descendants(self.pid) if "certpilot.issuers.zygote" in cmdline(p)}

    def request_stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """The exit status; raises TimeoutExpired if the worker does not end in time."""
        return self.proc.wait(timeout=timeout_s)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then the exit status; raises TimeoutExpired if it does not stop in time."""
        self.request_stop()
        return self.wait(timeout_s)

    def kill(self) -> None:
        self.remember_script_workers()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def clean_up(self) -> None:
        """Stop the worker whatever state it is in, and the script workers it left."""
        if self.proc.poll() is None:
            self.remember_script_workers()
            try:
                self.terminate(timeout_s=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for pid in self.script_workers:
            if "certpilot.issuers.zygote" not in cmdline(pid):
                continue  # gone already (and the pid not reused by one of ours)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
