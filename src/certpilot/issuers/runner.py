"""The controller's side of script execution: warm, sandboxed hosts per profile.

`ScriptRunner.call` runs one call in a script host of the call's profile (see
`host`): an idle warm one, or a new one forked by the zygote (see `zygote`).
A profile has at most `ScriptCall.concurrency` calls in flight and the runner at
most `max_in_flight`; a call beyond either waits for a free slot. A host serves
calls of one profile and one script version only, and is recycled after
`recycle_after_calls` calls, at a timeout, when it crashed, and when it has
been idle for `idle_timeout_s`.

The request (with the profile's secrets) goes from here to the host over the
host's own socket; the host's stdout and stderr are pipes read here, bounded and
scrubbed; a host that misses its deadline is killed, and its supervisor kills
whatever it started.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from certpilot.clock import monotonic_s
from certpilot.issuers import sandbox
from certpilot.issuers.capture import BoundedCapture, scrub, scrub_all
from certpilot.issuers.messages import OPERATION_REQUEST, CallReply, CallRequest, HostSpec
from certpilot.domain.script_state import StateChanges
from certpilot.issuers.protocol import ChannelClosed, read_message, write_message

HEAD_BYTES = 8 * 1024
TAIL_BYTES = 24 * 1024  # 32 KiB kept per stream: 64 KiB for stdout and stderr together
STARTUP_TIMEOUT_S = 30.0
STATUS_WAIT_S = 5.0
DEFAULT_MEMORY_LIMIT_BYTES = 2 * 1024 * 1024 * 1024
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_IN_FLIGHT = 64
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
    profile: str = ""  # hosts are never shared across profiles; "" is a pool of its own
    concurrency: int = DEFAULT_CONCURRENCY
    allow_read: tuple[str, ...] = ()
    allow_write: tuple[str, ...] = ()
    operation: str = OPERATION_REQUEST  # or OPERATION_POLL: certificate_poll(cookie, args_dict)
    cookie: str = ""  # for a poll: what the CA's Pending named the request by
    state: dict[str, str] = field(default_factory=dict)  # the profile's context.state as the call starts
    certificate_pem: str = ""  # OPERATION_RENEWAL_INFO: the served certificate, leaf then chain


class _Outcome:
    """What every outcome answers, so a caller that only reports need not match on the
    type: `pem` is set on `Issued` only, `error` on `Failed` only."""

    pem: str | None = None
    error: str | None = None
    timed_out: bool = False
    returned_other: bool = False
    output: str
    duration_s: float
    state_changes: StateChanges | None  # what the call did to context.state (None: nothing)

    @property
    def pending(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class Issued(_Outcome):
    """The script returned text (PEM, to be checked)."""

    pem: str
    output: str = ""
    duration_s: float = 0.0
    state_changes: StateChanges | None = None


@dataclass(frozen=True)
class Pending(_Outcome):
    """The CA accepted the request and will answer later (`raise Pending(...)`)."""

    retry_after_s: int
    cookie: str
    output: str = ""
    duration_s: float = 0.0
    state_changes: StateChanges | None = None

    @property
    def pending(self) -> dict[str, Any] | None:
        return {"retry_after_s": self.retry_after_s, "cookie": self.cookie}


@dataclass(frozen=True)
class Failed(_Outcome):
    """The call failed: the script's own words, or what the runner saw. `timed_out`: killed
    at the timeout; `returned_other`: the script returned something not text (check 1);
    `host_lost`: the call never finished in the script (killed at its timeout, its host
    died, or no host could be started), so the script's answer is unknown."""

    error: str
    output: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    returned_other: bool = False
    state_changes: StateChanges | None = None
    host_lost: bool = False


@dataclass(frozen=True)
class RenewalInfoAnswer(_Outcome):
    """What `certificate_renewal_info` answered: `window` is None (the CA suggests nothing)
    or the window's fields as the script gave them, to be validated by the caller."""

    window: dict[str, Any] | None
    output: str = ""
    duration_s: float = 0.0
    state_changes: StateChanges | None = None


ScriptResult = Issued | Pending | Failed | RenewalInfoAnswer


@dataclass(frozen=True)
class RunnerConfig:
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES
    script_user: str | None = None  # None: certpilot-script, else nobody (only when root)
    forbidden_paths: tuple[str, ...] = ()  # the data dir, master key, database: never granted
    recycle_after_calls: int = 1000
    idle_timeout_s: float = 300.0


class Issuer(Protocol):
    """What issuance needs of a script runner; a test passes a fake (no processes)."""

    def call(self, call: ScriptCall) -> ScriptResult: ...

    def describe(self) -> str: ...

    def limitations(self) -> list[str]: ...

    def close(self) -> None: ...


class HostFailed(Exception):
    """A host could not be started or stopped answering; the call fails, retryably."""


