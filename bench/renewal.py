#!/usr/bin/env python3
"""Renewal benchmark: certificates renewed per second by `certpilot worker` processes, and
the cost of finding due work among 1,000,000 certificates.

    .venv/bin/python bench/renewal.py                 # full run (3.4 min on 2 quiet cores, ~14 at load 9)
    .venv/bin/python bench/renewal.py --quick         # smoke run, about a minute
    .venv/bin/python bench/renewal.py --parts scan    # only the 1,000,000-row part

Part `throughput`: per database, N EC P-256 certificates are issued through the
services, then all are made due at once (one UPDATE: `next_action_at` = now,
`renewal_requested`), and 1 or 2 `certpilot worker` processes are started
(CERTPILOT_MAX_IN_FLIGHT=2, CERTPILOT_RECONCILE_INTERVAL_S=1). The run ends when every
certificate has its next revision (revision 2 in the first run, 3 in the
second, ...). Reported: certs/s from the first to the last new revision
(`issued_at` in the database), certs/s from process start, the time to the
first renewal, CPU per certificate, and the ratio to the in-process crypto
bound (`_bound.py`) measured before and after each repetition.

Part `scan`: per database and size (1,000 and 1,000,000 certificates, bulk-loaded
with `_bulk.py`, ~100 due now, the rest spread over a year), the time of
`claim_due` (limit 4; leases released after each sweep) and of
`earliest_next_action`, each in its own transaction as the loop runs them, with
the query plans of the statements they send.

Part `memory`: the same databases; a fresh process runs the loop's sweeps
(`Reconciler.run_once` + `earliest_next_action`), idle and with a batch of 4,
and reports its VmRSS (`_loop_memory.py`). See bench/README.md, section Renewal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bound  # noqa: E402
import _bulk  # noqa: E402
import _proc  # noqa: E402
import _setup  # noqa: E402
from _setup import Backend, BenchError, log  # noqa: E402
from issue import environment  # noqa: E402

from sqlalchemy import event, func, select, update  # noqa: E402

from certpilot.domain.model import KeySpec  # noqa: E402
from certpilot.store import schedule  # noqa: E402
from certpilot.store.tables import AttemptRow, CertificateRow, CertificateStatusRow, RevisionRow  # noqa: E402

EC = KeySpec.parse("ec:p256")
PARTS = ("throughput", "scan", "memory")
INDEX = "ix_certificate_status_next_action_at"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200, help="certificates renewed per run (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of the throughput runs (default 3)")
    p.add_argument("--procs", default="1,2", help="numbers of worker processes to run (default 1,2)")
    p.add_argument("--rows", type=int, default=1_000_000, help="certificates in the large database (default 1000000)")
    p.add_argument("--small-rows", type=int, default=1_000, help="certificates in the small database (default 1000)")
    p.add_argument("--due", type=int, default=100, help="bulk-loaded certificates due now (default 100)")
    p.add_argument("--sweeps", type=int, default=50, help="timed claim_due sweeps per database (default 50)")
    p.add_argument("--memory-sweeps", type=int, default=20,
                   help="sweeps of each kind (idle, batch) in each loop-memory process (default 20)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"which parts (default {','.join(PARTS)})")
    p.add_argument("--backends", default="sqlite,postgresql", help="databases (default sqlite,postgresql)")
    p.add_argument("--postgres-url", default=os.environ.get("CERTPILOT_BENCH_POSTGRES_URL", _setup.DEFAULT_POSTGRES_SERVER),
                   help="a database URL on the PostgreSQL server (a throwaway database is created there)")
    p.add_argument("--quick", action="store_true", help="smoke run: 20 certificates, 1 repetition, 20,000 rows, 10 sweeps")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all figures as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.repeat, args.rows, args.sweeps, args.memory_sweeps = 20, 1, 20_000, 10, 5
    args.procs = [int(x) for x in args.procs.split(",") if x.strip()]
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    for part in args.parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}: use {', '.join(PARTS)}")
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            p.error(f"unknown backend {b!r}")
    if min(args.count, args.repeat, args.sweeps, args.small_rows, *args.procs) < 1 or args.rows < args.small_rows:
        p.error("counts must be at least 1, and --rows at least --small-rows")
    return args


def open_backend(kind: str, root: Path, ca, args) -> Backend | None:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return _setup.sqlite_backend(root, ca)
    pg = _setup.postgres_backend(root, ca, args.postgres_url)
    if isinstance(pg, str):
        log(f"skipping PostgreSQL: {pg}")
        args.skipped.append(pg)
        return None
    return pg


# --- part 1: renewal throughput ------------------------------------------------------


def issue_all(backend: Backend, prefix: str, count: int) -> float:
    todo = _setup.names(prefix, count)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=_setup.WORKERS) as pool:
        list(pool.map(lambda item: _setup.issue_one(backend.app, item[0], item[1], EC), todo))
    return time.perf_counter() - started


def renewal_run(backend: Backend, root: Path, prefix: str, count: int, procs: int, target: int,
                timeout_s: float) -> dict[str, Any]:
    """Make the `prefix` certificates due, start `procs` workers, wait for revision `target` of each."""
    engine = _bulk.plain_engine(backend.url)
    ours = select(CertificateRow.id).where(CertificateRow.name.like(f"{prefix}-%")).scalar_subquery()
    done_q = (select(func.count(RevisionRow.id)).where(RevisionRow.certificate_id.in_(ours))
              .where(RevisionRow.number == target))
    data_dir = backend.app.settings.data_dir
    env = _proc.certpilot_env(data_dir, backend.url, max_in_flight=_setup.WORKERS, reconcile_interval_s=1)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    workers: list[subprocess.Popen] = []
    polls: list[tuple[float, int, float]] = []
    try:
        with engine.begin() as conn:
            made_due = conn.execute(
                update(CertificateStatusRow).where(CertificateStatusRow.certificate_id.in_(ours))
                .values(next_action_at=dt.datetime.now(dt.timezone.utc), renewal_requested=True)
            ).rowcount
        if made_due != count:
            raise BenchError(f"{made_due} certificates made due, {count} expected")
        pg_cpu = _proc.ChangingPidsCpu(backend.server_pids or (lambda: []))
        pg_cpu.sample()
        t_spawn = time.perf_counter()
        spawn_wall = dt.datetime.now(dt.timezone.utc)
        for k in range(procs):
            workers.append(_proc.start(["worker"], env, logs / f"{backend.name}-r{target}-p{procs}-{k}.log", root))
        deadline = t_spawn + timeout_s
        while True:
            with engine.connect() as conn:
                n = conn.scalar(done_q) or 0
            cpu = sum(_proc.tree_cpu_s(w.pid) for w in workers) + pg_cpu.sample()
            now = time.perf_counter()
            polls.append((now - t_spawn, n, cpu))
            if n >= count:
                break
            dead = [w for w in workers if w.poll() is not None]
            if dead:
                raise BenchError(f"a worker exited with {dead[0].returncode}:\n"
                                 + _proc.tail(logs / f"{backend.name}-r{target}-p{procs}-{workers.index(dead[0])}.log"))
            if now > deadline:
                raise BenchError(f"{backend.name}, {procs} worker(s): only {n} of {count} renewed after {timeout_s:.0f} s")
            time.sleep(0.1)
    finally:
        codes = [_proc.stop(w) for w in workers]
    with engine.connect() as conn:
        first, last = conn.execute(
            select(func.min(RevisionRow.issued_at), func.max(RevisionRow.issued_at))
            .where(RevisionRow.certificate_id.in_(ours)).where(RevisionRow.number == target)
        ).one()
        extra = conn.scalar(select(func.count(RevisionRow.id)).where(RevisionRow.certificate_id.in_(ours))
                            .where(RevisionRow.number > target)) or 0
        failed = conn.scalar(select(func.count(AttemptRow.id)).where(AttemptRow.certificate_id.in_(ours))
                             .where(AttemptRow.started_at >= spawn_wall).where(AttemptRow.outcome != "issued")) or 0
    engine.dispose()
    if extra:
        raise BenchError(f"{extra} certificates were renewed more than once")
    first_poll = next(p for p in polls if p[1] > 0)
    t_end, _, cpu_end = polls[-1]
    steady_s = (_as_utc(last) - _as_utc(first)).total_seconds()
    renewed_after_first = count - first_poll[1]
    return {
        "steady_rate": (count - 1) / steady_s if steady_s > 0 else None,
        "e2e_rate": count / t_end,
        "e2e_s": t_end,
        "first_renewal_s": first_poll[0],
        "cpu_ms": 1000 * (cpu_end - first_poll[2]) / renewed_after_first if renewed_after_first else None,
        "cpu_ms_with_startup": 1000 * cpu_end / count,
        "cores_busy": (cpu_end - first_poll[2]) / (t_end - first_poll[0]) if t_end > first_poll[0] else None,
        "failed_attempts": failed,
        "exit_codes": codes,
    }


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def part_throughput(args, root: Path, local_ca, ca: _bound.CA) -> dict[str, Any]:
    backends: list[Backend] = []
    out: dict[str, Any] = {"bound": [], "runs": {}, "issue_s": {}}
    try:
        for kind in args.backends:
            b = open_backend(kind, root / f"tp-{kind}", local_ca, args)
            if b is None:
                continue
            backends.append(b)
            log(f"[throughput] {b.name}: issuing {args.count} certificates through the services")
            out["issue_s"][b.name] = issue_all(b, "ren", args.count)
        target = {b.name: 1 for b in backends}
        timeout = max(120.0, args.count * 1.0)
        for rep in range(args.repeat):
            args.loadavg.append(os.getloadavg()[0])
            before = _bound.run(ca, "ec:p256", args.count, f"tp-r{rep}-a")
            order = args.procs if rep % 2 == 0 else list(reversed(args.procs))
            runs = []
            for b in backends:
                for procs in order:
                    target[b.name] += 1
                    log(f"[throughput rep {rep + 1}/{args.repeat}] {b.name}: {procs} worker process(es), "
                        f"{args.count} certificates to revision {target[b.name]}")
                    r = renewal_run(b, root, "ren", args.count, procs, target[b.name], timeout)
                    log(f"    {r['steady_rate']:.1f} certs/s first..last, {r['e2e_rate']:.1f} from start, "
                        f"first after {r['first_renewal_s']:.1f} s, {r['cpu_ms']:.0f} ms CPU/cert")
                    runs.append((b.name, procs, r))
            after = _bound.run(ca, "ec:p256", args.count, f"tp-r{rep}-b")
            bound_rate = 2 * args.count / (before[0] + after[0])
            out["bound"].append({"rate": bound_rate, "cpu_ms": 1000 * (before[1] + after[1]) / (2 * args.count)})
            for name, procs, r in runs:
                r["ratio"] = r["steady_rate"] / bound_rate if r["steady_rate"] else None
                r["e2e_ratio"] = r["e2e_rate"] / bound_rate
                out["runs"].setdefault(f"{name}/{procs}", []).append(r)
            args.loadavg.append(os.getloadavg()[0])
    finally:
        for b in backends:
            b.close()
    return out


# --- part 2 and 3: finding due work among many ----------------------------------------


class Capture:
    """The statements a block of code sends through `engine` (to EXPLAIN them)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def _on(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append((statement, parameters))

    def __enter__(self) -> Capture:
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


class StatementTimer:
    """Wall time of each DB-API execute through `engine`, by statement (as the driver ran it:
    on SQLite that is the database's own work, on PostgreSQL a round trip)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.times: dict[str, list[float]] = {}

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.times.setdefault(" ".join(statement.split()), []).append(time.perf_counter() - conn.info["bench_t0"])

    def start(self) -> None:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)

    def stop(self) -> None:
        if event.contains(self.engine, "after_cursor_execute", self._after):
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)

    def medians(self) -> dict[str, float]:
        return {sql: 1000 * statistics.median(v) for sql, v in self.times.items()}


def sweep_once(app, owner: str, limit: int) -> dict[str, float]:
    """One claim_due transaction (then the leases are released, untimed) and one
    earliest_next_action transaction. Wall and CPU (this process) milliseconds."""
    now = app.clock.now()
    c0, t0 = time.process_time(), time.perf_counter()
    with app.db.transaction() as session:
        t1 = time.perf_counter()
        names = schedule.claim_due(session, owner=owner, now=now, lease_until=now + dt.timedelta(seconds=300), limit=limit)
        t2 = time.perf_counter()
    c3, t3 = time.process_time(), time.perf_counter()
    if len(names) != limit:
        raise BenchError(f"claim_due leased {len(names)}, {limit} expected")
    with app.db.transaction() as session:
        for name in names:
            schedule.release(session, name, owner)
    c4, t4 = time.process_time(), time.perf_counter()
    with app.db.transaction() as session:
        t5 = time.perf_counter()
        schedule.earliest_next_action(session, app.clock.now())
        t6 = time.perf_counter()
    c7, t7 = time.process_time(), time.perf_counter()
    return {"claim_tx_ms": 1000 * (t3 - t0), "claim_query_ms": 1000 * (t2 - t1), "claim_cpu_ms": 1000 * (c3 - c0),
            "earliest_tx_ms": 1000 * (t7 - t4), "earliest_query_ms": 1000 * (t6 - t5),
            "earliest_cpu_ms": 1000 * (c7 - c4)}


def explain(backend: Backend, owner: str, limit: int) -> list[dict[str, Any]]:
    """The plans of the statements `claim_due` and `earliest_next_action` send, run for real
    (PostgreSQL: EXPLAIN (ANALYZE, BUFFERS)) in a transaction that is rolled back."""
    app = backend.app
    engine = app.db.engine
    with Capture(engine) as cap:
        now = app.clock.now()
        with app.db.transaction() as session:
            schedule.claim_due(session, owner=owner, now=now, lease_until=now + dt.timedelta(seconds=300), limit=limit)
            session.rollback()
        n_claim = len(cap.statements)
        with app.db.transaction() as session:
            schedule.earliest_next_action(session, app.clock.now())
    pg = backend.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "
    plans = []
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            for i, (statement, params) in enumerate(cap.statements):
                verb = statement.lstrip().split(None, 1)[0].upper()
                if verb not in ("SELECT", "UPDATE") or "certificate" not in statement:
                    continue
                rows = conn.exec_driver_sql(prefix + statement, params).fetchall()
                lines = [r[0] for r in rows] if pg else [f"{'  ' * _depth(r, rows)}{r[-1]}" for r in rows]
                plans.append({
                    "function": "claim_due" if i < n_claim else "earliest_next_action",
                    "sql": " ".join(statement.split()),
                    "plan": lines,
                    "uses_index": any(INDEX in line for line in lines),
                    "full_scan": any(_full_scan(line) for line in lines),
                })
        finally:
            tx.rollback()
    return plans


def _full_scan(line: str) -> bool:
    """PostgreSQL: a Seq Scan; SQLite: SCAN, or a SEARCH with no index or key to search by."""
    line = line.strip()
    if "Seq Scan on certificate_status" in line or line.startswith("SCAN certificate_status"):
        return True
    return line.startswith("SEARCH certificate_status") and "USING" not in line


def _depth(row, rows) -> int:
    parents = {r[0]: r[1] for r in rows}
    depth, parent = 0, row[1]
    while parent in parents:
        depth, parent = depth + 1, parents[parent]
    return depth


def settle(backend: Backend) -> None:
    """After a bulk load: write the dirty pages out now, so that no checkpoint or
    write-back of the load runs during the timed sweeps."""
    if backend.name == "postgresql":
        engine = _bulk.plain_engine(backend.url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("CHECKPOINT")
        finally:
            engine.dispose()
    os.sync()


def memory_child(b: Backend, real: list[str], sweeps: int) -> dict[str, Any]:
    cfg = {"url": b.url, "data_dir": str(b.app.settings.data_dir), "sweeps": sweeps, "due": real}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("_loop_memory.py")), json.dumps(cfg)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"loop memory child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def part_scan(args, root: Path, local_ca, do_scan: bool, do_memory: bool) -> dict[str, Any]:
    """Per database kind: a small and a large database side by side, measured alternately
    (small, large, small, large, ...) so that changes in the machine's load hit both alike."""
    out: dict[str, Any] = {}
    owner = "bench-sweeper"
    real = [name for name, _ in _setup.names("real", 4)]
    for kind in args.backends:
        opened: dict[int, Backend] = {}
        try:
            for size in (args.small_rows, args.rows):
                b = open_backend(kind, root / f"scan-{kind}-{size}", local_ca, args)
                if b is None:
                    break
                opened[size] = b
                for name, host in _setup.names("real", 4):  # issued for real: the loop's small batches
                    _setup.issue_one(b.app, name, host, EC)
                log(f"[scan] {kind}/{size}: bulk-loading {size - 4:,} certificates ({args.due} due now)")
                bare = size - 4
                schedule = _bulk.spread_schedule(bare, time.time(), min(args.due, bare))
                out[f"{kind}/{size}"] = {"load": _bulk.load(b, "scan", bare, next_action_at=schedule),
                                         "size": _bulk.table_sizes(b)}
                log(f"    loaded in {out[f'{kind}/{size}']['load']['load_s']:.1f} s "
                    f"({out[f'{kind}/{size}']['size']['database']})")
            if len(opened) < 2:
                continue
            for b in opened.values():
                settle(b)
            args.loadavg.append(os.getloadavg()[0])
            if do_scan:
                samples: dict[int, list[dict[str, float]]] = {size: [] for size in opened}
                timers = {size: StatementTimer(b.app.db.engine) for size, b in opened.items()}
                for i in range(3 + args.sweeps):
                    order = list(opened.items())
                    if i % 2:
                        order.reverse()  # small first, then large first: neither always follows the other
                    for size, b in order:
                        if i == 3:
                            timers[size].start()
                        sample = sweep_once(b.app, owner, 4)
                        if i >= 3:  # 3 warm-up sweeps each
                            samples[size].append(sample)
                for size, b in opened.items():
                    timers[size].stop()
                    r = out[f"{kind}/{size}"]
                    r["sweeps"] = {k: _stats([s[k] for s in samples[size]]) for k in samples[size][0]}
                    r["statement_ms"] = timers[size].medians()
                    r["explain"] = explain(b, owner, 4)
                    for plan in r["explain"]:
                        plan["execute_ms"] = r["statement_ms"].get(plan["sql"])
                    s = r["sweeps"]
                    log(f"    {kind}/{size}: claim_due {s['claim_tx_ms']['median']:.2f} ms per transaction "
                        f"({s['claim_cpu_ms']['median']:.2f} ms CPU here), earliest_next_action "
                        f"{s['earliest_tx_ms']['median']:.2f} ms")
                args.loadavg.append(os.getloadavg()[0])
            if do_memory:
                for b in opened.values():
                    engine = _bulk.plain_engine(b.url)
                    with engine.begin() as conn:  # nothing but the real four may be due in the loop's sweeps
                        now = dt.datetime.now(dt.timezone.utc)
                        conn.execute(update(CertificateStatusRow)
                                     .where(CertificateStatusRow.next_action_at <= now + dt.timedelta(hours=1))
                                     .values(next_action_at=now + dt.timedelta(days=400)))
                    engine.dispose()
                for round_ in range(2):
                    for size, b in opened.items():
                        m = memory_child(b, real, args.memory_sweeps)
                        out[f"{kind}/{size}"].setdefault("memory", []).append(m)
                        log(f"    {kind}/{size} loop process: VmRSS {m['rss_kb']['after_batch'] / 1024:.1f} MB after "
                            f"the sweeps, peak {m['rss_kb']['peak'] / 1024:.1f} MB; run_once "
                            f"{m['phases']['idle']['run_once_ms']:.1f} ms idle, "
                            f"{m['phases']['batch']['run_once_ms']:.1f} ms with 4; earliest "
                            f"{m['phases']['idle']['earliest_ms']:.1f} ms")
                args.loadavg.append(os.getloadavg()[0])
        finally:
            for b in opened.values():
                b.close()
    return out


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0],
            "p90": values[min(len(values) - 1, int(0.9 * len(values)))], "max": values[-1]}


