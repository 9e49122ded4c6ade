"""The script sandbox, one layer at a time, against real script hosts (no database).

Each test would fail on a design that runs scripts as the controller's user (root)
without confinement: the script user and its capabilities, Landlock on files,
other processes (proc files, signals, ptrace), memory left behind in shared
processes, processes that outlive their call, the network (which stays open),
warm hosts and their recycling, the concurrency limits, and `limitations()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from certpilot.issuers import sandbox
from certpilot.issuers.runner import RunnerConfig, ScriptCall, ScriptResult, ScriptRunner
from tests.conftest import missing
from tests.integration.issuers.test_script_runner import (
    make_call,
    process_is_running,
    wait_until_gone,
)

IS_ROOT = os.geteuid() == 0
GRANDCHILD_RE = re.compile(r"grandchild=(\d+)")


def sandboxed_call(
    source: str,
    *,
    profile: str = "",
    concurrency: int | None = None,
    allow_read: tuple[str, ...] = (),
    allow_write: tuple[str, ...] = (),
    **kwargs: object,
) -> ScriptCall:
    call = make_call(source, **kwargs)  # type: ignore[arg-type]
    extra: dict[str, object] = {"profile": profile, "allow_read": allow_read, "allow_write": allow_write}
    if concurrency is not None:
        extra["concurrency"] = concurrency
    return dataclasses.replace(call, **extra)


def ok(result: ScriptResult) -> str:
    assert result.error is None, f"the call failed: {result.error}\n{result.output}"
    assert result.pem is not None
    return result.pem


def ok_json(result: ScriptResult) -> dict:
    return json.loads(ok(result))


@pytest.fixture
def landlock() -> int:
    """The Landlock ABI; the file, signal and ptrace layers need ABI 6 (signal scoping)."""
    abi = sandbox.landlock_abi()
    if abi < 6:
        missing(f"this kernel offers Landlock ABI {abi}, the sandbox needs 6 for every layer")
    return abi


@pytest.fixture
def runner(landlock: int) -> Iterator[ScriptRunner]:
    with ScriptRunner() as pool:
        yield pool


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the script user can traverse (pytest's tmp_path may be 0700 to root)."""
    path = Path(tempfile.mkdtemp(prefix="certpilot-sandbox-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def open_dir(path: Path, mode: int = 0o777) -> Path:
    """A directory made so that file modes allow the script user everything: only
    Landlock can stop it."""
    path.mkdir()
    path.chmod(mode)
    return path


# --- 1. never root -------------------------------------------------------------

PRIVILEGES = """
    import ctypes, json, os
    PR_CAPBSET_READ, PR_GET_NO_NEW_PRIVS = 23, 39

    def certificate_request(csr, common_name, args_dict):
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = lambda option, arg: libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        last_cap = int(args_dict["cap_last_cap"])
        bounding = [cap for cap in range(last_cap + 1) if prctl(PR_CAPBSET_READ, cap) != 0]
        owned = os.path.join(os.environ["TMPDIR"], "owned")
        open(owned, "w").close()
        try:
            os.chown(owned, 0, 0)
            chown = "ok"
        except OSError as exc:
            chown = type(exc).__name__
        return json.dumps({
            "uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
            "bounding": bounding, "no_new_privs": prctl(PR_GET_NO_NEW_PRIVS, 0), "chown": chown,
        })
"""


def test_a_script_never_runs_as_root_and_keeps_no_privilege(runner: ScriptRunner) -> None:
    cap_last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    seen = ok_json(runner.call(sandboxed_call(PRIVILEGES, args={"cap_last_cap": str(cap_last_cap)})))

    assert seen["no_new_privs"] == 1, "a set-uid program could give the script privileges back"
    if IS_ROOT:  # only root has another user to give scripts
        assert 0 not in seen["uid"], f"the script runs with uid {seen['uid']}"
        assert 0 not in seen["gid"], f"the script runs with gid {seen['gid']}"
        assert 0 not in seen["groups"]
        assert seen["bounding"] == [], f"capabilities left in the bounding set: {seen['bounding']}"
        assert seen["chown"] == "PermissionError", "the script could give a file to root"
        user = runner.script_user
        assert user is not None and seen["uid"] == [user.uid] * 3 and seen["gid"] == [user.gid] * 3
    else:
        assert seen["uid"] == [os.getuid()] * 3


# --- 2. files (Landlock) ---------------------------------------------------------

FILES = """
    import json, os

    def attempt(action):
        try:
            action()
            return "ok"
        except OSError as exc:
            return type(exc).__name__

    def read(path):
        return lambda: open(path, "rb").read()

    def write(path):
        def do():
            with open(path, "w") as f:
                f.write("written by the script")
        return do

    def certificate_request(csr, common_name, args_dict):
        data = args_dict["data_dir"]
        tmp = os.environ["TMPDIR"]
        return json.dumps({
            "read master.key": attempt(read(os.path.join(data, "master.key"))),
            "read certpilot.db": attempt(read(os.path.join(data, "certpilot.db"))),
            "list data dir": attempt(lambda: os.listdir(data)),
            "write into data dir": attempt(write(os.path.join(data, "planted"))),
            "overwrite master.key": attempt(write(os.path.join(data, "master.key"))),
            "read openssl.cnf": attempt(read(args_dict["system_file"])),
            "write into TMPDIR": attempt(write(os.path.join(tmp, "scratch"))),
            "cwd is TMPDIR": os.path.realpath(os.getcwd()) == os.path.realpath(tmp),
            "read granted": attempt(read(os.path.join(args_dict["read_dir"], "granted.txt"))),
            "write into read grant": attempt(write(os.path.join(args_dict["read_dir"], "new.txt"))),
            "write granted": attempt(write(os.path.join(args_dict["write_dir"], "new.txt"))),
            "read back granted": attempt(read(os.path.join(args_dict["write_dir"], "new.txt"))),
            "read sibling": attempt(read(os.path.join(args_dict["sibling_dir"], "sibling.txt"))),
            "list sibling": attempt(lambda: os.listdir(args_dict["sibling_dir"])),
            "write sibling": attempt(write(os.path.join(args_dict["sibling_dir"], "new.txt"))),
            "read /etc/shadow": attempt(read("/etc/shadow")),
        })
"""

DENIED = "PermissionError"


@pytest.fixture
def system_file() -> str:
    for candidate in ("/usr/lib/ssl/openssl.cnf", "/etc/ssl/openssl.cnf", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.isfile(candidate):
            return candidate
    missing("no OpenSSL configuration or CA bundle under /usr/lib/ssl or /etc/ssl")
    raise AssertionError("unreachable")


def assert_only_landlock_stands_in_the_way(runner: ScriptRunner, paths: list[Path]) -> None:
    """File modes let the script user read every path: only Landlock can deny it."""
    for path in paths:
        for parent in [path, *path.parents]:
            if parent.is_dir():
                assert parent.stat().st_mode & stat.S_IXOTH, f"{parent} is not traversable by others"
        assert path.stat().st_mode & stat.S_IROTH, f"{path} is not readable by others"
    if not IS_ROOT:
        return
    user = runner.script_user
    assert user is not None
    code = "import os, sys\nfor p in sys.argv[1:]:\n    os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read()\n"
    control = subprocess.run([sys.executable, "-I", "-c", code, *map(str, paths)], user=user.uid, group=user.gid,
                             extra_groups=[], capture_output=True, text=True, cwd="/", timeout=30)
    assert control.returncode == 0, f"the script user cannot read these even without Landlock: {control.stderr}"


@pytest.mark.parametrize("data_dir_granted", [False, True], ids=["data-dir-not-granted", "data-dir-granted-but-forbidden"])
def test_landlock_keeps_a_script_to_its_grants(landlock: int, shared_dir: Path, system_file: str,
                                               data_dir_granted: bool) -> None:
    data_dir = open_dir(shared_dir / "data", 0o755)
    for name in ("master.key", "certpilot.db"):
        (data_dir / name).write_text(f"the {name} of certpilot")
        (data_dir / name).chmod(0o644)
    read_dir, write_dir, sibling_dir = (open_dir(shared_dir / name) for name in ("read", "write", "sibling"))
    (read_dir / "granted.txt").write_text("granted for reading")
    (sibling_dir / "sibling.txt").write_text("not granted")
    for path in (read_dir / "granted.txt", sibling_dir / "sibling.txt"):
        path.chmod(0o666)
    allow_read: tuple[str, ...] = (str(read_dir),)
    allow_write: tuple[str, ...] = (str(write_dir),)
    if data_dir_granted:  # a profile's grants can never reach the forbidden paths
        allow_read += (str(data_dir), str(data_dir / "master.key"))
        allow_write += (str(data_dir),)

    with ScriptRunner(RunnerConfig(forbidden_paths=(str(data_dir),))) as runner:
        assert_only_landlock_stands_in_the_way(
            runner, [data_dir, data_dir / "master.key", data_dir / "certpilot.db", sibling_dir / "sibling.txt"])
        seen = ok_json(runner.call(sandboxed_call(FILES, allow_read=allow_read, allow_write=allow_write, args={
            "data_dir": str(data_dir), "system_file": system_file, "read_dir": str(read_dir),
            "write_dir": str(write_dir), "sibling_dir": str(sibling_dir),
        })))

    assert seen == {
        "read master.key": DENIED,
        "read certpilot.db": DENIED,
        "list data dir": DENIED,
        "write into data dir": DENIED,
        "overwrite master.key": DENIED,
        "read openssl.cnf": "ok",
        "write into TMPDIR": "ok",
        "cwd is TMPDIR": True,
        "read granted": "ok",
        "write into read grant": DENIED,
        "write granted": "ok",
        "read back granted": "ok",
        "read sibling": DENIED,
        "list sibling": DENIED,
        "write sibling": DENIED,
        "read /etc/shadow": DENIED,
    }
    assert sorted(p.name for p in data_dir.iterdir()) == ["certpilot.db", "master.key"]
    assert (data_dir / "master.key").read_text() == "the master.key of certpilot"
    assert (write_dir / "new.txt").read_text() == "written by the script"
    assert not (read_dir / "new.txt").exists() and not (sibling_dir / "new.txt").exists()


# --- 3. other processes --------------------------------------------------------

OTHER_PROCESSES = """
    import ctypes, json, os
    PTRACE_ATTACH, PTRACE_DETACH, WALL = 16, 17, 0x40000000

    def attempt(action):
        try:
            action()
            return "ok"
        except OSError as exc:
            return type(exc).__name__

    def certificate_request(csr, common_name, args_dict):
        pid = int(args_dict["pid"])
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        attached = libc.ptrace(PTRACE_ATTACH, pid, None, None)
        errno = ctypes.get_errno()
        if attached == 0:  # let the controller go again, or a failing test would hang the run
            try:
                os.waitpid(pid, WALL)  # its attach stop
            finally:
                libc.ptrace(PTRACE_DETACH, pid, None, None)  # and drop the SIGSTOP
        return json.dumps({
            "environ": attempt(lambda: open(f"/proc/{pid}/environ", "rb").read()),
            "mem": attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(1)),
            "kill 0": attempt(lambda: os.kill(pid, 0)),
            "ptrace": "ok" if attached == 0 else os.strerror(errno),
        })
"""


def test_a_script_cannot_reach_the_controller_process(runner: ScriptRunner) -> None:
    seen = ok_json(runner.call(sandboxed_call(OTHER_PROCESSES, args={"pid": str(os.getpid())})))

    assert seen["environ"] == DENIED, "the script read the controller's environment"
    assert seen["mem"] == DENIED, "the script read the controller's memory"
    assert seen["kill 0"] == DENIED, "the script may signal the controller"
    assert seen["ptrace"] != "ok", "the script attached to the controller with ptrace"
    assert process_is_running(os.getpid())


# --- 4. memory isolation between profiles ----------------------------------------

REMEMBERS = """
    import os
    SEEN = []  # module-level state, as a script keeps a loaded key

    def certificate_request(csr, common_name, args_dict):
        SEEN.append(dict(args_dict))
        return str(os.getpid())
"""

SCAN_CHUNK_BYTES = 8 * 1024 * 1024


def scan_memory(pid: int, needle: bytes) -> tuple[bool, int]:
    """Whether `needle` occurs in any readable region of `pid`'s memory, and how many
    bytes were read."""
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        addresses, perms = line.split()[:2]
        start, end = (int(a, 16) for a in addresses.split("-"))
        if perms.startswith("r") and end < 1 << 63:
            regions.append((start, end))
    scanned = 0
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end in regions:
            carry = b""
            position = start
            while position < end:
                try:
                    chunk = os.pread(fd, min(SCAN_CHUNK_BYTES, end - position), position)
                except OSError:
                    break  # [vvar] and the like
                if not chunk:
                    break
                scanned += len(chunk)
                if needle in carry + chunk:
                    return True, scanned
                carry = chunk[-(len(needle) - 1):]
                position += len(chunk)
    finally:
        os.close(fd)
    return False, scanned


def test_a_profiles_secrets_are_in_no_other_hosts_memory_nor_the_zygotes(runner: ScriptRunner) -> None:
    if not IS_ROOT:
        missing("reading a sandboxed host's memory needs root")
    secret = secrets.token_urlsafe(24)  # made now: in no file, no earlier process
    a_pids = {
        int(ok(runner.call(sandboxed_call(REMEMBERS, profile="a", args={"password": secret, "n": str(n)},
                                          secrets=(secret,)))))
        for n in range(3)
    }
    b_pid = int(ok(runner.call(sandboxed_call(REMEMBERS, profile="b", args={"password": "not-the-secret"}))))
    zygote_pid = runner.zygote_pid()

    assert len(a_pids) == 1, "profile a's calls were not served by one warm host"
    (a_pid,) = a_pids
    assert zygote_pid is not None
    assert len({a_pid, b_pid, zygote_pid, os.getpid()}) == 4
    assert set(runner.worker_pids()) == {a_pid, b_pid}, "profile a's host is no longer idle in the pool"
    needle = secret.encode()
    found_in_a, scanned_a = scan_memory(a_pid, needle)
    assert found_in_a, f"the scan did not find the secret where it is ({scanned_a} bytes read): it tests nothing"
    for label, pid in (("profile b's host", b_pid), ("the zygote", zygote_pid)):
        found, scanned = scan_memory(pid, needle)
        assert scanned > 1024 * 1024, f"only {scanned} bytes of {label} could be read"
        assert not found, f"profile a's secret is in the memory of {label}"


# --- 5. no process outlives its call ------------------------------------------------

DOUBLE_FORK = """
    import os, time

    def certificate_request(csr, common_name, args_dict):
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.setsid()
                grandchild = os.fork()
                if grandchild == 0:
                    os.execvp("sleep", ["sleep", "100"])
                os.write(write_end, str(grandchild).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        grandchild = int(os.read(read_end, 64))
        os.kill(grandchild, 0)  # it runs: the host is its subreaper now
        print(f"grandchild={grandchild}", flush=True)
        if args_dict["then"] == "hang":
            time.sleep(100)
        return "issued"
"""


@pytest.mark.parametrize("then", ["return", "hang"])
def test_a_session_leader_grandchild_does_not_outlive_the_call(runner: ScriptRunner, then: str) -> None:
    result = runner.call(sandboxed_call(DOUBLE_FORK, args={"then": then}, timeout_s=2))

    if then == "hang":
        assert result.timed_out, result.error
    else:
        assert (result.error, result.pem) == (None, "issued")
    match = GRANDCHILD_RE.search(result.output)
    assert match, f"the script's output lacks the grandchild's pid: {result.output!r}"
    grandchild = int(match.group(1))
    assert grandchild not in (os.getpid(), *runner.worker_pids())
    assert wait_until_gone(grandchild), "the script's setsid grandchild outlived the call"
    assert ok(runner.call(sandboxed_call(DOUBLE_FORK, args={"then": "return"}, timeout_s=5))) == "issued"


# --- 6. the network stays open ---------------------------------------------------------

NETWORK = """
    import json, socket

    def certificate_request(csr, common_name, args_dict):
        with socket.create_connection(("127.0.0.1", int(args_dict["port"])), timeout=5) as conn:
            conn.sendall(b"ping")
            answer = conn.recv(64).decode()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                accepted, _ = listener.accept()
                with accepted:
                    client.sendall(b"hello")
                    echoed = accepted.recv(64).decode()
        return json.dumps({"answer": answer, "listened_on": port, "echoed": echoed})
"""


def test_a_script_can_connect_and_listen_on_the_network(runner: ScriptRunner) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20)
    received: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = conn.recv(64)
            received.append(data)
            conn.sendall(b"pong:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        seen = ok_json(runner.call(sandboxed_call(NETWORK, args={"port": str(server.getsockname()[1])})))
    finally:
        server.close()
        thread.join(timeout=5)

    assert received == [b"ping"]
    assert seen["answer"] == "pong:ping"
    assert seen["listened_on"] > 0 and seen["echoed"] == "hello"


# --- 7. warm hosts and their recycling --------------------------------------------------

COUNTER = """
    import os, signal, sys, time
    CALLS = 0

    def certificate_request(csr, common_name, args_dict):
        global CALLS
        CALLS += 1
        fault = args_dict.get("fault", "")
        if fault == "os._exit":
            os._exit(7)
        if fault == "timeout":
            time.sleep(100)
        if fault == "signal":
            os.kill(os.getpid(), signal.SIGSEGV)
        if fault == "raise":
            raise RuntimeError("the CA said no")
        if fault == "sys.exit":
            sys.exit(3)
        return f"{CALLS} {os.getpid()}"
"""


def count_call(runner: ScriptRunner, profile: str = "a", **args: str) -> tuple[int, int]:
    count, pid = ok(runner.call(sandboxed_call(COUNTER, profile=profile, args=args))).split()
    return int(count), int(pid)


def test_a_host_stays_warm_for_its_profile_only(runner: ScriptRunner) -> None:
    a_calls = [count_call(runner, "a") for _ in range(3)]
    b_calls = [count_call(runner, "b") for _ in range(2)]

    assert [count for count, _ in a_calls] == [1, 2, 3], "module-level state did not survive between calls"
    assert len({pid for _, pid in a_calls}) == 1
    assert [count for count, _ in b_calls] == [1, 2], "profile b was served by profile a's host"
    assert {pid for _, pid in b_calls}.isdisjoint({pid for _, pid in a_calls})
    assert count_call(runner, "a") == (4, a_calls[0][1])


def test_a_host_is_recycled_after_its_calls(landlock: int) -> None:
    with ScriptRunner(RunnerConfig(recycle_after_calls=2)) as runner:
        calls = [count_call(runner) for _ in range(3)]

        assert [count for count, _ in calls] == [1, 2, 1]
        assert calls[0][1] == calls[1][1] != calls[2][1]
        assert wait_until_gone(calls[0][1]), "the recycled host is still running"
        assert runner.worker_pids() == [calls[2][1]]


@pytest.mark.parametrize(("fault", "recycled"), [
    pytest.param("os._exit", True, id="os._exit"),
    pytest.param("timeout", True, id="timeout"),
    pytest.param("signal", True, id="signal"),
    pytest.param("raise", False, id="raise"),
    pytest.param("sys.exit", False, id="sys.exit"),
])
def test_a_fault_recycles_the_host_only_when_it_ended(runner: ScriptRunner, fault: str, recycled: bool) -> None:
    count_before, pid_before = count_call(runner)
    zygote_pid = runner.zygote_pid()
    failed = runner.call(sandboxed_call(COUNTER, profile="a", args={"fault": fault}, timeout_s=1))
    assert failed.pem is None and failed.error, f"the {fault} call did not fail"
    assert failed.timed_out == (fault == "timeout")

    count_after, pid_after = count_call(runner)

    if recycled:
        assert pid_after != pid_before, f"the host survived {fault}?"
        assert count_after == 1
        assert wait_until_gone(pid_before)
    else:
        assert pid_after == pid_before, f"the host was recycled after a script's {fault}"
        assert count_after == count_before + 2
    assert runner.zygote_pid() == zygote_pid
    assert runner.worker_pids() == [pid_after]


# --- 8. concurrency -----------------------------------------------------------------

CROWD = """
    import os, time, uuid

    def certificate_request(csr, common_name, args_dict):
        here, started = args_dict["here"], args_dict["started"]
        want, total, wait_s = int(args_dict["want"]), int(args_dict["total"]), float(args_dict["wait_s"])
        mine = os.path.join(here, uuid.uuid4().hex)
        open(mine, "w").close()
        open(os.path.join(started, os.path.basename(mine)), "w").close()
        seen = 0
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            seen = max(seen, len(os.listdir(here)))
            if seen >= want or len(os.listdir(started)) >= total:  # enough, or no more will come
                break
            time.sleep(0.01)
        linger = time.monotonic() + 0.2
        while time.monotonic() < linger:  # would see any call beyond the limit
            seen = max(seen, len(os.listdir(here)))
            time.sleep(0.01)
        os.remove(mine)
        return str(seen)
"""


@pytest.mark.parametrize(("max_in_flight", "concurrency", "expected"), [
    pytest.param(None, 16, 16, id="profile-concurrency-16"),
    pytest.param(4, 16, 4, id="max-in-flight-4"),
])
def test_calls_in_flight_never_exceed_the_limits(landlock: int, shared_dir: Path, max_in_flight: int | None,
                                                 concurrency: int, expected: int) -> None:
    here, started = open_dir(shared_dir / "here"), open_dir(shared_dir / "started")
    total = 40
    config = RunnerConfig() if max_in_flight is None else RunnerConfig(max_in_flight=max_in_flight)
    call = sandboxed_call(CROWD, profile="crowd", concurrency=concurrency, allow_write=(str(here), str(started)),
                          timeout_s=60, args={"here": str(here), "started": str(started), "want": str(expected),
                                              "total": str(total), "wait_s": "15"})
    with ScriptRunner(config) as runner, ThreadPoolExecutor(max_workers=total) as threads:
        results = list(threads.map(lambda _: runner.call(call), range(total)))

    seen = [int(ok(result)) for result in results]
    assert max(seen) == expected, f"calls in flight at once: {sorted(seen)}"
    assert len(list(started.iterdir())) == total and list(here.iterdir()) == []


SLOW = """
    import os, time, uuid

    def certificate_request(csr, common_name, args_dict):
        open(os.path.join(args_dict["here"], uuid.uuid4().hex), "w").close()
        time.sleep(3)
        return "slow"
"""

FAST = """
    def certificate_request(csr, common_name, args_dict):
        return "fast"
"""


def test_a_slow_profile_does_not_hold_up_another(runner: ScriptRunner, shared_dir: Path) -> None:
    here = open_dir(shared_dir / "here")
    slow_call = sandboxed_call(SLOW, profile="slow", concurrency=2, allow_write=(str(here),), timeout_s=30,
                               args={"here": str(here)})
    slow_done: list[float] = []

    def slow() -> str:
        result = runner.call(slow_call)
        slow_done.append(time.monotonic())
        return ok(result)

    with ThreadPoolExecutor(max_workers=4) as threads:
        slow_results = [threads.submit(slow) for _ in range(4)]
        deadline = time.monotonic() + 20
        while len(list(here.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(list(here.iterdir())) == 2, "the slow profile's calls did not start"
        fast = runner.call(sandboxed_call(FAST, profile="fast", concurrency=2))  # the same limit, its own slots
        fast_done = time.monotonic()
        slow_in_flight = len(list(here.iterdir()))
        slow_finished_first = list(slow_done)
        assert [f.result() for f in slow_results] == ["slow"] * 4

    assert ok(fast) == "fast"
    assert slow_finished_first == [], "the fast call returned only after a slow one"
    assert fast_done < min(slow_done)
    assert slow_in_flight == 2, "the slow profile ran more calls at once than its concurrency"


# --- 9. limitations() --------------------------------------------------------------------


def test_limitations_are_none_on_a_machine_with_every_layer(runner: ScriptRunner) -> None:
    if not IS_ROOT:
        missing("scripts run as another user only when certpilot runs as root")
    assert runner.limitations() == []


def test_limitations_name_a_missing_landlock(runner: ScriptRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    notes = runner.limitations()

    assert any("Landlock" in note for note in notes), notes
    if IS_ROOT:
        assert len(notes) == 1, notes
        assert "Landlock" in notes[0]