@dataclass(frozen=True)
class _PoolKey:
    profile: str
    script_name: str
    source_sha256: str
    allow_read: tuple[str, ...]
    allow_write: tuple[str, ...]


class _Zygote:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "certpilot.issuers.zygote", str(theirs.fileno())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None,
            pass_fds=[theirs.fileno()], env=env, cwd="/", start_new_session=True,
        )
        theirs.close()
        self.control = ours
        self.lock = threading.Lock()
        hello = self._receive(STARTUP_TIMEOUT_S)
        if not hello.get("ready"):
            self.kill()
            raise HostFailed("the script zygote did not start")
        self.base_dir: str = hello["base_dir"]

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        self.control.settimeout(timeout_s)
        try:
            data = self.control.recv(65536)
        except (OSError, TimeoutError) as exc:
            raise HostFailed(f"the script zygote gave no answer ({exc})") from exc
        if not data:
            raise HostFailed("the script zygote has stopped")
        return json.loads(data)

    def spawn(self, spec: HostSpec, fds: list[int]) -> None:
        with self.lock:
            try:
                socket.send_fds(self.control, [json.dumps(spec.to_message()).encode()], fds)
            except OSError as exc:
                raise HostFailed(f"the script zygote is gone ({exc})") from exc
            reply = self._receive(STARTUP_TIMEOUT_S)
        if "supervisor" not in reply:
            raise HostFailed(f"the script zygote could not start a host: {reply.get('error')}")

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.control.close()  # EOF: the zygote stops its supervisors and exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class _Host:
    """The controller's handle on one script host."""

    def __init__(self, zygote: _Zygote, spec: HostSpec, key: _PoolKey) -> None:
        self.key = key
        self.calls = 0
        self.idle_since = monotonic_s()
        self.loaded = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            zygote.spawn(spec, [theirs.fileno(), out_w, err_w, status_w])
        except HostFailed:
            for fd in (out_r, err_r, status_r):
                os.close(fd)
            ours.close()
            raise
        finally:
            theirs.close()
            for fd in (out_w, err_w, status_w):
                os.close(fd)
        self.sock, self.out_r, self.err_r, self.status_r = ours, out_r, err_r, status_r
        for fd in (out_r, err_r):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.pidfd: int | None = None
        if not self._readable([self.sock.fileno()], STARTUP_TIMEOUT_S):
            self.close()
            raise HostFailed(f"the script host gave no sign of life within {STARTUP_TIMEOUT_S:.0f} s")
        try:
            hello = read_message(self.sock.fileno())
        except ChannelClosed as exc:
            self.close()
            raise HostFailed(f"the script host stopped while starting ({exc})") from exc
        if not hello.get("ready"):
            self.close()
            raise HostFailed(f"the script sandbox could not be set up: {hello.get('error')}")
        self.pid: int = hello["pid"]
        self.uid: int = hello["uid"]
        self.landlock_abi: int = hello["landlock_abi"]
        self.pidfd = os.pidfd_open(self.pid)

    @staticmethod
    def _readable(fds: list[int], timeout_s: float) -> bool:
        with selectors.DefaultSelector() as selector:
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            return bool(selector.select(timeout=timeout_s))

    def call(self, request: CallRequest, margin: int) -> tuple[CallReply | None, dict[str, Any], BoundedCapture, BoundedCapture]:
        """Send one call and wait for it, at most its timeout. Returns the reply (None when
        the host died or was killed), what the host's death said, and the output."""
        out = BoundedCapture(HEAD_BYTES, TAIL_BYTES, margin)
        err = BoundedCapture(HEAD_BYTES, TAIL_BYTES, margin)
        self.calls += 1
        started = monotonic_s()
        try:
            write_message(self.sock.fileno(), request.to_message())
        except OSError:
            return None, self._death(out, err), out, err
        deadline = started + request.timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock.fileno(), selectors.EVENT_READ)
            selector.register(self.out_r, selectors.EVENT_READ, out)
            selector.register(self.err_r, selectors.EVENT_READ, err)
            while True:
                remaining = deadline - monotonic_s()
                if remaining <= 0:
                    self.kill()
                    return None, {**self._death(out, err), "timed_out": True}, out, err
                for key, _ in selector.select(timeout=remaining):
                    if key.data is not None:
                        self._drain(key.fd, key.data)
                        continue
                    try:
                        message = read_message(self.sock.fileno())
                    except ChannelClosed:
                        return None, self._death(out, err), out, err
                    self._drain(self.out_r, out)
                    self._drain(self.err_r, err)
                    reply = CallReply.from_message(message)
                    self.loaded = reply.loaded
                    self.idle_since = monotonic_s()
                    return reply, {}, out, err

    @staticmethod
    def _drain(fd: int, capture: BoundedCapture) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            capture.feed(chunk)

    def _death(self, out: BoundedCapture, err: BoundedCapture) -> dict[str, Any]:
        """How the host ended, from its supervisor, once everything it started is gone."""
        report: dict[str, Any] = {}
        if self._readable([self.status_r], STATUS_WAIT_S):
            try:
                report = json.loads(os.read(self.status_r, 4096) or b"{}")
            except ValueError:
                report = {}
        self._drain(self.out_r, out)
        self._drain(self.err_r, err)
        self.close()
        return report

    def kill(self) -> None:
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """End the host (EOF on its socket) and release everything held for it."""
        if self.sock.fileno() == -1:
            return
        self.sock.close()
        for fd in (self.out_r, self.err_r, self.status_r, self.pidfd):
            if fd is not None:
                os.close(fd)
        self.pidfd = None