# --- report -------------------------------------------------------------------------


def _med(items: list[dict], key: str) -> float | None:
    values = [i[key] for i in items if i.get(key) is not None]
    return statistics.median(values) if values else None


def format_report(result: dict[str, Any], args) -> str:
    env = result["environment"]
    lines = [
        f"certpilot renewal benchmark, {env['date_utc']}, tree {env['git']}",
        f"machine: {env['nproc']} CPUs, {env['cpu_model']}; Python {env['python']}; load average (1 min) "
        f"{min(args.loadavg):.2f}..{max(args.loadavg):.2f} during the run; took {result['elapsed_s'] / 60:.1f} min",
    ]
    tp = result.get("throughput")
    if tp:
        b = tp["bound"]
        bound = _med(b, "rate")
        lines += ["", f"renewal throughput: {args.count} EC P-256 certificates made due at once, `certpilot worker` "
                      f"processes with CERTPILOT_MAX_IN_FLIGHT={_setup.WORKERS}, interval 1 s; medians of {args.repeat}",
                  f"  bound (crypto only, 1 thread, this process): {bound:.0f} certs/s "
                  f"({min(x['rate'] for x in b):.0f}..{max(x['rate'] for x in b):.0f}), {_med(b, 'cpu_ms'):.2f} ms CPU/cert",
                  f"  {'database/procs':16} {'certs/s':>8} {'(min..max)':>13} {'vs bound':>9} {'from start':>10} "
                  f"{'1st after s':>11} {'CPU ms/cert':>11} {'cores':>6} {'failed':>6}"]
        for label, runs in tp["runs"].items():
            rates = [r["steady_rate"] for r in runs if r["steady_rate"]]
            lines.append(f"  {label:16} {_med(runs, 'steady_rate'):8.1f} {f'({min(rates):.1f}..{max(rates):.1f})':>13} "
                         f"{_med(runs, 'ratio'):9.4f} {_med(runs, 'e2e_rate'):10.1f} {_med(runs, 'first_renewal_s'):11.2f} "
                         f"{_med(runs, 'cpu_ms'):11.1f} {_med(runs, 'cores_busy'):6.2f} "
                         f"{sum(r['failed_attempts'] for r in runs):6d}")
        lines.append("  certs/s: (N-1) / (last - first new revision's issued_at); from start: N / (process start .. all done);")
        lines.append("  CPU: workers + their script workers and children + PostgreSQL backends, from the first renewal to the last")
        lines.append("  issuing them first through the services took: "
                     + ", ".join(f"{k} {v:.1f} s" for k, v in tp["issue_s"].items()))
    scan = result.get("scan")
    if scan and any(r.get("sweeps") for r in scan.values()):
        lines += ["", "finding due work: ms per transaction as the loop runs them (median of the sweeps, p90 in brackets),",
                  "and CPU ms in this process (client side: SQLAlchemy, driver; SQLite's own work is here too)"]
        lines.append(f"  {'database/rows':20} {'claim_due':>15} {'CPU':>6} {'earliest_next_action':>21} {'CPU':>7} {'load s':>7} {'size':>8}")
        for label, r in scan.items():
            s = r.get("sweeps")
            if s:
                lines.append(f"  {label:20} {s['claim_tx_ms']['median']:7.2f} ({s['claim_tx_ms']['p90']:5.1f}) "
                             f"{s['claim_cpu_ms']['median']:6.2f} {s['earliest_tx_ms']['median']:12.2f} ({s['earliest_tx_ms']['p90']:6.1f}) "
                             f"{s['earliest_cpu_ms']['median']:7.2f} {r['load']['load_s']:7.1f} {r['size']['database']:>8}")
    if scan and any(r.get("memory") for r in scan.values()):
        lines += ["", "the loop's memory: a fresh process runs Reconciler.run_once() + earliest_next_action sweeps "
                      f"({args.memory_sweeps} idle, then {args.memory_sweeps} with 4 due); two processes per database, alternating",
                  f"  {'database/rows':20} {'VmRSS MB: start':>15} {'after idle':>11} {'after batch':>12} {'peak':>7} "
                  f"{'run_once ms idle':>16} {'(CPU)':>6} {'with 4':>7} {'(CPU)':>6} {'earliest ms':>11} {'(CPU)':>6}"]
        for label, r in scan.items():
            for m in r.get("memory", []):
                rk, ph = m["rss_kb"], m["phases"]
                lines.append(f"  {label:20} {rk['after_start'] / 1024:15.1f} {rk['after_idle'] / 1024:11.1f} "
                             f"{rk['after_batch'] / 1024:12.1f} {rk['peak'] / 1024:7.1f} {ph['idle']['run_once_ms']:16.2f} "
                             f"{ph['idle']['run_once_cpu_ms']:6.1f} {ph['batch']['run_once_ms']:7.2f} "
                             f"{ph['batch']['run_once_cpu_ms']:6.1f} {ph['idle']['earliest_ms']:11.2f} "
                             f"{ph['idle']['earliest_cpu_ms']:6.1f}")
    if scan:
        for label, r in scan.items():
            for plan in r.get("explain", []):
                took = f"; execute {plan['execute_ms']:.3f} ms (median in the sweeps)" if plan.get("execute_ms") else ""
                lines.append(f"\n  plan, {label}, {plan['function']}: index {INDEX}: "
                             f"{'used' if plan['uses_index'] else 'not used'}"
                             f"{'; FULL SCAN of certificate_status' if plan['full_scan'] else ''}{took}")
                lines.append(f"    {plan['sql'][:400]}")
                lines += [f"    | {line}" for line in plan["plan"]]
    for message in args.skipped:
        lines.append(f"\nskipped: {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.skipped, args.loadavg = [], [os.getloadavg()[0]]
    env = environment()
    root = Path(tempfile.mkdtemp(prefix="certpilot-renewal-"))
    result: dict[str, Any] = {"environment": env, "config": {k: getattr(args, k) for k in (
        "count", "repeat", "procs", "rows", "small_rows", "due", "sweeps", "memory_sweeps", "parts", "backends", "quick")}}
    started = time.perf_counter()
    try:
        local_ca = _setup.make_ca(root / "ca")
        ca = _bound.CA.load(str(local_ca.cert_path), str(local_ca.key_path), local_ca.password)
        if "throughput" in args.parts:
            result["throughput"] = part_throughput(args, root, local_ca, ca)
        if "scan" in args.parts or "memory" in args.parts:
            result["scan"] = part_scan(args, root, local_ca, "scan" in args.parts, "memory" in args.parts)
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            shutil.rmtree(root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    result["elapsed_s"] = time.perf_counter() - started
    args.loadavg.append(os.getloadavg()[0])
    env["loadavg_samples"] = args.loadavg
    report = format_report(result, args)
    print(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
