"""A probe issuer script, run by the real `certpilot` three ways a user runs scripts:
`cert request --wait` (the CLI process is the controller), a `certpilot worker`
picking up a pending certificate, and a `certpilot serve` whose renewal loop takes a
certificate POSTed to the API. On SQLite (the database in the data dir, the default)
and PostgreSQL.

The probe tries what a hostile script would, reports each outcome in one JSON line
on stdout, then raises, so that the attempt is recorded as failed with its output:
reading the master key and the database, listing and writing into the data dir,
reading `/proc/PID/environ` and `/proc/PID/mem` and sending signal 0 for every pid
there is (the controller's among them), and its uid. The data dir and its files are
given to the script user for this test, so that only the sandbox (Landlock) stands
in the way, not file modes; a control run as that user without the sandbox shows
that file modes alone would let it in.

A second profile (`keeper`) runs the same probe with a secret of its own. With
`worker` and `serve` the hosts stay warm and idle, and the test reads their memory
(as root): the probe's host holds its own secret (the control) and not the keeper's,
and neither secret is in the zygote. With `--wait` the CLI process takes its hosts
with it: run under a child subreaper, nothing it started may outlive it.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from certpilot.config import Settings
from certpilot.issuers import sandbox
from certpilot.services.app import App
from certpilot.services.certificates import list_attempts
from tests.conftest import missing
from tests.integration.issuers.test_script_sandbox import scan_memory
from tests.support.cli import CALL_TIMEOUT_S, Cli
from tests.support.processes import (
    ServerProcess,
    WorkerProcess,
    certpilot_executable,
    descendants,
    is_alive,
    settings_env,
    wait_for,
)
from tests.support.script_access import share_with_scripts

SCRIPT_USER = sandbox.DEFAULT_SCRIPT_USER
PROBE_MARK = "PROBE "
DENIED = "PermissionError"
PLANTED = "planted-by-probe"

PROBE_SOURCE = r'''
import json, os, threading

KEPT = []  # module-level state, as a script keeps a loaded CA key: this profile's secret stays here


def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return type(exc).__name__


def read(path):
    return lambda: open(path, "rb").read(1)


def write(path):
    def do():
        with open(path, "w") as f:
            f.write("planted by the probe")
    return do


def other_processes(pid_max, mine):
    """Every pid there is, whether its environ and memory could be read and whether it
    could be sent signal 0. The pid space is walked: /proc cannot be listed here."""
    seen = {"existing": [], "environ_readable": [], "mem_readable": [], "signalled": []}
    for pid in range(1, pid_max + 1):
        if pid in mine:
            continue
        exists = False
        try:
            open(f"/proc/{pid}/environ", "rb").read(1)
            exists = True
            seen["environ_readable"].append(pid)
        except FileNotFoundError:
            pass
        except OSError:
            exists = True
        try:
            os.kill(pid, 0)
            exists = True
            seen["signalled"].append(pid)
        except ProcessLookupError:
            pass
        except OSError:
            exists = True
        if not exists:
            continue
        seen["existing"].append(pid)
        try:
            open(f"/proc/{pid}/mem", "rb").close()  # access is checked at open
            seen["mem_readable"].append(pid)
        except OSError:
            pass
    return seen


def certificate_request(csr, common_name, args_dict):
    KEPT.append(dict(args_dict))
    data_dir = args_dict["data_dir"]
    me = os.getpid()
    report = {
        "pid": me,
        "ppid": os.getppid(),
        "uid": os.getresuid(),
        "gid": os.getresgid(),
        "read master.key": attempt(read(os.path.join(data_dir, "master.key"))),
        "list data dir": attempt(lambda: os.listdir(data_dir)),
        "write into data dir": attempt(write(os.path.join(data_dir, "planted-by-probe"))),
        "list /proc": attempt(lambda: os.listdir("/proc")),
        "read /proc/1/environ": attempt(read("/proc/1/environ")),
        "read parent's environ": attempt(read(f"/proc/{os.getppid()}/environ")),
        "kill pid 1": attempt(lambda: os.kill(1, 0)),
        "kill parent": attempt(lambda: os.kill(os.getppid(), 0)),
    }
    if args_dict.get("db_file"):
        report["read certpilot.db"] = attempt(read(args_dict["db_file"]))
    mine = {me} | {t.native_id for t in threading.enumerate()}
    report.update(other_processes(int(args_dict["pid_max"]), mine))
    print("PROBE " + json.dumps(report), flush=True)
    raise RuntimeError("probe finished")
'''


# --- the installation ------------------------------------------------------------------


@dataclass(frozen=True)
class Probed:
    """An installation with script `probe` and profiles `probe` and `keeper`, each with a
    sensitive `token` of its own."""

    cli: Cli
    work_dir: Path
    settings: Settings
    db_file: Path | None
    probe_secret: str
    keeper_secret: str
    script_uid: int


def give_to_script_user(data_dir: Path, uid: int, gid: int) -> None:
    """The data dir and its files owned by the script user (certpilot, root, still reads
    them): file modes no longer keep scripts out, only the sandbox does."""
    for path in [data_dir, *data_dir.iterdir()]:
        os.chown(path, uid, gid)


def assert_file_modes_would_let_the_script_user_in(installation: Probed) -> None:
    """The control: without the sandbox, the script user reads the master key and the
    database, and lists and writes into the data dir."""
    data_dir = installation.settings.data_dir
    files = [data_dir / "master.key"] + ([installation.db_file] if installation.db_file else [])
    code = ("import os, sys\n"
            "data_dir, files = sys.argv[1], sys.argv[2:]\n"
            "for path in files: open(path, 'rb').read(1)\n"
            "os.listdir(data_dir)\n"
            "planted = os.path.join(data_dir, 'control-write')\n"
            "open(planted, 'w').close(); os.remove(planted)\n")
    control = subprocess.run([sys.executable, "-I", "-c", code, str(data_dir), *map(str, files)],
                             user=installation.script_uid, group=pwd.getpwuid(installation.script_uid).pw_gid,
                             extra_groups=[], capture_output=True, text=True, cwd="/", timeout=30)
    assert control.returncode == 0, f"the script user cannot reach the data dir even without the sandbox:\n{control.stderr}"


@pytest.fixture(scope="module")
def installation(module_database_url: str) -> Iterator[Probed]:
    if os.geteuid() != 0:
        missing("scripts run as another user, and their memory can be read, only when certpilot runs as root")
    if sandbox.landlock_abi() < 6:
        missing(f"this kernel offers Landlock ABI {sandbox.landlock_abi()}, the sandbox needs 6 for every layer")
    # not under pytest's basetemp: a pytest run starting meanwhile makes /tmp/pytest-of-root 0700 again
    work = Path(share_with_scripts(Path(tempfile.mkdtemp(prefix="certpilot-sandbox-probe-", dir="/tmp"))))
    try:
        yield installed(work, module_database_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def installed(work: Path, module_database_url: str) -> Probed:
    # SQLite: the default, certpilot.db in the data dir, next to the master key
    database_url = None if module_database_url.startswith("sqlite") else module_database_url
    cli = Cli(work / "data", database_url)
    cli.ok("init")
    settings = Settings(data_dir=cli.data_dir, database_url=database_url)
    db_file = settings.sqlite_path
    assert db_file is None or db_file.parent == cli.data_dir.resolve()
    user = pwd.getpwnam(SCRIPT_USER)  # `init` made it
    give_to_script_user(cli.data_dir, user.pw_uid, user.pw_gid)

    probe_file = work / "probe.py"
    probe_file.write_text(PROBE_SOURCE)
    cli.ok("script", "add", "probe", "--file", probe_file, "--timeout", "30")
    pid_max = Path("/proc/sys/kernel/pid_max").read_text().strip()
    probe_secret, keeper_secret = (f"{who}-{secrets.token_urlsafe(32)}" for who in ("probe", "keeper"))
    for profile, secret in (("probe", probe_secret), ("keeper", keeper_secret)):
        params = ["--param", f"data_dir={cli.data_dir.resolve()}", "--param", f"pid_max={pid_max}",
                  "--sensitive-param", f"token={secret}"]
        if db_file is not None:
            params += ["--param", f"db_file={db_file}"]
        cli.ok("profile", "create", profile, "--script", "probe", *params)
    probed = Probed(cli, work, settings, db_file, probe_secret, keeper_secret, user.pw_uid)
    assert_file_modes_would_let_the_script_user_in(probed)
    return probed


# --- what a probe reports ----------------------------------------------------------------


def probe_report(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The probe's JSON line from the newest attempt, which must have failed as the probe
    ends: the script's own error, its output captured."""
    assert attempts, "no attempt was recorded"
    newest = attempts[0]
    assert newest["outcome"] == "failed", newest
    assert newest["error"] == "probe finished", newest
    output = newest["output"] or ""
    lines = [line for line in output.splitlines() if line.startswith(PROBE_MARK)]
    assert len(lines) == 1, f"the probe's report is not in the attempt's output:\n{output}"
    assert "RuntimeError: probe finished" in output, "the script's traceback (stderr) was not captured"
    return json.loads(lines[0].removeprefix(PROBE_MARK))


