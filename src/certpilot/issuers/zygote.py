"""The zygote: a clean, warmed interpreter that forks script hosts and never holds a request.

Started by the runner as ``python -I -m certpilot.issuers.zygote FD`` with a minimal
environment, it imports what scripts commonly use, runs OpenSSL once, and then
waits on its control socket (a SOCK_SEQPACKET unix socket, fd FD). Each message
is a `HostSpec` with four descriptors attached: the host's socket, its stdout
and stderr pipes, and a status pipe. For each, the zygote forks a *supervisor*
that starts the host and outlives it:

    zygote ──fork──> supervisor (subreaper, own session) ──fork──> host (sandboxed)

The supervisor makes the host's temporary directory, waits for the host to end
(the controller closes its socket, or kills it at a timeout or after a crash),
kills and reaps whatever the host's processes left behind (they are re-parented
to it), writes the host's wait status on the status pipe and removes the
directory. Requests with their secrets go from the runner straight to the host:
neither the zygote nor a supervisor ever reads one, so no host can find another
profile's secret in the memory it was forked with.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile

from certpilot.issuers import sandbox
from certpilot.issuers.host import SOCKET_FD, kill_descendants
from certpilot.issuers.host import run as run_host
from certpilot.issuers.messages import HostSpec

CONTROL_MESSAGE_BYTES = 256 * 1024


def _preload() -> None:
    """Import what scripts commonly use, and run OpenSSL once, so that each host starts
    warm (OpenSSL's first signature costs milliseconds)."""
    for module in ("cryptography.x509", "cryptography.hazmat.primitives.serialization", "json", "ssl",
                   "certpilot.issuer", "urllib.request", "http.client", "requests"):
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


def _supervise(spec: HostSpec, fds: list[int]) -> None:
    """Runs in the forked supervisor; never returns."""
    host_socket, out_w, err_w, status_w = fds
    host_pid = 0

    def stop(signum: int, frame: object) -> None:  # the zygote is going away
        if host_pid:
            try:
                os.kill(host_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    sandbox.die_with_parent(signal.SIGTERM)
    sandbox.become_subreaper()
    host_dir = tempfile.mkdtemp(prefix="host-", dir=spec.base_dir)
    if spec.user is not None:
        os.chown(host_dir, spec.user[0], spec.user[1])
    os.chmod(host_dir, 0o700)

    host_pid = os.fork()
    if host_pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.dup2(host_socket, SOCKET_FD)
            os.closerange(SOCKET_FD + 1, 65536)
        finally:
            run_host(spec, host_dir)
    for fd in (host_socket, out_w, err_w):
        os.close(fd)
    _, wait_status = os.waitpid(host_pid, 0)
    host_pid = 0
    kill_descendants(signal_scoped=False)  # what the host left behind, re-parented here
    report = {"exit_status": os.WEXITSTATUS(wait_status)} if os.WIFEXITED(wait_status) else {}
    if os.WIFSIGNALED(wait_status):
        report = {"signal": signal.Signals(os.WTERMSIG(wait_status)).name}
    try:
        os.write(status_w, json.dumps(report).encode() + b"\n")
    except OSError:
        pass
    shutil.rmtree(host_dir, ignore_errors=True)
    os._exit(0)


def _reaped() -> set[int]:
    """Supervisors that have ended since the last look, reaped."""
    done = set()
    try:
        while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
            done.add(pid)
    except ChildProcessError:
        pass
    return done


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when this process ends
    control = socket.socket(fileno=int(sys.argv[1]))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)  # stray prints must never reach anything
    _preload()
    base_dir = tempfile.mkdtemp(prefix="certpilot-scripts-")
    os.chmod(base_dir, 0o711)  # hosts of other users reach their own directory, list none
    supervisors: set[int] = set()
    control.send(json.dumps({"ready": True, "pid": os.getpid(), "base_dir": base_dir}).encode())
    try:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(control, CONTROL_MESSAGE_BYTES, 4)
            except OSError:
                return
            if not data:
                return
            if len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                control.send(json.dumps({"error": "a host needs four descriptors"}).encode())
                continue
            spec = HostSpec.from_message({**json.loads(data), "base_dir": base_dir})
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    control.close()
                    _supervise(spec, fds)
                finally:
                    os._exit(70)
            for fd in fds:
                os.close(fd)
            supervisors.add(pid)
            control.send(json.dumps({"supervisor": pid}).encode())
            supervisors -= _reaped()
    finally:
        supervisors -= _reaped()
        for pid in supervisors:  # still our children (alive or not yet reaped): no pid reuse
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
