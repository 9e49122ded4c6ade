"""The worker process: started clean by the runner, it forks one child per script call.

Run as ``python -I -m certpilot.issuers.worker`` with a minimal environment. It
reads call requests on stdin and answers on stdout (see `protocol`). Each call
runs in a forked child that is alone in a new session, in a fresh temporary
working directory, under resource limits, with stdin from /dev/null and its
stdout/stderr captured through pipes. A child that hangs is killed with its
whole process group at the deadline; a child that crashes (``os._exit``, a
signal) only ends itself: this process goes on serving calls.

Forking from this already-initialised interpreter costs a few milliseconds per
call, where starting a fresh interpreter costs ~100 ms; isolation is the same,
because nothing of one call survives into the next child.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import selectors
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

from certpilot.issuers.capture import BoundedCapture, scrub
from certpilot.issuers.protocol import ChannelClosed, read_message, write_message

HEAD_BYTES = 8 * 1024
TAIL_BYTES = 24 * 1024  # 32 KiB kept per stream: 64 KiB for stdout and stderr together
RESULT_LIMIT_BYTES = 1024 * 1024
LOG_LIMIT = 200
RESULT_FD = 3
EXIT_GRACE_S = 0.5


class ScriptContext:
    """The optional `context` keyword argument a script may declare."""

    def __init__(self, data: dict[str, Any], result_file: Any) -> None:
        self.subject_alt_names: list[str] = list(data.get("subject_alt_names", []))
        self.key_algorithm: str = data.get("key_algorithm", "")
        self.previous_certificate: str | None = data.get("previous_certificate")
        self.certificate_name: str = data.get("certificate_name", "")
        self.profile_name: str = data.get("profile_name", "")
        self._result_file = result_file
        self._secrets = [s for s in data.get("secrets", []) if s]
        self._logged = 0

    def log(self, message: object) -> None:
        """Record a line in the attempt's output (sensitive values are masked)."""
        if self._logged >= LOG_LIMIT:
            return
        self._logged += 1
        line = scrub(str(message), self._secrets)[:4096]  # mask first: a cut must not split a secret
        self._result_file.write(json.dumps({"log": line}) + "\n")
        self._result_file.flush()


