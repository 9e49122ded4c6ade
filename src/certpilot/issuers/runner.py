"""The controller's side of script execution: a pool of worker processes.

`ScriptRunner.call` sends one call to an idle worker process (started on demand,
at most `workers` of them) and turns its reply into a `ScriptResult`. A worker
that stops answering is killed and replaced; the call then fails, retryably.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from certpilot.clock import monotonic_s
from certpilot.issuers.capture import scrub
from certpilot.issuers.protocol import ChannelClosed, read_message, write_message

REPLY_GRACE_S = 15.0
STARTUP_TIMEOUT_S = 30.0
DEFAULT_MEMORY_LIMIT_BYTES = 2 * 1024 * 1024 * 1024
ERROR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ScriptCall:
    script_name: str
    source: str
    timeout_s: int
    csr_pem: str
    common_name: str
    args: dict[str, str]
    secrets: tuple[str, ...]
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptResult:
    """What one call gave. Exactly one of `pem`, `pending` or `error` is set.
    `returned_other` is set (with `error`) when the script returned something not text."""

    pem: str | None
    error: str | None
    timed_out: bool
    pending: dict[str, Any] | None
    output: str
    duration_s: float
    returned_other: bool = False


class WorkerDied(Exception):
    pass


class _Worker:
    def __init__(self) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "certpilot.issuers.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # only the worker's own crash report; scripts write to captured pipes
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the controller only
        )
        assert self.proc.stdin and self.proc.stdout
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        hello = self._read(STARTUP_TIMEOUT_S)
        if not hello.get("ready"):
            self.kill()
            raise WorkerDied("the worker process did not start")

    def _read(self, timeout_s: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._out, selectors.EVENT_READ)
            if not selector.select(timeout=timeout_s):
                raise WorkerDied(f"the worker process gave no answer within {timeout_s:.0f} s")
        try:
            return read_message(self._out)
        except ChannelClosed as exc:
            raise WorkerDied(f"the worker process stopped ({exc})") from exc

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            write_message(self._in, request)
        except OSError as exc:
            raise WorkerDied(f"the worker process is gone ({exc})") from exc
        return self._read(timeout_s)

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()  # EOF: the worker returns from its loop
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


class ScriptRunner:
    """A bounded pool of worker processes; thread-safe."""

    def __init__(self, workers: int, memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._memory_limit_bytes = memory_limit_bytes
        self._closed = False

    def call(self, call: ScriptCall) -> ScriptResult:
        request = {
            "script_name": call.script_name,
            "source": call.source,
            "timeout_s": call.timeout_s,
            "csr": call.csr_pem,
            "common_name": call.common_name,
            "args": call.args,
            "secrets": list(call.secrets),
            "context": call.context,
            "memory_limit_bytes": self._memory_limit_bytes,
        }
        with self._slots:
            worker = self._take()
            started = monotonic_s()
            try:
                reply = worker.call(request, call.timeout_s + REPLY_GRACE_S)
            except WorkerDied as exc:
                self._discard(worker)
                return ScriptResult(None, f"the script worker failed: {exc}", False, None, "", monotonic_s() - started)
            self._idle.put(worker)
        return _to_result(reply, call.secrets)

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.is_alive():
                return worker
            self._discard(worker)
        if self._closed:
            raise RuntimeError("the script runner is closed")
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._all if w.is_alive()]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.close()

    def __enter__(self) -> ScriptRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_result(reply: dict[str, Any], secrets: tuple[str, ...]) -> ScriptResult:
    stdout, stderr = scrub(reply.get("stdout", ""), secrets), scrub(reply.get("stderr", ""), secrets)
    logs = [scrub(line, secrets) for line in reply.get("logs", [])]
    sections = [("log", "\n".join(logs)), ("stdout", stdout), ("stderr", stderr)]
    output = "\n".join(f"--- {name} ---\n{text.rstrip()}" for name, text in sections if text.strip())
    duration_s = float(reply.get("duration_s", 0.0))

    def failed(message: str, timed_out: bool = False) -> ScriptResult:
        return ScriptResult(None, scrub(message, secrets), timed_out, None, output, duration_s)

    if "worker_error" in reply:
        return failed(f"the script worker failed: {reply['worker_error']}")
    if reply.get("timed_out"):
        return failed(f"the script did not finish within its timeout ({reply['duration_s']:.0f} s) and was killed", True)
    if "signal" in reply:
        return failed(f"the script process was killed by {reply['signal']}" + _stderr_hint(stderr))
    if "error" in reply:
        return failed(str(reply["error"]))
    if "pending" in reply:
        return ScriptResult(None, None, False, dict(reply["pending"]), output, duration_s)
    exit_status = reply.get("exit_status", 0)
    if exit_status != 0:
        tail = stderr.strip()[-ERROR_TAIL_CHARS:]
        if tail:
            return failed(f"{tail} (exit status {exit_status})")
        return failed(f"the script exited with status {exit_status} without returning a certificate")
    if "result" in reply:
        return ScriptResult(reply["result"], None, False, None, output, duration_s)
    if "result_type" in reply:
        message = f"check 1 (PEM): the script returned {reply['result_type']}, not PEM text"
        return ScriptResult(None, message, False, None, output, duration_s, returned_other=True)
    return failed("the script ended without returning a certificate" + _stderr_hint(stderr))


def _stderr_hint(stderr: str) -> str:
    tail = stderr.strip()[-ERROR_TAIL_CHARS:]
    return f": {tail}" if tail else ""