def assert_confined(report: dict[str, Any], installation: Probed, *, controller_pid: int,
                    other_hosts: tuple[int, ...] = ()) -> None:
    """Every probe result: nothing of the data dir, no other process, not root."""
    uid = installation.script_uid
    gid = pwd.getpwuid(uid).pw_gid
    assert report["uid"] == [uid] * 3 and report["gid"] == [gid] * 3, f"the script ran as {report['uid']}"
    assert uid != 0
    expected = {
        "read master.key": DENIED,
        "list data dir": DENIED,
        "write into data dir": DENIED,
        "list /proc": DENIED,
        "read /proc/1/environ": DENIED,
        "read parent's environ": DENIED,
        "kill pid 1": DENIED,
        "kill parent": DENIED,
    }
    if installation.db_file is not None:
        expected["read certpilot.db"] = DENIED
    assert {key: report.get(key) for key in expected} == expected
    assert report["environ_readable"] == [], "the script read other processes' environment"
    assert report["mem_readable"] == [], "the script read other processes' memory"
    assert report["signalled"] == [], "the script could signal other processes"
    existing = set(report["existing"])
    # the walk saw the processes that matter (it tests nothing otherwise)
    for what, pid in (("pid 1", 1), ("its supervisor", report["ppid"]), ("the controller", controller_pid),
                      *((f"host {pid}", pid) for pid in other_hosts)):
        assert pid in existing, f"the probe's walk over the pids missed {what} ({pid})"
    assert not (installation.settings.data_dir / PLANTED).exists()


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def assert_memory_isolated(installation: Probed, controller_pid: int, probe_host: int, keeper_host: int) -> None:
    """Both hosts are warm, idle and the controller's; each holds its own profile's
    secret, neither the other's, and the zygote neither."""
    zygote = parent_of(parent_of(probe_host))
    assert zygote == parent_of(parent_of(keeper_host)), "the hosts were not forked by one zygote"
    assert "certpilot.issuers.zygote" in cmdline(zygote)
    assert len({probe_host, keeper_host, zygote, controller_pid}) == 4
    under_controller = descendants(controller_pid)
    for host in (probe_host, keeper_host):
        assert is_alive(host) and host in under_controller, f"host {host} is not a warm host of the controller"
        assert process_uid(host) == installation.script_uid
    probe_needle, keeper_needle = installation.probe_secret.encode(), installation.keeper_secret.encode()

    for host, own, other in ((probe_host, probe_needle, keeper_needle), (keeper_host, keeper_needle, probe_needle)):
        found, scanned = scan_memory(host, own)
        assert found, f"the control failed: host {host}'s own secret is not in its memory ({scanned} bytes read)"
        found, scanned = scan_memory(host, other)
        assert scanned > 1024 * 1024, f"only {scanned} bytes of host {host} could be read"
        assert not found, f"host {host} holds the other profile's secret"
    for needle in (probe_needle, keeper_needle):
        found, scanned = scan_memory(zygote, needle)
        assert scanned > 1024 * 1024 and not found, f"the zygote holds a profile's secret ({scanned} bytes read)"


