"""Running the `certpilot` command line in end-to-end tests.

`Cli` runs the real command tree, `certpilot.cli.main.run` (the console script's entry
point), on a real data dir and database: in the test process by default, through Typer's
test-runner isolation (its own argv, stdin, stdout, stderr, environment and working
directory per call), which saves a Python start-up and the imports per step. Where a
separate process is the point (start-up imports, `serve`, `worker`, signals, the sandbox
seen from outside), `Cli(..., in_process=False)` spawns the installed console script.
Either way a test sees what a user sees: exit status, stdout and stderr. The settings
go in the environment (default), as flags on the subcommand, or as flags before it
(DESIGN §5: every command takes `--data-dir` / `--database-url`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from certpilot.pki.local_ca import LocalCA, create_local_ca
from tests.support.processes import certpilot_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ISSUER = REPO_ROOT / "examples" / "issuers" / "local_ca.py"
CALL_TIMEOUT_S = 180
SETTINGS_VIA = ("env", "subcommand-flags", "root-flags", "defaults")


@dataclass(frozen=True)
class CliResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{' '.join(self.argv)} printed no JSON ({exc}):\n{self.stdout}") from None

    def describe(self) -> str:
        return f"$ certpilot {' '.join(self.argv)}\nexit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class Cli:
    """The real command line, bound to one data dir and database."""

    data_dir: Path
    database_url: str | None
    settings_via: str = "env"  # one of SETTINGS_VIA; "defaults" gives neither flags nor environment
    cwd: Path | None = None
    in_process: bool = True  # False: every call is a new `certpilot` process
    env: dict[str, str | None] = field(default_factory=dict)  # more environment (SOFTHSM2_CONF, ...); None unsets
    history: list[CliResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.settings_via not in SETTINGS_VIA:
            raise ValueError(f"settings_via must be one of {SETTINGS_VIA}, got {self.settings_via!r}")

    def _argv(self, args: tuple[str, ...]) -> tuple[str, ...]:
        flags: list[str] = []
        if self.settings_via in ("subcommand-flags", "root-flags"):
            flags = ["--data-dir", str(self.data_dir)]
            if self.database_url is not None:
                flags += ["--database-url", self.database_url]
        if self.settings_via == "root-flags":
            return (*flags, *args)
        return (*args, *flags)

    def _settings_env(self) -> dict[str, str | None]:
        env = {"CERTPILOT_INSECURE_TEST_PASSWORD_HASHING": "1", **self.env}  # cheap argon2: tests, not passwords
        if self.settings_via == "env":
            env["CERTPILOT_DATA_DIR"] = str(self.data_dir)
            if self.database_url is not None:
                env["CERTPILOT_DATABASE_URL"] = self.database_url
        return env

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
        for name, value in self._settings_env().items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def _workdir(self) -> Path:
        return self.cwd or self.data_dir.parent

    def _start(self, args: tuple[Any, ...]) -> tuple[tuple[str, ...], subprocess.Popen[str]]:
        argv = self._argv(tuple(str(a) for a in args))
        proc = subprocess.Popen(
            [certpilot_executable(), *argv], env=self._env(), cwd=self._workdir(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        return argv, proc

    def _finish(self, argv: tuple[str, ...], proc: subprocess.Popen[str]) -> CliResult:
        try:
            out, err = proc.communicate(timeout=CALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"certpilot {' '.join(argv)} did not finish in {CALL_TIMEOUT_S} s\n{out}\n{err}")
        return self._record(CliResult(argv, proc.returncode, out, err))

    def _record(self, result: CliResult) -> CliResult:
        self.history.append(result)
        return result

    def _run_here(self, args: tuple[Any, ...]) -> CliResult:
        argv = self._argv(tuple(str(a) for a in args))
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CERTPILOT_")}
        env.update(self._settings_env())
        returncode, out, err = run_in_process(argv, env, self._workdir())
        return self._record(CliResult(argv, returncode, out, err))

    def run(self, *args: Any) -> CliResult:
        if self.in_process:
            return self._run_here(args)
        return self._finish(*self._start(args))

    def run_parallel(self, *commands: tuple[Any, ...]) -> list[CliResult]:
        """Run read-only commands (side by side when each is a process of its own)."""
        if self.in_process:
            return [self._run_here(args) for args in commands]
        started = [self._start(args) for args in commands]
        return [self._finish(argv, proc) for argv, proc in started]

    def ok(self, *args: Any) -> CliResult:
        result = self.run(*args)
        assert result.returncode == 0, result.describe()
        assert "Traceback" not in result.stderr, result.describe()
        return result

    def json(self, *args: Any) -> Any:
        return self.ok(*args).json()

    def all_output(self) -> str:
        return "\n".join(r.stdout + "\n" + r.stderr for r in self.history)


# --- one command in this process, as the console script would run it ----------------

# The console script's module `__main__` has no package (under `python -m pytest` it has
# one, and Click would then call the program `python -m pytest`).
_SCRIPT_MAIN = types.ModuleType("__main__")


@contextmanager
def _as_the_console_script(argv: tuple[str, ...], cwd: Path) -> Iterator[None]:
    """sys.argv, `__main__`, the working directory, Python's default warning filters and
    the logging module's last-resort handler (WARNING and up, to stderr), as a fresh
    `certpilot` process has them; all put back afterwards."""
    saved_argv, saved_main, saved_cwd = sys.argv, sys.modules["__main__"], os.getcwd()
    last_resort = logging.StreamHandler(sys.stderr)  # called within the isolation: its stderr
    last_resort.setLevel(logging.WARNING)
    root = logging.getLogger()
    sys.argv = [certpilot_executable(), *argv]
    sys.modules["__main__"] = _SCRIPT_MAIN
    os.chdir(cwd)
    root.addHandler(last_resort)
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category, append=True)
            yield
    finally:
        root.removeHandler(last_resort)
        os.chdir(saved_cwd)
        sys.modules["__main__"] = saved_main
        sys.argv = saved_argv


def _exit_status(exc: SystemExit, stderr: Any) -> int:
    """What the interpreter makes of SystemExit(code): None is 0, a text is printed and 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=stderr)
    return 1


