#!/usr/bin/env python3
"""Script runtime benchmark: the renewal loop drains pending certificates through the warm,
sandboxed script hosts; a slow CA's calls in flight; memory per call in flight.

    .venv/bin/python bench/runtime.py                       # full run, SQLite and PostgreSQL
    .venv/bin/python bench/runtime.py --quick               # smoke run (the test suite runs it)
    .venv/bin/python bench/runtime.py --databases sqlite --json out.json
    python -m bench runtime [flags]                         # the same, through the harness

Every run starts a fresh `App` on the benchmark's database (so a fresh script
zygote and no warm host left over from another run), creates a profile with the
bundled local-CA script, the CA inline in its parameters
(`services.setup.local_ca_params`), requests the certificates (phase pending,
all due at once), and only then starts `Reconciler(app).run_forever()` on a
thread, with default settings (max_in_flight 64, profile concurrency 16). A run
ends when every certificate has its first revision. Times run from the loop's
start to the `issued_at` of the last revision.

Parts, per database and repetition:

drain     N EC P-256 certificates (default 200): certs/s, CPU per certificate of this
          process (`time.process_time`: the loop, the key generation, the ORM), of the
          script side (zygote, supervisors, hosts) and of PostgreSQL; the calls in flight
          (`len(app.runner._busy)`, sampled every 5 ms). The in-process crypto bound
          (`_bound.run`, EC P-256, 1 thread) is measured just before and just after;
          the ratio is drain / (2 x bound), the "2-process bound". Then RSA 2048 with
          fewer certificates (default 40) against the RSA 2048 key generation bound
          (1 thread, before and after).
slow      64 certificates due at once on a profile whose script (the bundled one, with
          `time.sleep(delay_s)` at the start of `certificate_request`) takes 0.5 s:
          the most calls in flight seen, their mean, certs/s. While it runs, every
          250 ms, the PSS and RSS (/proc/PID/smaps_rollup) of the zygote and of every
          process under it (supervisors, hosts): memory per call in flight is taken
          at the sample with the most calls in flight.
two       a fast profile (default 100 EC certificates) drained alone, then again with the
          slow profile's 64 certificates due at the same moment: the fast profile's
          drain time both ways.

Figures are medians over --repeat runs. The table goes to stdout; all samples as
JSON to bench/results/runtime-YYYY-MM-DD.json (`-quick` added for --quick runs),
or to --json FILE. See bench/README.md, "Script runtime (second wave)".
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bound  # noqa: E402
import _setup  # noqa: E402
from _cpu import proc_cpu_s  # noqa: E402
from _setup import Backend, BenchError, log  # noqa: E402
from sqlalchemy import Engine, create_engine, func, select  # noqa: E402

from certpilot.domain.model import KeySpec, ProfileParam, make_subject  # noqa: E402
from certpilot.issuers.runner import DEFAULT_CONCURRENCY  # noqa: E402
from certpilot.reconciler.loop import Reconciler  # noqa: E402
from certpilot.services.app import App  # noqa: E402
from certpilot.services.certificates import request_certificate  # noqa: E402
from certpilot.services.profiles import create_profile  # noqa: E402
from certpilot.services.scripts import add_script  # noqa: E402
from certpilot.services.setup import bundled_local_ca_source, local_ca_params  # noqa: E402
from certpilot.store.tables import AttemptRow, CertificateRow, RevisionRow  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SLOW_SCRIPT = "slow-ca"
ZYGOTE_MARK = "certpilot.issuers.zygote"
FAILED_OUTCOMES = ("failed", "timeout", "invalid")
STALL_S = 120.0  # no new revision for this long: the run is broken, not slow
DATABASES = ("sqlite", "postgresql")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 40 EC, 10 RSA, 20 fast, 1 repetition (64 slow certificates still)")
    p.add_argument("--count", type=int, default=None, help="EC P-256 certificates drained per run (default 200, quick 40)")
    p.add_argument("--rsa-count", type=int, default=None, help="RSA 2048 certificates drained per run (default 40, quick 10)")
    p.add_argument("--slow-count", type=int, default=64, help="certificates on the slow CA (default 64)")
    p.add_argument("--slow-delay", type=float, default=0.5, help="seconds the slow CA sleeps per request (default 0.5)")
    p.add_argument("--fast-count", type=int, default=None,
                   help="certificates of the fast profile in the two-profile part (default 100, quick 20)")
    p.add_argument("--bound-count", type=int, default=200, help="EC certificates per bound pass (default 200)")
    p.add_argument("--repeat", type=int, default=None, help="repetitions; medians are reported (default 3, quick 1)")
    p.add_argument("--parts", default="drain,slow,two", help="which parts, comma-separated (default drain,slow,two)")
    p.add_argument("--databases", "--backends", dest="databases", default=",".join(DATABASES),
                   help="databases, comma-separated (default sqlite,postgresql)")
    p.add_argument("--postgres-url", default=os.environ.get("CERTPILOT_BENCH_POSTGRES_URL", _setup.DEFAULT_POSTGRES_SERVER),
                   help="a database URL on the PostgreSQL server (a throwaway database is created there and "
                        f"dropped at the end); default $CERTPILOT_BENCH_POSTGRES_URL or {_setup.DEFAULT_POSTGRES_SERVER}")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write the figures as JSON to FILE instead of bench/results/runtime-YYYY-MM-DD[-quick].json")
    args = p.parse_args(argv)
    args.count = args.count or (40 if args.quick else 200)
    args.rsa_count = args.rsa_count or (10 if args.quick else 40)
    args.fast_count = args.fast_count or (20 if args.quick else 100)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    for db in args.databases:
        if db not in DATABASES:
            p.error(f"unknown database {db!r} (choose from {', '.join(DATABASES)})")
    for part in args.parts:
        if part not in ("drain", "slow", "two"):
            p.error(f"unknown part {part!r} (choose from drain, slow, two)")
    return args


# --- the machine -------------------------------------------------------------------


def environment() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    try:
        tree = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE.parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        # the working tree may differ from the commit: a digest of `git diff HEAD -- src` tells runs apart
        diff = subprocess.run(["git", "diff", "HEAD", "--", "src"], cwd=HERE.parent, capture_output=True,
                              timeout=10).stdout
        src_diff = hashlib.sha256(diff).hexdigest()[:12] if diff else ""
    except (OSError, subprocess.SubprocessError):
        tree, src_diff = "", ""
    versions = {}
    for dist in ("cryptography", "SQLAlchemy", "psycopg"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "date": now.date().isoformat(),
        "started_at": now.isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "python": platform.python_version(),
        "versions": versions,
        "tree": tree,
        "src_diff_sha256": src_diff,
        "loadavg_start": list(os.getloadavg()),
    }


# --- processes and memory ----------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def script_processes() -> list[int]:
    """Every descendant of this process whose command line names the zygote module: the
    zygotes and everything under them (forks keep the zygote's command line)."""
    out: list[int] = []
    todo = _children(os.getpid())
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ZYGOTE_MARK.encode() in cmdline:
            out.append(pid)
        todo += _children(pid)
    return out


def zygote_tree(app: App) -> list[tuple[int, int]]:
    """(pid, depth) of the App's zygote (0), its supervisors (1), their hosts (2) and
    whatever the hosts started (3+)."""
    zygote = app.runner.zygote_pid()
    if zygote is None or zygote not in script_processes():
        return []
    out, todo = [], [(zygote, 0)]
    while todo:
        pid, depth = todo.pop()
        out.append((pid, depth))
        todo += [(child, depth + 1) for child in _children(pid)]
    return out


def smaps_kb(pid: int) -> dict[str, int] | None:
    """Rss, Pss and Private (clean + dirty) in kB from /proc/PID/smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            values[parts[0][:-1]] = int(parts[1])
    if "Pss" not in values:
        return None
    return {"rss": values.get("Rss", 0), "pss": values["Pss"],
            "private": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def memory_sample(app: App) -> dict[str, Any]:
    runner = app.runner
    busy = len(runner._busy)  # reading the set's size without the lock is fine for a benchmark
    kinds: dict[str, dict[str, int]] = {k: {"n": 0, "rss": 0, "pss": 0, "private": 0}
                                        for k in ("zygote", "supervisors", "hosts")}
    tree = zygote_tree(app)
    for pid, depth in tree:
        m = smaps_kb(pid)
        if m is None:
            continue
        kind = ("zygote", "supervisors", "hosts")[min(depth, 2)]
        kinds[kind]["n"] += 1
        for field in ("rss", "pss", "private"):
            kinds[kind][field] += m[field]
    in_flight = min(busy, len(runner._busy))
    total = {f: sum(k[f] for k in kinds.values()) for f in ("rss", "pss", "private")}
    others = len(set(script_processes()) - {pid for pid, _ in tree})  # another App's zygote would be a bench bug
    return {"in_flight": in_flight, "total_kb": total, "other_script_processes": others, **kinds}


# --- one run of the loop -----------------------------------------------------------


@dataclass
class Batch:
    name: str  # profile name, and prefix of the certificate names
    count: int
    key: str = "ec:p256"
    slow: bool = False


class Sampler(threading.Thread):
    """Calls in flight every 5 ms; memory of the script processes every 250 ms if asked."""

    def __init__(self, app: App, loop: Reconciler, memory: bool) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.runner = app.runner
        self.app = app
        self.loop = loop
        self.memory = memory
        self.done = threading.Event()
        self.in_flight: list[tuple[float, int, int]] = []  # (perf_counter, calls in flight, certificates in hand)
        self.mem: list[dict[str, Any]] = []

    def run(self) -> None:
        next_mem = 0.0
        while not self.done.wait(0.005):
            self.in_flight.append((time.perf_counter(), len(self.runner._busy), self.loop.in_hand()))
            if self.memory and time.perf_counter() >= next_mem:
                next_mem = time.perf_counter() + 0.25
                if self.runner._busy:
                    self.mem.append(memory_sample(self.app))

    def stop(self) -> None:
        self.done.set()
        self.join()


def fresh_app(backend: Backend) -> App:
    """A new App on the backend's database: a new runner, zygote and connection pool."""
    settings = backend.app.settings
    backend.app.close()
    backend.app = App(settings)
    return backend.app


def slow_source() -> str:
    source = bundled_local_ca_source()
    head = "def certificate_request(csr, common_name, args_dict):\n"
    if source.count(head) != 1:
        raise BenchError("cannot find certificate_request in the bundled local-CA script")
    return source.replace(head, head + '    import time; time.sleep(float(args_dict.get("delay_s", "0")))\n')


def watcher_engine(url: str) -> Engine:
    """The benchmark's own connection for watching progress. Not certpilot's engine: on SQLite
    every certpilot transaction begins IMMEDIATE (takes the write lock), and the watcher must
    not queue for that lock with the loop it watches. This one reads in autocommit (WAL: never
    waits for a writer)."""
    return create_engine(url, pool_size=1, max_overflow=0)


def _utc(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def progress(engine: Engine, prefix: str) -> tuple[int, dt.datetime | None, dt.datetime | None, int, str | None]:
    """(revisions, first and last issued_at, failed attempts, one failure's error) of
    certificates `prefix-*`."""
    like = f"{prefix}-%"
    with engine.connect() as session:
        n, first, last = session.execute(
            select(func.count(RevisionRow.id), func.min(RevisionRow.issued_at), func.max(RevisionRow.issued_at))
            .join(CertificateRow, CertificateRow.id == RevisionRow.certificate_id)
            .where(CertificateRow.name.like(like))).one()
        failed = session.execute(
            select(func.count(AttemptRow.id), func.max(AttemptRow.error))
            .join(CertificateRow, CertificateRow.id == AttemptRow.certificate_id)
            .where(CertificateRow.name.like(like), AttemptRow.outcome.in_(FAILED_OUTCOMES))).one()
    return n or 0, _utc(first), _utc(last), failed[0] or 0, failed[1]


def tree_cpu_s(app: App) -> tuple[float, float]:
    """CPU seconds of the App's zygote alone, and of everything under it (each process
    with the children it reaped)."""
    zygote, rest = 0.0, 0.0
    for pid, depth in zygote_tree(app):
        if depth == 0:
            zygote = proc_cpu_s(pid, False) or 0.0
            rest += (proc_cpu_s(pid, True) or 0.0) - zygote  # supervisors already reaped
        else:
            rest += proc_cpu_s(pid, True) or 0.0
    return zygote, rest


def db_cpu_s(backend: Backend) -> float | None:
    if backend.server_pids is None:
        return None
    return sum(proc_cpu_s(pid, False) or 0.0 for pid in backend.server_pids())


class LoopErrors(logging.Handler):
    """ERROR records of certpilot's loggers during a run: a certificate that breaks the loop is
    logged and postponed by 60 s, which the benchmark must report, not wait for."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {record.exc_info[1]!r}"
        self.messages.append(message)


def run_loop(backend: Backend, ca: Any, batches: list[Batch], *, memory: bool = False,
             delay_s: float = 0.0) -> dict[str, Any]:
    """Request the batches' certificates, start the loop, wait until all have a revision."""
    app = fresh_app(backend)
    for batch in batches:
        params = local_ca_params(ca)
        if batch.slow:
            params.append(ProfileParam("delay_s", str(delay_s)))
        create_profile(app, batch.name, script=SLOW_SCRIPT if batch.slow else _setup.SCRIPT, params=params,
                       actor=_setup.ACTOR)
    for batch in batches:
        key = KeySpec.parse(batch.key)
        for i in range(batch.count):
            request_certificate(app, f"{batch.name}-{i}", profile=batch.name,
                                subject=make_subject(f"h{i}.{batch.name}.bench.test"), key=key, actor=_setup.ACTOR)

    runner = app.runner
    watcher = watcher_engine(backend.url)
    progress(watcher, batches[0].name)  # connect before the clock starts
    loop = Reconciler(app)
    sampler = Sampler(app, loop, memory)
    loop_error: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            loop_error.append(exc)

    errors = LoopErrors()
    logging.getLogger("certpilot").addHandler(errors)
    thread = threading.Thread(target=run, name="bench-loop", daemon=True)
    done: dict[str, tuple[dt.datetime, dt.datetime]] = {}  # batch -> first and last issued_at
    sampler.start()
    wall0 = time.time()
    perf0 = time.perf_counter()
    cpu0 = time.process_time()
    thread.start()
    try:
        seen, seen_at = 0, time.perf_counter()
        while len(done) < len(batches):
            time.sleep(0.1)
            total = 0
            for batch in batches:
                n, first, last, failed, error = progress(watcher, batch.name)
                total += n
                if failed:
                    raise BenchError(f"{failed} attempt(s) of {batch.name} failed, e.g.: {error}")
                if n >= batch.count and first is not None and last is not None:
                    done[batch.name] = (first, last)
            if loop_error:
                raise BenchError(f"the renewal loop stopped: {loop_error[0]!r}")
            if errors.messages:
                raise BenchError(f"the renewal loop logged {len(errors.messages)} error(s), e.g.: {errors.messages[0]}")
            if total > seen:
                seen, seen_at = total, time.perf_counter()
            elif time.perf_counter() - seen_at > STALL_S:
                raise BenchError(f"no new revision for {STALL_S:.0f} s ({seen} of {sum(b.count for b in batches)})")
        cpu = time.process_time() - cpu0
        zygote_cpu, hosts_cpu = tree_cpu_s(app)
        database_cpu = db_cpu_s(backend)
    finally:
        logging.getLogger("certpilot").removeHandler(errors)
        loop.stop()
        thread.join(timeout=120)
        sampler.stop()
        watcher.dispose()
        app.close()  # its zygote and hosts go now, not when the next run starts
    result: dict[str, Any] = {
        "controller_cpu_s": cpu,
        "zygote_cpu_s": zygote_cpu,
        "hosts_cpu_s": hosts_cpu,
        "database_cpu_s": database_cpu,
        "hosts_started": runner.hosts_started,
        "batches": {},
    }
    end = perf0 + max(last.timestamp() for _, last in done.values()) - wall0
    during = [(n, h) for t, n, h in sampler.in_flight if perf0 <= t <= end]
    result["in_flight_max"] = max((n for n, _ in during), default=0)
    result["in_flight_mean"] = statistics.fmean(n for n, _ in during) if during else 0.0
    result["in_hand_mean"] = statistics.fmean(h for _, h in during) if during else 0.0
    for batch in batches:
        first, last = done[batch.name]
        elapsed = last.timestamp() - wall0
        result["batches"][batch.name] = {"count": batch.count, "drain_s": elapsed,
                                         "certs_per_s": batch.count / elapsed,
                                         "first_revision_s": first.timestamp() - wall0}
    if memory:
        result["memory_samples"] = sampler.mem
    return result


# --- the parts -----------------------------------------------------------------------


def ec_bound(ca: _bound.CA, count: int, tag: str) -> tuple[float, float]:
    wall, cpu = _bound.run(ca, "ec:p256", count, tag)
    return wall, cpu


def rsa_keygen(count: int) -> tuple[float, float]:
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(count):
        _bound.generate_key("rsa:2048")
    return time.perf_counter() - started, time.process_time() - cpu


def part_drain(args: argparse.Namespace, backend: Backend, local_ca: Any, bound_ca: _bound.CA, rep: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.count
    log(f"[{backend.name} r{rep}] drain: {n} EC P-256")
    b1 = ec_bound(bound_ca, args.bound_count, f"b1r{rep}")
    run = run_loop(backend, local_ca, [Batch(f"r{rep}-ec", n)])
    b2 = ec_bound(bound_ca, args.bound_count, f"b2r{rep}")
    bound = 2 * args.bound_count / (b1[0] + b2[0])
    batch = run["batches"][f"r{rep}-ec"]
    out["drain_ec"] = {
        "count": n,
        "certs_per_s": batch["certs_per_s"],
        "drain_s": batch["drain_s"],
        "first_revision_s": batch["first_revision_s"],
        "controller_cpu_ms": 1000 * run["controller_cpu_s"] / n,
        "hosts_cpu_ms": 1000 * run["hosts_cpu_s"] / n,
        "zygote_cpu_s": run["zygote_cpu_s"],
        "database_cpu_ms": None if run["database_cpu_s"] is None else 1000 * run["database_cpu_s"] / n,
        "in_flight_max": run["in_flight_max"],
        "in_flight_mean": run["in_flight_mean"],
        "in_hand_mean": run["in_hand_mean"],
        "hosts_started": run["hosts_started"],
        "bound_1thread_per_s": bound,
        "bound_cpu_ms": 1000 * (b1[1] + b2[1]) / (2 * args.bound_count),
        "bound_2process_per_s": 2 * bound,
        "ratio_to_2process_bound": batch["certs_per_s"] / (2 * bound),
    }
    n = args.rsa_count
    log(f"[{backend.name} r{rep}] drain: {n} RSA 2048")
    k1 = rsa_keygen(n)
    run = run_loop(backend, local_ca, [Batch(f"r{rep}-rsa", n, key="rsa:2048")])
    k2 = rsa_keygen(n)
    keygen = 2 * n / (k1[0] + k2[0])
    batch = run["batches"][f"r{rep}-rsa"]
    out["drain_rsa"] = {
        "count": n,
        "certs_per_s": batch["certs_per_s"],
        "drain_s": batch["drain_s"],
        "first_revision_s": batch["first_revision_s"],
        "controller_cpu_ms": 1000 * run["controller_cpu_s"] / n,
        "hosts_cpu_ms": 1000 * run["hosts_cpu_s"] / n,
        "zygote_cpu_s": run["zygote_cpu_s"],
        "database_cpu_ms": None if run["database_cpu_s"] is None else 1000 * run["database_cpu_s"] / n,
        "in_flight_max": run["in_flight_max"],
        "in_flight_mean": run["in_flight_mean"],
        "in_hand_mean": run["in_hand_mean"],
        "hosts_started": run["hosts_started"],
        "keygen_1thread_per_s": keygen,
        "keygen_cpu_ms": 1000 * (k1[1] + k2[1]) / (2 * n),
        "ratio_to_keygen_bound": batch["certs_per_s"] / keygen,
        "ratio_to_2x_keygen_bound": batch["certs_per_s"] / (2 * keygen),
    }
    return out


def _peak_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the most calls in flight (the largest PSS among those)."""
    if not samples:
        return {}
    top = max(s["in_flight"] for s in samples)
    s = max((s for s in samples if s["in_flight"] == top), key=lambda s: s["total_kb"]["pss"])
    n = max(1, s["in_flight"])
    mb = 1024.0
    return {
        "in_flight": s["in_flight"],
        "samples": len(samples),
        "processes": s["zygote"]["n"] + s["hosts"]["n"] + s["supervisors"]["n"],
        "hosts": s["hosts"]["n"],
        "pss_total_mb": s["total_kb"]["pss"] / mb,
        "rss_total_mb": s["total_kb"]["rss"] / mb,
        "pss_per_call_mb": s["total_kb"]["pss"] / mb / n,
        "rss_per_call_mb": s["total_kb"]["rss"] / mb / n,
        "pss_per_call_without_zygote_mb": (s["hosts"]["pss"] + s["supervisors"]["pss"]) / mb / n,
        "private_per_host_mb": s["hosts"]["private"] / mb / max(1, s["hosts"]["n"]),
        "pss_zygote_mb": s["zygote"]["pss"] / mb,
        "rss_zygote_mb": s["zygote"]["rss"] / mb,
        "pss_per_host_mb": s["hosts"]["pss"] / mb / max(1, s["hosts"]["n"]),
        "rss_per_host_mb": s["hosts"]["rss"] / mb / max(1, s["hosts"]["n"]),
        "pss_per_supervisor_mb": s["supervisors"]["pss"] / mb / max(1, s["supervisors"]["n"]),
    }


def part_slow(args: argparse.Namespace, backend: Backend, local_ca: Any, rep: int) -> dict[str, Any]:
    n = args.slow_count
    log(f"[{backend.name} r{rep}] slow CA: {n} certificates, {args.slow_delay} s per request")
    run = run_loop(backend, local_ca, [Batch(f"r{rep}-slow", n, slow=True)], memory=True, delay_s=args.slow_delay)
    batch = run["batches"][f"r{rep}-slow"]
    return {"slow": {
        "count": n,
        "delay_s": args.slow_delay,
        "certs_per_s": batch["certs_per_s"],
        "drain_s": batch["drain_s"],
        "in_flight_max": run["in_flight_max"],
        "in_flight_mean": run["in_flight_mean"],
        "in_hand_mean": run["in_hand_mean"],
        "hosts_started": run["hosts_started"],
        "controller_cpu_ms": 1000 * run["controller_cpu_s"] / n,
        "memory": _peak_memory(run["memory_samples"]),
        "memory_samples": run["memory_samples"],
    }}


def part_two(args: argparse.Namespace, backend: Backend, local_ca: Any, rep: int) -> dict[str, Any]:
    fast, slow = args.fast_count, args.slow_count
    log(f"[{backend.name} r{rep}] two profiles: {fast} fast alone, then with {slow} slow")
    alone = run_loop(backend, local_ca, [Batch(f"r{rep}-fast-a", fast)])
    both = run_loop(backend, local_ca, [Batch(f"r{rep}-slow2", slow, slow=True), Batch(f"r{rep}-fast-b", fast)],
                    delay_s=args.slow_delay)
    a = alone["batches"][f"r{rep}-fast-a"]
    b = both["batches"][f"r{rep}-fast-b"]
    s = both["batches"][f"r{rep}-slow2"]
    return {"two": {
        "fast_count": fast,
        "slow_count": slow,
        "fast_alone_s": a["drain_s"],
        "fast_with_slow_s": b["drain_s"],
        "fast_slowdown": b["drain_s"] / a["drain_s"],
        "slow_with_fast_s": s["drain_s"],
        "in_flight_max": both["in_flight_max"],
        "both_certs_per_s": (fast + slow) / max(b["drain_s"], s["drain_s"]),
        "fast_alone_certs_per_s": a["certs_per_s"],
        "fast_with_slow_certs_per_s": b["certs_per_s"],
    }}


# --- report ------------------------------------------------------------------------

# (part, field, label, format); a row per figure, a column per database
ROWS: list[tuple[str, str, str, str]] = [
    ("drain_ec", "certs_per_s", "**drain EC P-256: certs/s** (loop start .. last revision)", "{:.1f}"),
    ("drain_ec", "first_revision_s", "  first revision after (s)", "{:.2f}"),
    ("drain_ec", "controller_cpu_ms", "  controller CPU per cert (ms)", "{:.1f}"),
    ("drain_ec", "hosts_cpu_ms", "  script hosts + supervisors CPU per cert (ms)", "{:.1f}"),
    ("drain_ec", "zygote_cpu_s", "  zygote CPU, start and forks (s, whole run)", "{:.2f}"),
    ("drain_ec", "database_cpu_ms", "  PostgreSQL CPU per cert (ms)", "{:.1f}"),
    ("drain_ec", "in_hand_mean", "  certificates in the loop's hands, mean", "{:.1f}"),
    ("drain_ec", "in_flight_mean", "  calls in flight, mean", "{:.1f}"),
    ("drain_ec", "in_flight_max", "  calls in flight, max", "{:.0f}"),
    ("drain_ec", "hosts_started", "  script hosts started", "{:.0f}"),
    ("drain_ec", "bound_1thread_per_s", "  bound: crypto only, 1 thread (certs/s)", "{:.0f}"),
    ("drain_ec", "bound_2process_per_s", "  2-process bound (x2)", "{:.0f}"),
    ("drain_ec", "ratio_to_2process_bound", "  **ratio drain / 2-process bound** (goal >= 0.5)", "{:.4f}"),
    ("drain_rsa", "certs_per_s", "**drain RSA 2048: certs/s**", "{:.1f}"),
    ("drain_rsa", "controller_cpu_ms", "  controller CPU per cert (ms)", "{:.1f}"),
    ("drain_rsa", "hosts_cpu_ms", "  script hosts + supervisors CPU per cert (ms)", "{:.1f}"),
    ("drain_rsa", "database_cpu_ms", "  PostgreSQL CPU per cert (ms)", "{:.1f}"),
    ("drain_rsa", "in_hand_mean", "  certificates in the loop's hands, mean", "{:.1f}"),
    ("drain_rsa", "in_flight_mean", "  calls in flight, mean", "{:.1f}"),
    ("drain_rsa", "keygen_1thread_per_s", "  keygen bound, 1 thread (keys/s)", "{:.1f}"),
    ("drain_rsa", "ratio_to_keygen_bound", "  **ratio drain / keygen bound** (goal >= 0.9)", "{:.2f}"),
    ("drain_rsa", "ratio_to_2x_keygen_bound", "  ratio drain / (2 x keygen bound)", "{:.2f}"),
    ("slow", "in_flight_max", "**slow CA: calls in flight, max** (goal >= 16)", "{:.0f}"),
    ("slow", "in_flight_mean", "  calls in flight, mean over the drain", "{:.1f}"),
    ("slow", "in_hand_mean", "  certificates in the loop's hands, mean", "{:.1f}"),
    ("slow", "certs_per_s", "  certs/s", "{:.1f}"),
    ("slow", "drain_s", "  drain time (s)", "{:.2f}"),
    ("slow", "controller_cpu_ms", "  controller CPU per cert (ms)", "{:.1f}"),
    ("slow", "memory.in_flight", "  memory sample taken at calls in flight", "{:.0f}"),
    ("slow", "memory.pss_per_call_mb", "  **PSS per call in flight (MB)**, zygote included", "{:.1f}"),
    ("slow", "memory.pss_per_call_without_zygote_mb", "  PSS per call in flight (MB), hosts + supervisors", "{:.1f}"),
    ("slow", "memory.rss_per_call_mb", "  RSS per call in flight (MB; shared pages counted again)", "{:.1f}"),
    ("slow", "memory.pss_total_mb", "  PSS, zygote + supervisors + hosts (MB)", "{:.0f}"),
    ("slow", "memory.rss_total_mb", "  RSS, zygote + supervisors + hosts (MB)", "{:.0f}"),
    ("slow", "memory.pss_zygote_mb", "  zygote PSS / RSS (MB)", "{:.1f}|memory.rss_zygote_mb"),
    ("slow", "memory.pss_per_host_mb", "  one host PSS / RSS (MB)", "{:.1f}|memory.rss_per_host_mb"),
    ("slow", "memory.private_per_host_mb", "  one host private (MB)", "{:.1f}"),
    ("slow", "memory.pss_per_supervisor_mb", "  one supervisor PSS (MB)", "{:.2f}"),
    ("two", "fast_alone_s", "**two profiles: fast profile's drain alone (s)**", "{:.2f}"),
    ("two", "fast_with_slow_s", "  the same with the slow profile due too (s)", "{:.2f}"),
    ("two", "fast_slowdown", "  ratio with / alone", "{:.2f}"),
    ("two", "fast_alone_certs_per_s", "  fast profile alone: certs/s", "{:.1f}"),
    ("two", "both_certs_per_s", "  both profiles together: certs/s (fast + slow, to the last)", "{:.1f}"),
    ("two", "slow_with_fast_s", "  slow profile's drain, next to the fast one (s)", "{:.2f}"),
    ("two", "in_flight_max", "  calls in flight, max (both profiles)", "{:.0f}"),
]


def _get(run: dict[str, Any], part: str, field: str) -> float | None:
    value: Any = run.get(part)
    for step in field.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value if isinstance(value, (int, float)) else None


def summarise(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per database, per `part.field`: median, min, max over the repetitions."""
    fields = {(part, f) for part, field, _, fmt in ROWS for f in [field, *fmt.split("|")[1:]]}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for db, runs in raw.items():
        out[db] = {}
        for part, field in sorted(fields):
            values = [v for run in runs if (v := _get(run, part, field)) is not None]
            if values:
                out[db][f"{part}.{field}"] = {"median": statistics.median(values), "min": min(values),
                                              "max": max(values), "n": len(values)}
    return out


def format_report(result: dict[str, Any]) -> str:
    env = result["environment"]
    summary = result["summary"]
    cfg = result["config"]
    dbs = list(summary)
    lines = [
        f"Script runtime benchmark, {env['started_at']}, tree {env['tree']}",
        f"machine: {env['nproc']} CPUs ({env['cpu_model']}), {env['mem_gb']} GB, kernel {env['kernel']}, "
        f"Python {env['python']}; load average {_load(env['loadavg_start'])} at start, "
        f"{_load(env.get('loadavg_end'))} at end",
        f"sandbox: {result.get('sandbox', '')}",
        f"median of {cfg['repeat']} (min..max); EC {cfg['count']}, RSA {cfg['rsa_count']}, slow CA "
        f"{cfg['slow_count']} x {cfg['slow_delay']} s, fast profile {cfg['fast_count']}",
        "",
        "| | " + " | ".join(result["backends"].get(db, db).split(" at ")[0].split(",")[0] for db in dbs) + " |",
        "|---|" + "---:|" * len(dbs),
    ]
    for part, field, label, fmt in ROWS:
        main_fmt, *extra = fmt.split("|")
        cells = []
        for db in dbs:
            s = summary[db].get(f"{part}.{field}")
            if s is None:
                cells.append("")
                continue
            cell = main_fmt.format(s["median"])
            for other in extra:
                o = summary[db].get(f"{part}.{other}")
                if o is not None:
                    cell += " / " + main_fmt.format(o["median"])
            if s["n"] > 1 and s["min"] != s["max"] and not extra:
                cell += f" ({main_fmt.format(s['min'])}..{main_fmt.format(s['max'])})"
            cells.append(cell)
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for reason in result.get("skipped", []):
        lines.append(f"\nskipped: {reason}")
    return "\n".join(lines)


def _load(values: Any) -> str:
    return "?" if not values else "/".join(f"{v:.2f}" for v in values)


# --- main --------------------------------------------------------------------------


def output_path(args: argparse.Namespace, date: str) -> Path:
    if args.json:
        return Path(args.json)
    return RESULTS / f"runtime-{date}{'-quick' if args.quick else ''}.json"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    root = Path(tempfile.mkdtemp(prefix="certpilot-bench-runtime-"))
    backends: list[Backend] = []
    skipped: list[str] = []
    raw: dict[str, list[dict[str, Any]]] = {}
    result: dict[str, Any] = {
        "environment": env, "skipped": skipped,
        "config": {k: getattr(args, k) for k in ("quick", "count", "rsa_count", "slow_count", "slow_delay",
                                                  "fast_count", "bound_count", "repeat", "parts", "databases")},
    }
    overridden = sorted(k for k in os.environ if k.startswith("CERTPILOT_") and k != "CERTPILOT_BENCH_POSTGRES_URL")
    if overridden:
        log(f"note: {', '.join(overridden)} set in the environment: certpilot's settings are not all defaults")
    result["certpilot_environment"] = overridden
    started = time.perf_counter()
    try:
        local_ca = _setup.make_ca(root / "ca")
        bound_ca = _bound.CA.load(str(local_ca.cert_path), str(local_ca.key_path), local_ca.password)
        if "sqlite" in args.databases:
            backends.append(_setup.sqlite_backend(root, local_ca))
        if "postgresql" in args.databases:
            pg = _setup.postgres_backend(root, local_ca, args.postgres_url)
            if isinstance(pg, str):
                log(f"skipping PostgreSQL: {pg}")
                skipped.append(pg)
            else:
                backends.append(pg)
        result["backends"] = {b.name: b.describe for b in backends}
        for backend in backends:
            add_script(backend.app, SLOW_SCRIPT, slow_source(), actor=_setup.ACTOR)
            settings = backend.app.settings
            result["settings"] = {"max_in_flight": settings.max_in_flight, "profile_concurrency": DEFAULT_CONCURRENCY,
                                  "reconcile_interval_s": settings.reconcile_interval_s}
            result["sandbox"] = backend.app.runner.describe()
            result["sandbox_limitations"] = backend.app.runner.limitations()
            raw[backend.name] = []
        for rep in range(args.repeat):
            for backend in backends:
                run: dict[str, Any] = {}
                if "drain" in args.parts:
                    run.update(part_drain(args, backend, local_ca, bound_ca, rep))
                if "slow" in args.parts:
                    run.update(part_slow(args, backend, local_ca, rep))
                if "two" in args.parts:
                    run.update(part_two(args, backend, local_ca, rep))
                run["loadavg"] = list(os.getloadavg())
                raw[backend.name].append(run)
    finally:
        # a second Ctrl-C must not leave a database, a directory or script processes behind
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for backend in backends:
                backend.close()
            shutil.rmtree(root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    env["loadavg_end"] = list(os.getloadavg())
    result["duration_s"] = time.perf_counter() - started
    result["summary"] = summarise(raw)
    result["raw"] = raw

    print(format_report(result))
    path = output_path(args, env["date"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"figures written to {path} ({result['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
