#!/usr/bin/env python3
"""API benchmark: latency and requests/s of `certpilot serve` over 100,000 certificates.

    .venv/bin/python bench/api.py              # full run (about 5 min on 2 cores)
    .venv/bin/python bench/api.py --quick      # smoke run, about 1.5 min
    .venv/bin/python bench/api.py --no-wrk     # only the Python load generator

Per database (SQLite, PostgreSQL): 4 certificates are issued through the
services, and 100,000 issued certificates (key + revision copied from those,
`_bulk.py`) are bulk-loaded, none due (next_action_at 30-60 days ahead). A
viewer user and an API token are made with `services.users`. Then `certpilot
serve` runs as a subprocess on 127.0.0.1 (default settings) and another
process (`_load.py`, async httpx, closed loop) sends, at 8 and at 16 concurrent
requests, up to 2,000 requests per scenario within 15 s:

    healthz        GET /healthz                          (no database, no auth: the floor)
    list first     GET /api/v1/certificates?limit=100
    list middle    GET /api/v1/certificates?limit=100&cursor=<the 50,000th name>
    get random     GET /api/v1/certificates/<a random one of the 100,000>

Reported: p50/p90/p99 latency, requests/s, the ratios to /healthz, and the CPU
the server process (and PostgreSQL) spent per request. With `wrk` installed
the same scenarios are also run with wrk (C client, 2 threads) for a few
seconds. An in-process pass times the same service calls without HTTP. See
bench/README.md, section API.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bulk  # noqa: E402
import _proc  # noqa: E402
import _setup  # noqa: E402
from _setup import Backend, BenchError, log  # noqa: E402
from issue import environment  # noqa: E402
from renewal import EC, Capture, open_backend  # noqa: E402

import httpx  # noqa: E402

from certpilot.domain.model import Role  # noqa: E402
from certpilot.services import certificates as service  # noqa: E402
from certpilot.services.users import add_user, authenticate_token, create_token  # noqa: E402
from certpilot.services.views import certificate_view  # noqa: E402

PREFIX = "api"
SCENARIOS = ("healthz", "list first", "list middle", "get random")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="certificates in the database (default 100000)")
    p.add_argument("--concurrency", default="8,16", help="concurrent requests, comma-separated (default 8,16)")
    p.add_argument("--requests", type=int, default=2000, help="requests per scenario at most (default 2000)")
    p.add_argument("--time-bound", type=float, default=15.0, help="seconds per scenario at most (default 15)")
    p.add_argument("--warmup", type=int, default=50, help="uncounted requests before each scenario (default 50)")
    p.add_argument("--wrk-seconds", type=int, default=4, help="duration of each wrk run in seconds (default 4)")
    p.add_argument("--no-wrk", action="store_true", help="do not use wrk even if it is installed")
    p.add_argument("--inprocess-calls", type=int, default=30, help="calls per operation in the in-process pass (default 30)")
    p.add_argument("--backends", default="sqlite,postgresql", help="databases (default sqlite,postgresql)")
    p.add_argument("--postgres-url", default=os.environ.get("CERTPILOT_BENCH_POSTGRES_URL", _setup.DEFAULT_POSTGRES_SERVER),
                   help="a database URL on the PostgreSQL server (a throwaway database is created there)")
    p.add_argument("--server-workers", type=int, default=1,
                   help="`certpilot serve --workers N`: HTTP worker processes (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5,000 rows, 200 requests or 3 s per scenario, wrk 1 s")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all figures as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.requests, args.time_bound, args.warmup, args.wrk_seconds = 5_000, 200, 3.0, 10, 1
        args.inprocess_calls = 5
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    if args.rows < 10 or min(args.concurrency) < 1 or args.requests < 1 or args.server_workers < 1:
        p.error("--rows must be at least 10, concurrency, requests and server workers at least 1")
    return args


def middle_name(args) -> str:
    return f"{PREFIX}-{(args.rows - 4) // 2:07d}"


def paths(args) -> dict[str, tuple[str, dict | None, bool]]:
    """scenario -> (path, random names, authenticated)"""
    return {
        "healthz": ("/healthz", None, False),
        "list first": ("/api/v1/certificates?limit=100", None, True),
        "list middle": (f"/api/v1/certificates?limit=100&cursor={middle_name(args)}", None, True),
        "get random": ("/api/v1/certificates/{name}", {"prefix": PREFIX, "count": args.rows - 4}, True),
    }


# --- set-up -----------------------------------------------------------------------


def prepare(backend: Backend, args) -> tuple[str, dict[str, Any]]:
    """Issue 4, bulk-load the rest, make a viewer token. Returns the token and load figures."""
    for name, host in _setup.names(f"{PREFIX}-real", 4):
        _setup.issue_one(backend.app, name, host, EC)
    template = _bulk.template_from(backend, f"{PREFIX}-real-0")
    now = time.time()

    def not_due(i: int) -> float:  # 30..60 days ahead, unordered
        return now + 30 * 86400 + ((i * _bulk.GOLDEN) % 1.0) * 30 * 86400

    log(f"[api] {backend.name}: bulk-loading {args.rows - 4:,} issued certificates")
    figures = _bulk.load(backend, PREFIX, args.rows - 4, next_action_at=not_due, template=template)
    figures["size"] = _bulk.table_sizes(backend)["database"]
    log(f"    loaded in {figures['load_s']:.1f} s ({figures['size']})")
    add_user(backend.app, "bench-viewer", Role.VIEWER, "bench-viewer-password", actor=_setup.ACTOR)
    token, _ = create_token(backend.app, "bench-viewer", name="bench", actor=_setup.ACTOR)
    return token, figures


def check_consistent(backend: Backend, args) -> None:
    """The bulk-loaded certificates read back like issued ones."""
    cert = service.get_certificate(backend.app, middle_name(args))
    view = certificate_view(cert)
    if view["status"]["phase"] != "issued" or view["status"]["revision"] != 1 or not view["status"]["renew_at"]:
        raise BenchError(f"a bulk-loaded certificate does not read back as issued: {view['status']}")


def inprocess(backend: Backend, token: str, args) -> dict[str, dict[str, float]]:
    """The services behind each endpoint, in this process, no HTTP: median ms, CPU ms and
    statements per call."""
    app = backend.app
    rng = random.Random(2)
    ops = {
        "authenticate token": lambda: authenticate_token(app, token),
        "list first": lambda: [certificate_view(c) for c in service.list_certificates(app, limit=100)],
        "list middle": lambda: [certificate_view(c) for c in
                                service.list_certificates(app, after_name=middle_name(args), limit=100)],
        "get random": lambda: certificate_view(service.get_certificate(
            app, f"{PREFIX}-{rng.randrange(args.rows - 4):07d}")),
    }
    out = {}
    for label, op in ops.items():
        for _ in range(3):
            op()
        walls, cpus = [], []
        with Capture(app.db.engine) as cap:
            for _ in range(args.inprocess_calls):
                c0, t0 = time.process_time(), time.perf_counter()
                op()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        out[label] = {"ms": 1000 * statistics.median(walls), "cpu_ms": 1000 * statistics.median(cpus),
                      "statements": len(cap.statements) / args.inprocess_calls,
                      "sql": sorted({" ".join(s.split())[:160] for s, _ in cap.statements})}
    return out


def inprocess_threads(backend: Backend, args, threads: int = 8) -> dict[str, dict[str, float]]:
    """`list first` and `get random` on `threads` threads in this process (as the server's thread
    pool runs them, no HTTP): per call the wall time, and on SQLite the time spent in its
    `BEGIN IMMEDIATE` (waiting for another transaction's write lock, in SQLite's busy handler)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import event

    app = backend.app
    local = threading.local()
    begin_wait: list[float] = []
    lock = threading.Lock()

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        local.t = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("BEGIN"):
            with lock:
                begin_wait.append(time.perf_counter() - local.t)

    rng = random.Random(3)
    ops = {
        "list first": lambda: [certificate_view(c) for c in service.list_certificates(app, limit=100)],
        "get random": lambda: certificate_view(service.get_certificate(
            app, f"{PREFIX}-{rng.randrange(args.rows - 4):07d}")),
    }
    out = {}
    for label, op in ops.items():
        calls = args.inprocess_calls * threads // 2

        def timed(_: int) -> float:
            t0 = time.perf_counter()
            op()
            return time.perf_counter() - t0

        begin_wait.clear()
        event.listen(app.db.engine, "before_cursor_execute", before)
        event.listen(app.db.engine, "after_cursor_execute", after)
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                started = time.perf_counter()
                walls = sorted(pool.map(timed, range(calls)))
                elapsed = time.perf_counter() - started
        finally:
            event.remove(app.db.engine, "before_cursor_execute", before)
            event.remove(app.db.engine, "after_cursor_execute", after)
        out[label] = {"threads": threads, "calls": calls, "per_s": calls / elapsed,
                      "p50_ms": 1000 * walls[len(walls) // 2], "p99_ms": 1000 * walls[int(0.99 * (len(walls) - 1))],
                      "begin_wait_ms_per_call": 1000 * sum(begin_wait) / calls if begin_wait else None}
    return out


# --- the server and the load ---------------------------------------------------------


def start_server(backend: Backend, root: Path, workers: int = 1) -> tuple[subprocess.Popen, str, Path]:
    port = _proc.free_port()
    env = _proc.certpilot_env(backend.app.settings.data_dir, backend.url)
    log_path = root / f"serve-{backend.name}.log"
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    proc = _proc.start(argv, env, log_path, root)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"certpilot serve exited with {proc.returncode}:\n{_proc.tail(log_path)}")
        try:
            return httpx.get(base + "/healthz", timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    if not _proc.wait_until(up, 60.0, 0.2):
        _proc.stop(proc)
        raise BenchError(f"certpilot serve did not answer on {base} within 60 s:\n{_proc.tail(log_path)}")
    return proc, base, log_path


def run_load(base: str, token: str, scenario: str, concurrency: int, args, seed: int) -> dict[str, Any]:
    path, names, auth = paths(args)[scenario]
    cfg = {"base_url": base, "token": token, "seed": seed, "scenarios": [{
        "name": scenario, "path": path, "random_names": names, "auth": auth, "concurrency": concurrency,
        "requests": args.requests, "time_bound_s": args.time_bound, "warmup": args.warmup}]}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("_load.py"))], input=json.dumps(cfg),
                          capture_output=True, text=True, timeout=args.time_bound * 2 + 120)
    if done.returncode != 0:
        raise BenchError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)[0]