def wait_until_hosts_end(pids: tuple[int, ...]) -> None:
    wait_for(lambda: not any(is_alive(pid) for pid in pids), timeout_s=10, interval_s=0.1,
             what=f"the end of the script hosts {pids} with their controller")


# --- 1. cert request --wait: the CLI process is the controller ----------------------------

# Runs a command as a child subreaper: whatever the command starts and leaves behind is
# re-parented here (whatever its session) and reported, then killed.
SUBREAPER = r'''
import ctypes, json, os, signal, subprocess, sys, time

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("cannot become a child subreaper")
report_path, argv = sys.argv[1], sys.argv[2:]


def descendants():
    found, todo = [], [os.getpid()]
    while todo:
        parent = todo.pop()
        for tid in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    children = [int(p) for p in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def describe(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return {"uid": uid, "cmdline": f.read().replace(b"\0", b" ").decode(errors="replace")}
    except (OSError, StopIteration):
        return None


def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


command = subprocess.Popen(argv)
status = command.wait()
ended = time.monotonic()
after_exit = {}
while True:
    reap()
    left = [pid for pid in descendants() if describe(pid) is not None]
    for pid in left:
        after_exit.setdefault(pid, describe(pid))
    if not left or time.monotonic() - ended > 5:
        break
    time.sleep(0.01)
gone_after_s = time.monotonic() - ended
for pid in left:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
deadline = time.monotonic() + 5
while descendants() and time.monotonic() < deadline:
    reap()
    time.sleep(0.01)
with open(report_path, "w") as f:
    json.dump({"pid": command.pid, "status": status, "after_exit": after_exit, "left": left,
               "gone_after_s": gone_after_s}, f)
sys.exit(status)
'''