class ScriptRunner:
    """Warm per-profile script hosts behind concurrency limits; thread-safe."""

    def __init__(self, config: RunnerConfig | None = None) -> None:
        self.config = config or RunnerConfig()
        if self.config.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._in_flight = threading.BoundedSemaphore(self.config.max_in_flight)
        self._profile_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._idle: dict[_PoolKey, list[_Host]] = defaultdict(list)
        self._busy: set[_Host] = set()
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._user = sandbox.resolve_script_user(self.config.script_user)
        self._closed = False
        self.hosts_started = 0

    # --- what the sandbox holds on this machine --------------------------------

    @property
    def script_user(self) -> sandbox.ScriptUser | None:
        return self._user

    def describe(self) -> str:
        return sandbox.describe(self._user)

    def limitations(self) -> list[str]:
        """One sentence per sandbox layer this machine cannot apply."""
        return sandbox.limitations(self._user)

    # --- calls ------------------------------------------------------------------

    def call(self, call: ScriptCall) -> ScriptResult:
        key = _PoolKey(call.profile, call.script_name, hashlib.sha256(call.source.encode()).hexdigest(),
                       call.allow_read, call.allow_write)
        margin = max((len(s.encode()) for s in call.secrets if s), default=0)
        with self._in_flight, self._slots_of(call.profile, call.concurrency):
            started = monotonic_s()
            try:
                host = self._take(key)
            except HostFailed as exc:
                return Failed(f"the script worker failed: {exc}", duration_s=monotonic_s() - started, host_lost=True)
            request = CallRequest(
                timeout_s=call.timeout_s, csr=call.csr_pem, common_name=call.common_name, args=dict(call.args),
                secrets=list(call.secrets), context=dict(call.context),
                source=None if host.loaded else call.source,
                operation=call.operation, cookie=call.cookie, state=dict(call.state),
                certificate=call.certificate_pem,
            )
            reply, death, out, err = host.call(request, margin)
            self._put_back(host, healthy=reply is not None and reply.loaded)
        duration_s = reply.duration_s if reply is not None else monotonic_s() - started
        return _to_result(reply, death, out.text(call.secrets), err.text(call.secrets), call.secrets, duration_s)

    def _slots_of(self, profile: str, concurrency: int) -> threading.BoundedSemaphore:
        with self._lock:
            slots = self._profile_slots.get((profile, concurrency))
            if slots is None:
                slots = self._profile_slots[(profile, concurrency)] = threading.BoundedSemaphore(max(1, concurrency))
            return slots

    def _take(self, key: _PoolKey) -> _Host:
        stale: list[_Host] = []
        host = None
        with self._lock:
            if self._closed:
                raise HostFailed("the script runner is closed")
            now = monotonic_s()
            for other_key in list(self._idle):
                kept = []
                for idle in self._idle[other_key]:
                    expired = now - idle.idle_since > self.config.idle_timeout_s
                    replaced = other_key != key and other_key.profile == key.profile  # script or grants changed
                    (stale if expired or replaced else kept).append(idle)
                self._idle[other_key] = kept
            if self._idle[key]:
                host = self._idle[key].pop()
            zygote = self._zygote_locked() if host is None else None
        for idle in stale:
            idle.close()
        if host is None:
            assert zygote is not None
            host = _Host(zygote, self._spec(key), key)
            with self._lock:
                self.hosts_started += 1
        with self._lock:
            self._busy.add(host)
        return host

    def _zygote_locked(self) -> _Zygote:
        if self._zygote is None or not self._zygote.is_alive():
            if self._zygote is not None:
                self._zygote.kill()
            self._zygote = _Zygote()
        return self._zygote

    def _spec(self, key: _PoolKey) -> HostSpec:
        import certpilot

        forbidden = list(self.config.forbidden_paths)
        package_dir = os.path.dirname(os.path.abspath(certpilot.__file__))
        system = sandbox.SYSTEM_READ_PATHS + tuple(
            sandbox.python_read_paths(sys.path, [sys.prefix, sys.base_prefix, sys.exec_prefix, package_dir]))
        user = self._user
        return HostSpec(
            script_name=key.script_name, base_dir="",
            user=(user.uid, user.gid, user.name) if user else None,
            read_paths=tuple(sandbox.without_forbidden([*system, *key.allow_read], forbidden)),
            write_paths=tuple(sandbox.without_forbidden(list(key.allow_write), forbidden)),
            memory_limit_bytes=self.config.memory_limit_bytes,
        )

    def _put_back(self, host: _Host, *, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(host)
            keep = healthy and not self._closed and host.calls < self.config.recycle_after_calls
            if keep:
                self._idle[host.key].append(host)
                surplus = self._surplus_idle_locked()
            else:
                surplus = [host]
        for extra in surplus:
            extra.close()

    def _surplus_idle_locked(self) -> list[_Host]:
        """The oldest idle hosts beyond `max_in_flight` in all."""
        idle = sorted((h for hosts in self._idle.values() for h in hosts), key=lambda h: h.idle_since)
        surplus = idle[: max(0, len(idle) - self.config.max_in_flight)]
        for host in surplus:
            self._idle[host.key].remove(host)
        return surplus

    # --- inspection and shutdown --------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The script hosts now alive (idle and busy)."""
        with self._lock:
            hosts = [h for hosts in self._idle.values() for h in hosts] + list(self._busy)
        return sorted(h.pid for h in hosts if h.sock.fileno() != -1)

    def zygote_pid(self) -> int | None:
        with self._lock:
            return self._zygote.proc.pid if self._zygote and self._zygote.is_alive() else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            hosts = [h for hosts in self._idle.values() for h in hosts]
            self._idle.clear()
            zygote, self._zygote = self._zygote, None
        for host in hosts:
            host.close()
        if zygote is not None:
            zygote.kill()

    def __enter__(self) -> ScriptRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_result(reply: CallReply | None, death: dict[str, Any], stdout: str, stderr: str,
               secrets: tuple[str, ...], duration_s: float) -> ScriptResult:
    raw_logs = list(reply.logs) if reply else []
    message = (reply.error or "") if reply else ""
    # together: a secret printed half on stdout and half on stderr is found in its pieces
    stdout, stderr, message, *logs = scrub_all([stdout, stderr, message, *raw_logs], secrets)
    if reply is not None and reply.error is not None:
        reply = dataclasses.replace(reply, error=message)
    sections = [("log", "\n".join(logs)), ("stdout", stdout), ("stderr", stderr)]
    output = "\n".join(f"--- {name} ---\n{text.rstrip()}" for name, text in sections if text.strip())

    changes = StateChanges.from_message(reply.state_changes) if reply is not None else None

    def failed(message: str, timed_out: bool = False) -> ScriptResult:
        return Failed(scrub(message, secrets), output, duration_s, timed_out=timed_out, state_changes=changes,
                      host_lost=reply is None)

    if reply is None:  # the host is gone: killed at the deadline, or the script ended it
        if death.get("timed_out"):
            return failed(f"the script did not finish within its timeout ({duration_s:.0f} s) and was killed", True)
        if "signal" in death:
            return failed(f"the script process was killed by {death['signal']}" + _stderr_hint(stderr))
        if "exit_status" in death:
            return _exited(death["exit_status"], stderr, failed)
        return failed("the script worker failed: the script host stopped without a word" + _stderr_hint(stderr))
    if reply.error is not None:
        return failed(reply.error)
    if reply.pending is not None:
        return Pending(int(reply.pending.get("retry_after_s", 0)), str(reply.pending.get("cookie", "")), output,
                       duration_s, state_changes=changes)
    if reply.exit_status != 0:
        return _exited(reply.exit_status, stderr, failed)
    if reply.renewal_info is not None:
        return RenewalInfoAnswer(reply.renewal_info.get("window"), output, duration_s, state_changes=changes)
    if reply.result is not None:
        return Issued(reply.result, output, duration_s, state_changes=changes)
    if reply.result_type is not None:
        message = f"check 1 (PEM): the script returned {reply.result_type}, not PEM text"
        return Failed(message, output, duration_s, returned_other=True, state_changes=changes)
    return failed("the script ended without returning a certificate" + _stderr_hint(stderr))


def _exited(status: int, stderr: str, failed: Any) -> ScriptResult:
    tail = stderr.strip()[-ERROR_TAIL_CHARS:]
    if tail:
        return failed(f"{tail} (exit status {status})")
    return failed(f"the script exited with status {status} without returning a certificate")


def _stderr_hint(stderr: str) -> str:
    tail = stderr.strip()[-ERROR_TAIL_CHARS:]
    return f": {tail}" if tail else ""