WRK_LUA = """
local names = {prefix = %(prefix)s, count = %(count)d}
math.randomseed(%(seed)d)
if "%(token)s" ~= "" then wrk.headers["Authorization"] = "Bearer %(token)s" end
request = function()
  local path = %(path)s
  if names.count > 0 then
    path = string.gsub(path, "{name}", string.format("%%s-%%07d", names.prefix, math.random(0, names.count - 1)))
  end
  return wrk.format("GET", path)
end
"""


def run_wrk(base: str, token: str, scenario: str, concurrency: int, args, root: Path) -> dict[str, Any] | None:
    path, names, auth = paths(args)[scenario]
    script = root / "wrk.lua"
    script.write_text(WRK_LUA % {
        "prefix": json.dumps(names["prefix"] if names else ""), "count": names["count"] if names else 0,
        "seed": 7, "token": token if auth else "", "path": json.dumps(path)})
    threads = min(2, concurrency)
    done = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(args.wrk_seconds))}s",
                           "--latency", "--timeout", "60s", "-s", str(script), base], capture_output=True, text=True,
                          timeout=args.wrk_seconds + 60)
    if done.returncode != 0:
        log(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}")
        return None
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    out: dict[str, Any] = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            out[f"p{q}_ms"] = ms(*m.groups())
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    out["socket_errors"] = m.group(1).strip() if m else None
    return out


