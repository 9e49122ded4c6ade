"""A script host: one warm, sandboxed process that serves the calls of one profile.

Forked by a supervisor from the zygote (see `zygote`), a host confines itself
(`sandbox`) before it reads anything, then serves calls one at a time on its
socket (fd 3, framed by `protocol`): the first call carries the script's source,
which is run once, so module-level state (a loaded CA key, an HTTP session)
survives between calls of the same profile. Each call runs in a fresh temporary
directory under the host's own (``TMPDIR`` and ``HOME`` point there), which is
removed afterwards together with every process the call started.

stdout and stderr (fds 1 and 2) are pipes read by the controller; a call's reply
is sent only after its output is flushed and its processes are gone, so that
everything before the reply belongs to that call.
"""

from __future__ import annotations

import inspect
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

from certpilot.issuers import sandbox
from certpilot.issuers.capture import Scrubber, scrub
from certpilot.issuers.messages import OPERATION_POLL, OPERATION_RENEWAL_INFO, CallReply, CallRequest, HostSpec
from certpilot.issuers.state import ScriptState
from certpilot.issuers.protocol import ChannelClosed, read_message, write_message

SOCKET_FD = 3
RESULT_LIMIT_BYTES = 1024 * 1024
LOG_LIMIT = 200
LOG_LINE_CHARS = 4096
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class ScriptContext:
    """The optional `context` keyword argument a script may declare. `state` is the
    profile's durable mapping of str to str (see `issuers.state`)."""

    def __init__(self, data: dict[str, Any], secrets: list[str], state: dict[str, str] | None = None) -> None:
        self.subject_alt_names: list[str] = list(data.get("subject_alt_names", []))
        self.key_algorithm: str = data.get("key_algorithm", "")
        self.previous_certificate: str | None = data.get("previous_certificate")
        self.certificate_name: str = data.get("certificate_name", "")
        self.profile_name: str = data.get("profile_name", "")
        self._secrets = [s for s in secrets if s]
        self._scrubber: Scrubber | None = None  # the secrets' forms, computed at the first log line
        self.logs: list[str] = []
        self.state = ScriptState(state)

    def log(self, message: object) -> None:
        """Record a line in the attempt's output (sensitive values are masked)."""
        if len(self.logs) < LOG_LIMIT:
            if self._scrubber is None:
                self._scrubber = Scrubber(self._secrets)
            self.logs.append(self._scrubber.scrub(str(message))[:LOG_LINE_CHARS])  # mask first, then cut