def run_under_subreaper(cli: Cli, report_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env["CERTPILOT_DATA_DIR"] = str(cli.data_dir)
    if cli.database_url is not None:
        env["CERTPILOT_DATABASE_URL"] = cli.database_url
    done = subprocess.run([sys.executable, "-I", "-c", SUBREAPER, str(report_path), certpilot_executable(), *args],
                          env=env, cwd=cli.data_dir.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CALL_TIMEOUT_S)
    return done, json.loads(report_path.read_text())


def test_cert_request_wait(installation: Probed) -> None:
    cli = installation.cli
    done, run = run_under_subreaper(cli, installation.work_dir / "subreaper-wait.json", "cert", "request", "probe-wait",
                                    "--profile", "probe", "--cn", "probe-wait.example.test", "--wait")

    assert done.returncode == 1 and run["status"] == 1, done
    assert "probe finished" in done.stderr and "Traceback" not in done.stderr, done.stderr
    attempts, shown = cli.run_parallel(("cert", "attempts", "probe-wait", "--json"),
                                       ("cert", "show", "probe-wait", "--json"))
    for result in (attempts, shown):
        assert result.returncode == 0, result.describe()
    report = probe_report(attempts.json())
    assert_confined(report, installation, controller_pid=run["pid"])
    status = shown.json()["status"]
    assert (status["phase"], status["failures"], status["last_error"]) == ("failed", 1, "probe finished")
    # the CLI took its script hosts with it: nothing it started outlived it
    assert run["left"] == [], f"still running {run['gone_after_s']:.1f} s after the CLI exited: {run['after_exit']}"
    lingering = {pid: p for pid, p in run["after_exit"].items()
                 if p["uid"] == installation.script_uid or "certpilot.issuers.zygote" in p["cmdline"]}
    assert run["gone_after_s"] < 2, f"script processes outlived the CLI by {run['gone_after_s']:.1f} s: {lingering}"
    assert not is_alive(report["pid"])
    assert installation.probe_secret not in done.stdout + done.stderr


# --- 2. certpilot worker, 3. certpilot serve: warm hosts ------------------------------------


def attempt_finished(settings: Settings, name: str) -> bool:
    """Whether `name` has a finished attempt (read in-process: polling with the CLI costs a
    Python start-up a look)."""
    with App(settings) as app:
        attempts = list_attempts(app, name)
    return bool(attempts) and attempts[0].outcome is not None


@pytest.fixture
def worker(installation: Probed, tmp_path: Path) -> Iterator[WorkerProcess]:
    started = WorkerProcess.start("probe", settings_env(installation.settings), tmp_path)
    try:
        yield started
    finally:
        started.clean_up()


def test_worker(installation: Probed, worker: WorkerProcess) -> None:
    cli = installation.cli

    def run(name: str, profile: str) -> dict[str, Any]:
        cli.ok("cert", "request", name, "--profile", profile, "--cn", f"{name}.example.test")
        wait_for(lambda: attempt_finished(installation.settings, name), timeout_s=60, alive=worker.died,
                 what=f"the worker's attempt for {name}")
        return probe_report(cli.json("cert", "attempts", name, "--json"))

    probe = run("probe-worker", "probe")
    assert_confined(probe, installation, controller_pid=worker.pid)
    keeper = run("keeper-worker", "keeper")
    assert_confined(keeper, installation, controller_pid=worker.pid, other_hosts=(probe["pid"],))

    assert_memory_isolated(installation, worker.pid, probe["pid"], keeper["pid"])
    assert worker.terminate(timeout_s=30) == 0, worker.log()[-3000:]
    wait_until_hosts_end((probe["pid"], keeper["pid"]))
    assert installation.probe_secret not in worker.log() and installation.keeper_secret not in worker.log()


@pytest.fixture
def server(installation: Probed, tmp_path: Path) -> Iterator[ServerProcess]:
    started = ServerProcess.start(installation.settings, tmp_path)
    seen: set[int] = set()
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            seen = descendants(started.proc.pid)
        started.clean_up(seen)


def test_serve(installation: Probed, server: ServerProcess) -> None:
    token = installation.cli.ok("token", "create", "admin", "--label", "sandbox probe").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}

    def died() -> str | None:
        return None if server.proc.poll() is None else f"certpilot serve exited:\n{server.stderr()[-3000:]}"

    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30.0) as http:
        def run(name: str, profile: str) -> dict[str, Any]:
            body = {"name": name, "spec": {"profile": profile, "subject": {"common_name": f"{name}.example.test"}}}
            created = http.post("/api/v1/certificates", json=body)
            assert created.status_code == 202, created.text

            def finished() -> list[dict[str, Any]] | None:
                attempts = http.get(f"/api/v1/certificates/{name}/attempts").json()
                return attempts if attempts and attempts[0]["outcome"] is not None else None

            return probe_report(wait_for(finished, timeout_s=60, alive=died, what=f"the server's attempt for {name}"))

        probe = run("probe-serve", "probe")
        assert_confined(probe, installation, controller_pid=server.proc.pid)
        keeper = run("keeper-serve", "keeper")
        assert_confined(keeper, installation, controller_pid=server.proc.pid, other_hosts=(probe["pid"],))

    assert_memory_isolated(installation, server.proc.pid, probe["pid"], keeper["pid"])
    assert server.terminate(timeout_s=30) in (0, -signal.SIGTERM), server.stderr()[-3000:]
    wait_until_hosts_end((probe["pid"], keeper["pid"]))
    logs = server.stdout() + server.stderr()
    assert installation.probe_secret not in logs and installation.keeper_secret not in logs