def run_in_process(argv: tuple[str, ...], env: dict[str, str | None], cwd: Path) -> tuple[int, str, str]:
    """`certpilot ARGV` through its console-script entry point in this process: exit
    status, stdout, stderr. An exception that escapes is printed as Python would print it
    (a traceback on stderr, status 1). A command that leaves a non-daemon thread running
    would keep a real process from exiting: that fails the test."""
    from certpilot.cli.main import run

    threads_before = set(threading.enumerate())
    with CliRunner().isolation(env=env) as (out, err, _mixed):
        with _as_the_console_script(argv, cwd):
            try:
                run()
                returncode = 0
            except SystemExit as exc:
                returncode = _exit_status(exc, sys.stderr)
            except BaseException:  # noqa: BLE001 - reported as the interpreter reports it
                traceback.print_exc(file=sys.stderr)
                returncode = 1
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode(errors="replace")
    left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon]
    if left:
        pytest.fail(f"certpilot {' '.join(argv)} left non-daemon threads running, a process would not exit: "
                    f"{[t.name for t in left]}\n{stdout}\n{stderr}")
    return returncode, stdout, stderr


@dataclass
class SeededInstallation:
    """An initialised installation: script `local-ca`, profile `corp`, `web1` issued."""

    cli: Cli
    ca: LocalCA
    work_dir: Path
    issuer_file: Path


def assert_clean_error(result: CliResult, *fragments: str) -> str:
    """Non-zero exit, one sentence on stderr starting with `error:`, no traceback;
    returns the message. Each fragment must appear in it (case-insensitive)."""
    assert result.returncode != 0, result.describe()
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr\n{result.describe()}"
    message = lines[0]
    assert message.startswith("error: "), result.describe()
    assert len(message) > len("error: ") + 10, result.describe()
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in the message\n{result.describe()}"
    return message


def admin_password_from(init_output: str) -> str:
    lines = [line for line in init_output.splitlines() if "password" in line.lower()]
    assert len(lines) == 1, f"init should print the admin password once:\n{init_output}"
    password = lines[0].split()[-1]
    assert len(password) >= 12, init_output
    return password


def copy_example_issuer(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "local_ca_issuer.py"
    shutil.copyfile(EXAMPLE_ISSUER, target)
    return target


def make_test_ca(directory: Path) -> LocalCA:
    return create_local_ca(directory, "Test CA", dt.datetime.now(dt.timezone.utc))


def corp_profile_args(ca: LocalCA, *, name: str = "corp", script: str = "local-ca") -> tuple[str, ...]:
    return (
        "profile", "create", name, "--script", script,
        "--param", f"ca_cert={ca.cert_path.read_text()}",
        "--sensitive-param", f"ca_key={ca.key_path.read_text()}",
        "--sensitive-param", f"ca_key_password={ca.password}",
        "--param", "validity_days=30",
        "--dynamic-param", "cost_center",
    )


WEB1_REQUEST = (
    "cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test",
    "--san", "www.example.test", "--san", "IP:127.0.0.1", "--org", "Example", "--country", "DE",
    "--key", "ec:p384", "--param", "cost_center=CC-1",
)
