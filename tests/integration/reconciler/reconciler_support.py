"""What the renewal-loop tests share: a fake clock, a local CA that can follow it,
issuer scripts that fail or stall, worker processes and database queries.

Not a test module; the fixtures built on it live in this directory's conftest.py.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select

from tests.support.script_access import grants_for
from certpilot.config import Settings
from certpilot.domain.model import Event, EventKind, KeySpec, ProfileParam, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import certificate_events, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.tables import AttemptRow, CertificateRow, CertificateStatusRow, RevisionRow
from tests.support.processes import certpilot_argv, settings_env  # noqa: F401 - re-exported

ACTOR = "test:reconciler"
T = TypeVar("T")


# --- time ----------------------------------------------------------------------------


class FakeClock:
    """A frozen UTC clock that moves only when told to. With `now_file`, the instant is
    also written there, so a CA script in another process can issue "now" too."""

    def __init__(self, start: dt.datetime, now_file: Path | None = None) -> None:
        self._now = start
        self._now_file = now_file
        self._publish()

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        return self.set(self._now + delta)

    def set(self, instant: dt.datetime) -> dt.datetime:
        assert instant.tzinfo is not None, "the clock speaks aware UTC datetimes"
        self._now = instant
        self._publish()
        return instant

    def _publish(self) -> None:
        if self._now_file is not None:
            self._now_file.write_text(self._now.isoformat())


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def whole_seconds(instant: dt.datetime) -> dt.datetime:
    """X.509 validity has one-second resolution; a clock on whole seconds keeps the
    instants the tests derive from a certificate exact."""
    return instant.replace(microsecond=0)


# --- issuer scripts ------------------------------------------------------------------

_REAL_NOW_LINE = "now = datetime.datetime.now(datetime.timezone.utc)"


def fake_time_local_ca_source() -> str:
    """The bundled local-CA script, reading "now" from the file named by the profile
    parameter `fake_now_file` instead of the real clock, so the certificates it issues
    live in the same (fake) time as the controller that checks and schedules them."""
    source = bundled_local_ca_source()
    assert source.count(_REAL_NOW_LINE) == 1, "the bundled local-CA script no longer reads the clock in one line"
    return source.replace(
        _REAL_NOW_LINE,
        'now = datetime.datetime.fromisoformat(open(args_dict["fake_now_file"]).read().strip())',
    )


FAILING_CA_MESSAGE = "CA unavailable: 503 Service Unavailable"

FAILING_CA_SOURCE = textwrap.dedent(
    f'''
    def certificate_request(csr, common_name, args_dict):
        raise RuntimeError({FAILING_CA_MESSAGE!r})
    '''
).lstrip()


def stalling_local_ca_source(stall_s: float) -> str:
    """The bundled local-CA script that, the first time it is called (per marker file,
    profile parameter `stall_marker`), writes the marker and sleeps `stall_s` seconds
    before signing: a CA that is slow exactly once."""
    prelude = textwrap.dedent(
        f'''
        import os as _os
        import time as _time


        def _stall_once(args_dict):
            marker = args_dict["stall_marker"]
            if _os.path.exists(marker):
                return
            with open(marker, "w") as f:
                f.write(str(_os.getpid()))
            _time.sleep({stall_s!r})
        '''
    )
    source = bundled_local_ca_source()
    head = "def certificate_request(csr, common_name, args_dict):\n"
    assert source.count(head) == 1
    return source.replace(head, prelude + "\n\n" + head + "    _stall_once(args_dict)\n")


def local_ca_params(ca: LocalCA, **extra: str) -> list[ProfileParam]:
    params = [
        ProfileParam("ca_cert", ca.cert_path.read_text()),
        ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", ca.password, sensitive=True),
    ]
    params += [ProfileParam(name, value) for name, value in extra.items()]
    return params


def add_local_ca_profile(
    app: App,
    ca: LocalCA,
    *,
    profile: str,
    script: str,
    source: str,
    timeout_s: int = 30,
    renew_before_days: int | None = None,
    renew_before_percent: float | None = None,
    warning_days: Sequence[int] | None = None,
    **params: str,
) -> None:
    add_script(app, script, source, timeout_s=timeout_s, actor=ACTOR)
    create_profile(
        app, profile, script=script, params=local_ca_params(ca, **params),
        renew_before_days=renew_before_days, renew_before_percent=renew_before_percent,
        warning_days=warning_days, allow_write=grants_for(params.values()), actor=ACTOR,
    )


def request(app: App, name: str, *, profile: str, key: KeySpec | None = None) -> None:
    request_certificate(app, name, profile=profile, subject=make_subject(f"{name}.example.test"),
                        key=key, actor=ACTOR)


def events_of(app: App, name: str, kind: EventKind) -> list[Event]:
    """The certificate's events of one kind, oldest first."""
    return [e for e in reversed(certificate_events(app, name)) if e.kind == kind.value]


# --- database queries (what no service exposes: leases, attempts of every row) -------


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str | None
    expires_at: dt.datetime | None


def leases(app: App) -> list[Lease]:
    query = (
        select(CertificateRow.name, CertificateStatusRow.lease_owner, CertificateStatusRow.lease_expires_at)
        .join(CertificateStatusRow, CertificateStatusRow.certificate_id == CertificateRow.id)
        .order_by(CertificateRow.name)
    )
    with app.db.engine.connect() as conn:
        return [Lease(*row) for row in conn.execute(query)]


def held_leases(app: App) -> list[Lease]:
    return [lease for lease in leases(app) if lease.owner is not None]


@dataclass(frozen=True)
class AttemptFact:
    certificate: str
    id: int
    kind: str
    worker: str | None
    key_id: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None
    error: str | None
    revision: int | None


def all_attempts(app: App) -> list[AttemptFact]:
    query = (
        select(CertificateRow.name, AttemptRow.id, AttemptRow.kind, AttemptRow.worker, AttemptRow.key_id,
               AttemptRow.started_at, AttemptRow.finished_at, AttemptRow.outcome, AttemptRow.error,
               AttemptRow.revision_number)
        .join(CertificateRow, CertificateRow.id == AttemptRow.certificate_id)
        .order_by(AttemptRow.id)
    )
    with app.db.engine.connect() as conn:
        return [AttemptFact(*row) for row in conn.execute(query)]


def revision_counts(app: App) -> dict[str, int]:
    """Certificate name -> number of stored revisions (0 included)."""
    query = (
        select(CertificateRow.name, func.count(RevisionRow.id))
        .outerjoin(RevisionRow, RevisionRow.certificate_id == CertificateRow.id)
        .group_by(CertificateRow.name)
    )
    with app.db.engine.connect() as conn:
        return {name: count for name, count in conn.execute(query)}


# --- waiting -------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
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


# --- worker processes ----------------------------------------------------------------


# certpilot_argv: one copy for every suite (tests/support/processes.py), re-exported here


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    return settings_env(settings, **overrides)


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


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (Linux /proc)."""
    result: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        result.append(child)
        todo += _children(child)
    return result


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


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
        self.script_workers |= {p for p in descendants(self.pid) if "certpilot.issuers.zygote" in _cmdline(p)}

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
            if "certpilot.issuers.zygote" not in _cmdline(pid):
                continue  # gone already (and the pid not reused by one of ours)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