def bench_backend(backend: Backend, root: Path, args) -> dict[str, Any]:
    result: dict[str, Any] = {"describe": backend.describe}
    token, result["load"] = prepare(backend, args)
    check_consistent(backend, args)
    log(f"[api] {backend.name}: in-process pass")
    result["inprocess"] = inprocess(backend, token, args)
    result["inprocess_threads"] = inprocess_threads(backend, args)
    proc, base, log_path = start_server(backend, root, args.server_workers)
    result["load_generator"] = {}
    result["wrk"] = {}
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    try:
        seed = 1
        for concurrency in args.concurrency:
            for scenario in SCENARIOS:
                args.loadavg.append(os.getloadavg()[0])
                pg = _proc.ChangingPidsCpu(backend.server_pids or (lambda: []))
                cpu0 = _proc.tree_cpu_s(proc.pid)
                with _proc.Sampler(pg):
                    r = run_load(base, token, scenario, concurrency, args, seed)
                cpu1 = _proc.tree_cpu_s(proc.pid)
                seed += 1
                sent = r["requests"] + args.warmup  # the server also served the warm-up requests
                r["server_cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / sent
                r["postgres_cpu_ms_per_request"] = 1000 * pg.spent() / sent if backend.server_pids else None
                if r["ok"] != r["requests"]:
                    raise BenchError(f"{scenario}: only {r['ok']} of {r['requests']} answers were 200: {r['statuses']}\n"
                                     + _proc.tail(log_path))
                result["load_generator"][f"{scenario}/{concurrency}"] = r
                log(f"    {scenario:12} c={concurrency:<3} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                    f"{r['rps']:7.1f} req/s  ({r['requests']} requests, server {r['server_cpu_ms_per_request']:.2f} ms "
                    f"CPU/req, client {r['client_cpu_ms_per_request']:.2f})")
                if use_wrk:
                    w = run_wrk(base, token, scenario, concurrency, args, root)
                    if w:
                        result["wrk"][f"{scenario}/{concurrency}"] = w
                        log(f"    {'':12}   wrk   p50 {w.get('p50_ms', float('nan')):7.2f} ms  p99 "
                            f"{w.get('p99_ms', float('nan')):8.2f} ms  {w['rps'] or 0:7.1f} req/s")
                        if w["non_2xx"]:
                            raise BenchError(f"wrk {scenario}: {w['non_2xx']} non-2xx answers")
                        if w["socket_errors"]:
                            log(f"    wrk socket errors: {w['socket_errors']}")
        # the server and its children (with --server-workers: the HTTP workers; the script runner's zygote)
        family = [proc.pid, *_proc.children(proc.pid)]
        result["server_rss_mb"] = sum(_proc.status_kb(pid, "VmRSS") or 0 for pid in family) / 1024
        result["server_peak_rss_mb"] = sum(_proc.status_kb(pid, "VmHWM") or 0 for pid in family) / 1024
    finally:
        _proc.stop(proc)
    return result


# --- report -----------------------------------------------------------------------


def format_report(result: dict[str, Any], args) -> str:
    env = result["environment"]
    lines = [
        f"certpilot API benchmark, {env['date_utc']}, tree {env['git']}",
        f"machine: {env['nproc']} CPUs, {env['cpu_model']}; Python {env['python']}; load average (1 min) "
        f"{min(args.loadavg):.2f}..{max(args.loadavg):.2f} during the run; took {result['elapsed_s'] / 60:.1f} min",
        f"{args.rows:,} issued certificates; `certpilot serve` (uvicorn, "
        f"{'1 process' if args.server_workers == 1 else f'--workers {args.server_workers}'}, default settings) on 127.0.0.1; "
        f"load from another process: async httpx, closed loop, up to {args.requests} requests or {args.time_bound:.0f} s "
        f"per scenario after {args.warmup} uncounted",
    ]
    for name, r in result["backends"].items():
        lines += ["", f"{name}: {r['describe']}; bulk load {r['load']['load_s']:.1f} s, {r['load']['size']}; "
                      f"server VmRSS {r['server_rss_mb']:.0f} MB with its child processes at the end (peak {r['server_peak_rss_mb']:.0f} MB)"]
        lines.append(f"  {'scenario':12} {'conc':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>8} "
                     f"{'n':>5} {'p50/healthz':>11} {'req/s vs healthz':>16} {'server CPU ms/req':>17} {'pg CPU':>7} "
                     f"{'client CPU':>10}")
        for concurrency in args.concurrency:
            base = r["load_generator"].get(f"healthz/{concurrency}")
            for scenario in SCENARIOS:
                x = r["load_generator"].get(f"{scenario}/{concurrency}")
                if not x:
                    continue
                pg = f"{x['postgres_cpu_ms_per_request']:7.2f}" if x["postgres_cpu_ms_per_request"] is not None else f"{'-':>7}"
                lines.append(
                    f"  {scenario:12} {concurrency:4d} {x['p50_ms']:8.2f} {x['p90_ms']:8.2f} {x['p99_ms']:8.2f} "
                    f"{x['rps']:8.1f} {x['requests']:5d} {x['p50_ms'] / base['p50_ms']:11.1f} "
                    f"{x['rps'] / base['rps']:16.3f} {x['server_cpu_ms_per_request']:17.2f} {pg} "
                    f"{x['client_cpu_ms_per_request']:10.2f}")
        if r["wrk"]:
            lines.append(f"  wrk ({args.wrk_seconds} s each, 2 threads; same columns):")
            for concurrency in args.concurrency:
                base = r["wrk"].get(f"healthz/{concurrency}")
                for scenario in SCENARIOS:
                    w = r["wrk"].get(f"{scenario}/{concurrency}")
                    if not w or "p50_ms" not in w:
                        continue
                    ratio = f"{w['p50_ms'] / base['p50_ms']:11.1f}" if base and "p50_ms" in base else f"{'':>11}"
                    errors = f"  socket errors: {w['socket_errors']}" if w.get("socket_errors") else ""
                    lines.append(f"  {scenario:12} {concurrency:4d} {w['p50_ms']:8.2f} {w['p90_ms']:8.2f} "
                                 f"{w['p99_ms']:8.2f} {w['rps']:8.1f} {w['requests']:5d} {ratio}{errors}")
        lines.append("  in this process, the services behind each endpoint, no HTTP (median ms per call):")
        for label, x in r["inprocess"].items():
            lines.append(f"    {label:20} {x['ms']:7.2f} ms  {x['cpu_ms']:7.2f} ms CPU  {x['statements']:4.1f} statements")
        for label, x in r.get("inprocess_threads", {}).items():
            wait = (f"; waiting in BEGIN IMMEDIATE {x['begin_wait_ms_per_call']:.2f} ms per call"
                    if x["begin_wait_ms_per_call"] is not None else "")
            lines.append(f"    {label} on {x['threads']} threads: {x['per_s']:.1f} calls/s, p50 {x['p50_ms']:.2f} ms, "
                         f"p99 {x['p99_ms']:.2f} ms{wait}")
    for message in args.skipped:
        lines.append(f"\nskipped: {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.skipped, args.loadavg = [], [os.getloadavg()[0]]
    env = environment()
    root = Path(tempfile.mkdtemp(prefix="certpilot-api-"))
    result: dict[str, Any] = {"environment": env, "backends": {}, "config": {k: getattr(args, k) for k in (
        "rows", "concurrency", "requests", "time_bound", "warmup", "wrk_seconds", "no_wrk", "backends", "quick",
        "server_workers")}}
    result["config"]["wrk"] = None if args.no_wrk else shutil.which("wrk")
    started = time.perf_counter()
    try:
        local_ca = _setup.make_ca(root / "ca")
        for kind in args.backends:
            backend = open_backend(kind, root / kind, local_ca, args)
            if backend is None:
                continue
            try:
                result["backends"][backend.name] = bench_backend(backend, root, args)
            finally:
                backend.close()
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            shutil.rmtree(root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    result["elapsed_s"] = time.perf_counter() - started
    args.loadavg.append(os.getloadavg()[0])
    env["loadavg_samples"] = args.loadavg
    print(format_report(result, args))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