def _accepts_context(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "context" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _set_limits(request: dict[str, Any]) -> None:
    timeout_s = int(request["timeout_s"])
    limits = [
        (resource.RLIMIT_CPU, timeout_s + 1),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
        (resource.RLIMIT_FSIZE, 64 * 1024 * 1024),
    ]
    memory_bytes = int(request.get("memory_limit_bytes") or 0)
    if memory_bytes:
        limits.append((resource.RLIMIT_AS, memory_bytes))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _child(request: dict[str, Any], workdir: str) -> None:
    """Runs in the forked child; never returns."""
    status = 0
    try:
        os.setsid()
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir})
        tempfile.tempdir = workdir
        _set_limits(request)
        result_file = os.fdopen(RESULT_FD, "w", buffering=1)
        sys.stdin = open(os.devnull)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        name = request["script_name"]
        namespace: dict[str, Any] = {"__name__": f"certpilot_script_{name}", "__file__": f"<script {name}>"}
        exec(compile(request["source"], f"<script {name}>", "exec"), namespace)
        func = namespace.get("certificate_request")
        if not callable(func):
            raise LookupError("the script defines no function certificate_request(csr, common_name, args_dict)")
        args = (request["csr"], request["common_name"], dict(request["args"]))
        if _accepts_context(func):
            context = ScriptContext({**request.get("context", {}), "secrets": request.get("secrets", [])}, result_file)
            result = func(*args, context=context)
        else:
            result = func(*args)
        if isinstance(result, bytes):
            result = result.decode("utf-8", "replace")
        if isinstance(result, str):
            reply: dict[str, Any] = {"result": result}
        else:
            reply = {"result_type": type(result).__name__}
        result_file.write(json.dumps(reply) + "\n")
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
    except BaseException as exc:  # the script's failure, reported to the controller
        try:
            from certpilot.issuer import Pending

            if isinstance(exc, Pending):
                reply = {"pending": {"retry_after_s": exc.retry_after_s, "cookie": exc.cookie}}
            else:
                traceback.print_exc()
                reply = {"error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}
            os.write(RESULT_FD, (json.dumps(reply) + "\n").encode())
        except BaseException:
            status = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    os._exit(status)


def _run_call(request: dict[str, Any]) -> dict[str, Any]:
    secrets = [s for s in request.get("secrets", []) if s]
    margin = max((len(s.encode()) for s in secrets), default=0)
    workdir = tempfile.mkdtemp(prefix="certpilot-call-")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(res_w, RESULT_FD)
            os.closerange(RESULT_FD + 1, 65536)
        finally:
            _child(request, workdir)
    for fd in (out_w, err_w, res_w):
        os.close(fd)

    captures = {out_r: BoundedCapture(HEAD_BYTES, TAIL_BYTES, margin), err_r: BoundedCapture(HEAD_BYTES, TAIL_BYTES, margin)}
    result_bytes = bytearray()
    result_overflow = False
    pidfd = os.pidfd_open(pid)
    selector = selectors.DefaultSelector()
    for fd in (out_r, err_r, res_r):
        selector.register(fd, selectors.EVENT_READ)
    selector.register(pidfd, selectors.EVENT_READ)
    deadline = started + float(request["timeout_s"])
    timed_out = False
    exited_at: float | None = None
    open_fds = {out_r, err_r, res_r}
    while open_fds:
        now = time.monotonic()
        if now >= deadline:
            timed_out = exited_at is None
            break
        if exited_at is not None and now - exited_at > EXIT_GRACE_S:
            break  # a grandchild still holds a pipe open; stop waiting for it
        limit = deadline - now if exited_at is None else min(deadline - now, EXIT_GRACE_S)
        for key, _ in selector.select(timeout=limit):
            fd = key.fd
            if fd == pidfd:
                selector.unregister(pidfd)
                exited_at = time.monotonic()
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                selector.unregister(fd)
                open_fds.discard(fd)
            elif fd == res_r:
                if len(result_bytes) + len(chunk) > RESULT_LIMIT_BYTES:
                    result_overflow = True
                else:
                    result_bytes += chunk
            else:
                captures[fd].feed(chunk)
    try:
        os.killpg(pid, signal.SIGKILL)  # the child's session: the script and anything it started
    except (ProcessLookupError, PermissionError):
        pass
    _, wait_status = os.waitpid(pid, 0)
    selector.close()
    for fd in (out_r, err_r, res_r, pidfd):
        os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)

    reply: dict[str, Any] = {
        "duration_s": time.monotonic() - started,
        "stdout": captures[out_r].text(secrets),
        "stderr": captures[err_r].text(secrets),
        "stdout_bytes": captures[out_r].total,
        "stderr_bytes": captures[err_r].total,
        "timed_out": timed_out,
        "logs": [],
    }
    if os.WIFEXITED(wait_status):
        reply["exit_status"] = os.WEXITSTATUS(wait_status)
    elif os.WIFSIGNALED(wait_status) and not timed_out:
        reply["signal"] = signal.Signals(os.WTERMSIG(wait_status)).name
    if result_overflow:
        reply["error"] = f"the script returned more than {RESULT_LIMIT_BYTES} bytes"
        return reply
    for line in result_bytes.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "log" in item:
            reply["logs"].append(scrub(item["log"], secrets))
        else:
            for key in ("result", "result_type", "pending", "error", "error_type"):
                if key in item:
                    reply[key] = scrub(item[key], secrets) if key == "error" else item[key]
    return reply


def _preload() -> None:
    """Import what scripts commonly use, and run OpenSSL once, so that each forked
    child starts warm (OpenSSL's first signature costs milliseconds)."""
    for module in ("cryptography.x509", "cryptography.hazmat.primitives.serialization", "json", "ssl", "certpilot.issuer"):
        try:
            __import__(module)
        except Exception:
            pass
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        key.public_key().verify(key.sign(b"warm-up", ec.ECDSA(hashes.SHA256())), b"warm-up", ec.ECDSA(hashes.SHA256()))
    except Exception:
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when this process ends
    _preload()
    stdin_fd, stdout_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # stray prints must never corrupt the channel
    write_message(stdout_fd, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            request = read_message(stdin_fd)
        except ChannelClosed:
            return
        try:
            reply = _run_call(request)
        except Exception as exc:  # a fault of this process, not of the script
            reply = {"worker_error": f"{type(exc).__name__}: {exc}"}
        write_message(stdout_fd, reply)


if __name__ == "__main__":
    main()