def accepts_context(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "context" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _set_limits(memory_limit_bytes: int) -> None:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 1024), (resource.RLIMIT_FSIZE, 64 * 1024 * 1024)]
    if memory_limit_bytes:
        limits.append((resource.RLIMIT_AS, memory_limit_bytes))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _allow_cpu_seconds(timeout_s: int) -> None:
    """RLIMIT_CPU counts the process's whole life: allow this call its timeout on top."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime) + timeout_s + 1
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    except (ValueError, OSError):
        pass


def kill_descendants(signal_scoped: bool) -> None:
    """Kill and reap every process this one started, also those that left their session
    (they are re-parented here: this process is a subreaper)."""
    me = os.getpid()
    for _ in range(1000):
        if signal_scoped:
            try:
                os.kill(-1, signal.SIGKILL)  # Landlock scopes this to our own descendants
            except (ProcessLookupError, PermissionError):
                pass
        else:
            for pid in descendants_from_proc(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.002)


def descendants_from_proc(root: int) -> list[int]:
    """Every process below `root`, read from /proc (empty where /proc cannot be read)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class Host:
    def __init__(self, spec: HostSpec, host_dir: str, signal_scoped: bool) -> None:
        self.spec = spec
        self.host_dir = host_dir
        self.signal_scoped = signal_scoped
        self.func: Any = None
        self.poll: Any = None
        self.renewal_info: Any = None
        self.stdout, self.stderr = sys.stdout, sys.stderr

    def serve(self) -> None:
        while True:
            try:
                message = read_message(SOCKET_FD)
            except ChannelClosed:
                return
            reply = self.handle(CallRequest.from_message(message))
            write_message(SOCKET_FD, reply.to_message())

    def handle(self, request: CallRequest) -> CallReply:
        started = time.monotonic()
        workdir = tempfile.mkdtemp(prefix="call-", dir=self.host_dir)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({**BASE_ENV, "HOME": workdir, "TMPDIR": workdir})
        tempfile.tempdir = workdir
        _allow_cpu_seconds(request.timeout_s)
        context = ScriptContext(request.context, list(request.secrets), dict(request.state))
        try:
            reply = self._run(request, context)
        finally:
            for stream in (sys.stdout, sys.stderr, self.stdout, self.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            sys.stdout, sys.stderr = self.stdout, self.stderr
            kill_descendants(self.signal_scoped)
            os.chdir(self.host_dir)
            shutil.rmtree(workdir, ignore_errors=True)
        reply.logs = context.logs
        changes = context.state.changes()  # saved whatever the outcome
        reply.state_changes = changes.to_message() if changes else None
        reply.loaded = self.func is not None
        reply.duration_s = time.monotonic() - started
        return reply

    def _run(self, request: CallRequest, context: ScriptContext) -> CallReply:
        secrets = [s for s in request.secrets if s]
        try:
            if self.func is None:
                self._load(request)
            if request.operation == OPERATION_POLL:
                if self.poll is None:
                    return CallReply(error="the script defines no certificate_poll(cookie, args_dict): "
                                           "it cannot finish a request its CA deferred")
                func, args = self.poll, (request.cookie, dict(request.args))
            elif request.operation == OPERATION_RENEWAL_INFO:
                if self.renewal_info is None:
                    return CallReply(error="the script defines no certificate_renewal_info(cert_pem, args_dict)")
                func = self.renewal_info
                window = func(request.certificate, dict(request.args), context=context) if accepts_context(func) \
                    else func(request.certificate, dict(request.args))
                return CallReply(renewal_info={"window": window_message(window)})
            else:
                func, args = self.func, (request.csr, request.common_name, dict(request.args))
            result = func(*args, context=context) if accepts_context(func) else func(*args)
            if isinstance(result, bytes):
                result = result.decode("utf-8", "replace")
            if not isinstance(result, str):
                return CallReply(result_type=type(result).__name__)
            if len(result.encode("utf-8", "replace")) > RESULT_LIMIT_BYTES:
                return CallReply(error=f"the script returned more than {RESULT_LIMIT_BYTES} bytes")
            return CallReply(result=result)
        except SystemExit as exc:  # seed-style scripts: reason on stderr, then sys.exit(n)
            code = exc.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
            return CallReply(exit_status=code if isinstance(code, int) else (0 if code is None else 1))
        except BaseException as exc:  # the script's failure, reported to the controller
            from certpilot.issuer import Pending

            if isinstance(exc, Pending):
                if self.poll is None:
                    return CallReply(error="the script raised Pending but defines no certificate_poll(cookie, "
                                           "args_dict) to finish the request with")
                return CallReply(pending={"retry_after_s": exc.retry_after_s, "cookie": exc.cookie})
            traceback.print_exc()
            return CallReply(error=scrub(str(exc) or type(exc).__name__, secrets), error_type=type(exc).__name__)

    def _load(self, request: CallRequest) -> None:
        if request.source is None:
            raise LookupError("the script host received a call before the script's source")
        name = self.spec.script_name
        namespace: dict[str, Any] = {"__name__": f"certpilot_script_{name}", "__file__": f"<script {name}>"}
        exec(compile(request.source, f"<script {name}>", "exec"), namespace)
        func = namespace.get("certificate_request")
        if not callable(func):
            raise LookupError("the script defines no function certificate_request(csr, common_name, args_dict)")
        poll = namespace.get("certificate_poll")
        self.func, self.poll = func, poll if callable(poll) else None
        renewal_info = namespace.get("certificate_renewal_info")
        self.renewal_info = renewal_info if callable(renewal_info) else None


WINDOW_FIELDS = ("start", "end", "retry_after_s", "explanation_url")


def window_message(window: Any) -> dict[str, Any] | None:
    """A `certificate_renewal_info` answer as JSON: None, or the window's fields (a
    `RenewalWindow`, or a dict with its keys) with datetimes in RFC 3339. The controller
    validates it; raises TypeError for an answer that is neither."""
    if window is None:
        return None
    if isinstance(window, dict):
        fields = {k: window.get(k) for k in WINDOW_FIELDS}
    elif hasattr(window, "start") and hasattr(window, "end"):
        fields = {k: getattr(window, k, None) for k in WINDOW_FIELDS}
    else:
        raise TypeError(f"certificate_renewal_info returned {type(window).__name__}: "
                        "return None, a RenewalWindow or a dict with start and end")
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in fields.items()}


def _check_python_readable(user: sandbox.ScriptUser | None) -> None:
    """A script user that cannot read the standard library would fail on its first
    import of a module the zygote did not preload: say so once, clearly, instead."""
    stdlib = os.path.dirname(os.__file__)
    if not os.access(os.path.join(stdlib, "subprocess.py"), os.R_OK):
        who = f"the script user {user.name!r}" if user else "this user"
        raise sandbox.SandboxError(
            f"{who} cannot read the Python installation at {sys.base_prefix}: install certpilot with a Python "
            "that other users can read (Debian's /usr/bin/python3, or under /opt), or set CERTPILOT_SCRIPT_USER")


def run(spec: HostSpec, host_dir: str) -> None:
    """The host's life, in the forked process whose fds 0-3 are set up. Never returns."""
    status = 0
    try:
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        sys.stdin = open(os.devnull)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sandbox.die_with_parent()
        sandbox.become_subreaper()
        _set_limits(spec.memory_limit_bytes)
        user = sandbox.ScriptUser(*spec.user) if spec.user else None
        sandbox.drop_privileges(user)
        abi = sandbox.restrict_filesystem(list(spec.read_paths), [host_dir, *spec.write_paths])
        _check_python_readable(user)
        os.chdir(host_dir)
        os.environ.clear()
        os.environ.update({**BASE_ENV, "HOME": host_dir, "TMPDIR": host_dir})
        tempfile.tempdir = host_dir
        write_message(SOCKET_FD, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "landlock_abi": abi})
        Host(spec, host_dir, signal_scoped=abi >= 6).serve()
    except BaseException as exc:  # a sandbox that cannot be set up never runs a script
        try:
            write_message(SOCKET_FD, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        except BaseException:
            pass
        status = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    os._exit(status)
