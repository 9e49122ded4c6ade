#!/usr/bin/env python3
"""Issuance benchmark: certificates per second through certpilot, against the crypto bound.

    .venv/bin/python bench/issue.py                  # full run (a few minutes on 2 cores)
    .venv/bin/python bench/issue.py --quick          # smoke run, seconds
    .venv/bin/python bench/issue.py --json out.json  # also write every sample as JSON

For each key type (EC P-256, then RSA 2048), each database (SQLite, and
PostgreSQL when a server answers) and each repetition it times N certificates,
each `services.certificates.request_certificate` + `services.issuance.attempt`
through the bundled local-CA issuer script, to a stored revision: once one after
the other, once on a thread pool of 2 (settings.workers = 2). In the same
process, just before and just after those runs, it times the same crypto with no
certpilot around it on one thread (`_bound.py`); each run's ratio is its rate
over that bound rate (both bound passes together). It also records the CPU time
each run took in this process, in the script workers and in PostgreSQL.
Medians over the repetitions are reported.

It also times the script runner's per-call cost (a constant-returning script
through `app.runner.call`) against starting a fresh interpreter, probes what a
script child pays for OpenSSL's first use, and makes instrumented passes to show
where the time of an issuance goes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bound  # noqa: E402
import _breakdown  # noqa: E402
import _cpu  # noqa: E402
import _runner_cost  # noqa: E402
import _setup  # noqa: E402
from _setup import Backend, BenchError, log  # noqa: E402

from certpilot.domain.model import KeySpec  # noqa: E402
from certpilot.services.setup import bundled_local_ca_source  # noqa: E402

KEYS = ("ec:p256", "rsa:2048")
MODES = ("sequential", "2 threads")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200, help="EC P-256 certificates per timed run (default 200)")
    p.add_argument("--rsa-count", type=int, default=30, help="RSA 2048 certificates per timed run (default 30)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 10 EC, 3 RSA, 1 repetition")
    p.add_argument("--keys", default=",".join(KEYS), help=f"key types, comma-separated (default {','.join(KEYS)})")
    p.add_argument("--backends", default="sqlite,postgresql", help="databases (default sqlite,postgresql)")
    p.add_argument("--postgres-url", default=os.environ.get("CERTPILOT_BENCH_POSTGRES_URL", _setup.DEFAULT_POSTGRES_SERVER),
                   help="a database URL on the PostgreSQL server to use (a throwaway database is created "
                        "there and dropped at the end); default $CERTPILOT_BENCH_POSTGRES_URL or "
                        f"{_setup.DEFAULT_POSTGRES_SERVER}")
    p.add_argument("--runner-calls", type=int, default=300, help="trivial script calls per repetition (default 300)")
    p.add_argument("--spawns", type=int, default=20, help="fresh interpreters started per repetition (default 20)")
    p.add_argument("--breakdown-count", type=int, default=None,
                   help="certificates in the instrumented pass per database and key (default: count/8 EC, rsa-count/3 RSA); 0 skips it")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="also run one sequential EC pass per database under cProfile and write the stats to DIR")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", default=None,
                   help="write all figures as JSON to PATH; without PATH the JSON goes to stdout and the table to stderr")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.rsa_count, args.repeat = 10, 3, 1
        args.runner_calls, args.spawns = 30, 3
        if args.breakdown_count is None:
            args.breakdown_count = 4
    args.keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for k in args.keys:
        if k not in KEYS:
            p.error(f"unknown key type {k!r}: use {', '.join(KEYS)}")
    for b in args.backends:
        if b not in ("sqlite", "postgresql"):
            p.error(f"unknown backend {b!r}: use sqlite, postgresql")
    if min(args.count, args.rsa_count, args.repeat, args.runner_calls, args.spawns) < 1:
        p.error("counts and repetitions must be at least 1")
    return args


def count_for(args: argparse.Namespace, key: str) -> int:
    return args.rsa_count if key.startswith("rsa") else args.count


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from cryptography.hazmat.backends.openssl import backend as openssl

    versions = {name: metadata.version(name) for name in ("certpilot", "cryptography", "SQLAlchemy", "psycopg")}
    versions["OpenSSL"] = openssl.openssl_version_text()
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        git = f"{head}" + (f" with {len(dirty)} uncommitted change(s) in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        git = "unknown"
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git,
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


# --- timed runs -----------------------------------------------------------------------


def timed_certpilot(backend: Backend, key: str, count: int, tag: str, threads: int) -> dict[str, float]:
    """`count` certificates on `backend`; `threads` 1 is one after the other."""
    key_spec = KeySpec.parse(key)
    todo = _setup.names(tag, count)
    latencies: list[float] = []
    app = backend.app
    meter = _cpu.CpuMeter(app.runner.worker_pids, backend.server_pids)
    cpu_before = meter.snapshot()
    if threads == 1:
        started = time.perf_counter()
        for name, host in todo:
            t0 = time.perf_counter()
            _setup.issue_one(app, name, host, key_spec)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda item: _setup.issue_one(app, item[0], item[1], key_spec), todo))
            wall = time.perf_counter() - started
    cpu = _cpu.CpuMeter.spent(cpu_before, meter.snapshot())
    stored = _setup.count_revisions(app, tag)
    if stored != count:
        raise BenchError(f"{backend.name} {tag}: {stored} revisions stored, {count} expected")
    figures = {"rate": count / wall, "wall_s": wall}
    if latencies:
        figures["latency_median_ms"] = 1000 * statistics.median(latencies)
    known = [v for v in cpu.values() if v is not None]
    for who, seconds in cpu.items():
        if seconds is not None:
            figures[f"cpu_{who}_ms"] = 1000 * seconds / count
    figures["cpu_total_ms"] = 1000 * sum(known) / count
    figures["cores_busy"] = sum(known) / wall
    return figures


def run_all(args: argparse.Namespace, backends: list[Backend], ca: _bound.CA) -> dict[str, Any]:
    samples: dict[str, Any] = {key: {"bound": [], **{b.name: {m: [] for m in MODES} for b in backends}} for key in args.keys}
    runner_samples: list[dict[str, float]] = []
    for rep in range(args.repeat):
        for key in args.keys:
            n = count_for(args, key)
            short = key.split(":")[0]
            log(f"[rep {rep + 1}/{args.repeat}] {key}: bound ({n})")
            before = _bound.run(ca, key, n, f"{short}-r{rep}-a")
            runs = []
            for backend in backends:
                for mode, threads in zip(MODES, (1, 2)):
                    tag = f"{short}-{'seq' if threads == 1 else 't2'}-r{rep}"
                    log(f"[rep {rep + 1}/{args.repeat}] {key}: {backend.name}, {mode} ({n})")
                    figures = timed_certpilot(backend, key, n, tag, threads)
                    runs.append((backend.name, mode, figures))
            after = _bound.run(ca, key, n, f"{short}-r{rep}-b")
            bound_rate = 2 * n / (before[0] + after[0])  # all bound certificates of this rep over their time
            bound_cpu_ms = 1000 * (before[1] + after[1]) / (2 * n)
            samples[key]["bound"].append({"rate": bound_rate, "rate_before": n / before[0], "rate_after": n / after[0],
                                          "cpu_total_ms": bound_cpu_ms})
            for name, mode, figures in runs:
                figures["ratio"] = figures["rate"] / bound_rate
                figures["cpu_ratio"] = bound_cpu_ms / figures["cpu_total_ms"]
                samples[key][name][mode].append(figures)
        if backends:
            log(f"[rep {rep + 1}/{args.repeat}] script runner per-call cost")
            runner_samples.append(_runner_cost.measure(backends[0].app.runner, args.runner_calls, args.spawns))
    return {"samples": samples, "runner_samples": runner_samples}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    def med(items: list[dict[str, float]], field: str) -> float | None:
        values = [i[field] for i in items if field in i]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {}
    for key, per_key in raw["samples"].items():
        out: dict[str, Any] = {}
        bound = per_key["bound"]
        out["bound"] = {"rate": med(bound, "rate"), "min": min(b["rate"] for b in bound),
                        "max": max(b["rate"] for b in bound), "cpu_total_ms": med(bound, "cpu_total_ms")}
        for backend, modes in per_key.items():
            if backend == "bound":
                continue
            for mode, items in modes.items():
                out[f"{backend}/{mode}"] = {
                    "rate": med(items, "rate"),
                    "min": min(i["rate"] for i in items),
                    "max": max(i["rate"] for i in items),
                    "ratio": med(items, "ratio"),
                    "latency_median_ms": med(items, "latency_median_ms"),
                    **{f: med(items, f) for f in ("cpu_controller_ms", "cpu_scripts_ms", "cpu_database_ms",
                                                  "cpu_total_ms", "cores_busy", "cpu_ratio")},
                }
        summary[key] = out
    if raw["runner_samples"]:
        summary["runner"] = {f: statistics.median(s[f] for s in raw["runner_samples"]) for f in raw["runner_samples"][0]}
    return summary


# --- report ---------------------------------------------------------------------------


def format_report(result: dict[str, Any]) -> str:
    env, cfg, summary = result["environment"], result["config"], result["summary"]
    lines = [
        f"certpilot issuance benchmark, {env['date_utc']}, tree {env['git']}",
        f"machine: {env['nproc']} CPUs ({env['cpus_usable']} usable), {env['cpu_model']}; Python {env['python']}; "
        f"load average at start {env['loadavg_start'][0]:.2f}, at end {env['loadavg_end'][0]:.2f}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
    ]
    for name, text in result["backends"].items():
        lines.append(f"{name}: {text}")
    lines.append(f"runs: {cfg['repeat']} repetition(s) of {cfg['count']} EC / {cfg['rsa_count']} RSA certificates per run, "
                 f"{_setup.WORKERS} threads issuing; medians over repetitions, (min..max) in brackets; "
                 f"timed runs took {result['timed_runs_s']:.0f} s")
    lines.append("")
    header = f"{'key':9} {'run':26} {'certs/s':>8} {'(min..max)':>15} {'ms/cert':>8} {'p50 ms':>7} {'vs bound':>9}"
    lines += [header, "-" * len(header)]
    for key in cfg["keys"]:
        per = summary[key]
        b = per["bound"]
        lines.append(f"{key:9} {'bound: crypto only, 1 thread':26} {b['rate']:8.1f} {_span(b):>15} {1000 / b['rate']:8.2f} "
                     f"{'':>7} {'1':>9}")
        for label, s in per.items():
            if label == "bound":
                continue
            p50 = f"{s['latency_median_ms']:7.2f}" if s["latency_median_ms"] is not None else f"{'':>7}"
            lines.append(f"{key:9} {label:26} {s['rate']:8.1f} {_span(s):>15} {1000 / s['rate']:8.2f} {p50} {s['ratio']:9.4f}")
        lines.append("")
    lines.append("vs bound: certpilot rate / rate of the same crypto in this process on one thread (measured before and")
    lines.append("after the certpilot runs of each repetition); median of the per-repetition ratios. The 2-thread runs")
    lines.append("have both cores, the bound one: their ideal is 2.")

    lines += ["", "CPU per certificate (ms, medians), by process; cores kept busy (all CPU / wall time); and the bound's",
              "CPU per certificate over certpilot's (less sensitive than wall time to other load on the machine):",
              f"  {'key':9} {'run':26} {'controller':>10} {'scripts':>8} {'postgres':>9} {'total':>7} {'cores':>6} {'bound/this':>10}"]
    for key in cfg["keys"]:
        bound_cpu = summary[key]["bound"]["cpu_total_ms"]
        lines.append(f"  {key:9} {'bound: crypto only, 1 thread':26} {bound_cpu:10.2f} {'-':>8} {'-':>9} {bound_cpu:7.2f} "
                     f"{'':>6} {'1':>10}")
        for label, s in summary[key].items():
            if label == "bound":
                continue
            cells = [s.get(f) for f in ("cpu_controller_ms", "cpu_scripts_ms", "cpu_database_ms", "cpu_total_ms")]
            text = " ".join(f"{v:{w}.1f}" if v is not None else f"{'-':>{w}}" for v, w in zip(cells, (10, 8, 9, 7)))
            lines.append(f"  {key:9} {label:26} {text} {s['cores_busy']:6.2f} {s['cpu_ratio']:10.4f}")
    lines.append("  controller = this process (all threads); scripts = the 2 worker processes and the children they fork;")
    lines.append("  postgres = the server processes of the benchmark's database.")

    if "runner" in summary:
        r = summary["runner"]
        lines += [
            "",
            "script runner, a trivial script (returns a constant) through app.runner.call, medians:",
            f"  per call                        {r['call_ms']:7.2f} ms  (mean {r['call_mean_ms']:.2f} ms)",
            f"  of which inside the worker      {r['in_worker_ms']:7.2f} ms  (fork of the child .. child reaped)",
            f"  fresh interpreter               {r['fresh_interpreter_ms']:7.2f} ms  (subprocess.run([sys.executable, '-I', '-c', 'pass']))",
            f"  fresh, with the worker's imports {r['fresh_interpreter_with_preload_ms']:6.2f} ms  "
            f"(-c '{_runner_cost.WORKER_PRELOAD}')",
            f"  fresh interpreter / runner call: {r['fresh_interpreter_ms'] / r['call_ms']:.1f}x, "
            f"{r['fresh_interpreter_with_preload_ms'] / r['call_ms']:.1f}x with the imports",
        ]
    cold = result.get("cold_start")
    if cold:
        lines += ["", "first CSR signature check in a child forked from a worker that has only imported modules (medians, ms):"]
        for key in cold["cold"]:
            c, w = cold["cold"][key], cold["warm"][key]
            lines.append(f"  {key:9} first {c['first_verify_ms']:6.2f}, second {c['second_verify_ms']:5.2f}; "
                         f"first when the worker checked one signature before forking: {w['first_verify_ms']:5.2f}")
    warm = result.get("warm_worker")
    if warm:
        lines += [f"  the bundled local-CA script (EC CSR) through one worker, median per call: {warm['stock_ms']:.2f} ms with the",
                  f"  stock worker, {warm['warmed_ms']:.2f} ms with a worker that used OpenSSL once before serving "
                  f"(bench/_runner_cost.WARM_WORKER)"]
    if result.get("breakdown"):
        lines += ["", "where the time goes: instrumented passes (not the timed runs), ms per certificate"]
        for label, bd in result["breakdown"].items():
            sequential = bd["threads"] == 1
            lines.append(f"  {label}, {bd['count']} certificates: {bd['total_ms']:.2f} ms wall per certificate"
                         + ("" if sequential else " (parts below are summed over both threads and overlap)"))
            for what in _ordered(bd["ms"]):
                value = bd["ms"][what]
                count = bd["per_cert"].get(what, 0)
                count_text = f"  x{count:.1f}" if what.startswith("db: ") else ""
                indent = "      " if what.startswith("service: ") else "        "
                lines.append(f"{indent}{what:44} {value:8.2f}{count_text}")
            checkouts = bd["per_cert"].get("db: connection checkouts")
            if checkouts:
                lines.append(f"        {'db: connections checked out (transactions)':44} {'':8}  x{checkouts:.1f}")
            if bd["rest_ms"] is not None:
                lines.append(f"        {'none of the above (ORM, certpilot Python)':44} {bd['rest_ms']:8.2f}")
            if bd["not_wrapped"]:
                lines.append(f"        (not found to wrap in issuance: {', '.join(bd['not_wrapped'])})")
    if result.get("script_in_process"):
        lines += ["", "the bundled local-CA script's function run in this process (no worker, no fork), ms per call:"]
        for key, s in result["script_in_process"].items():
            lines.append(f"  {key:9} certificate_request {s['certificate_request_ms']:6.2f}, of which re-reading the CA "
                         f"files {s['load_ca_files_ms']:5.2f}; compile+exec of the source {s['compile_and_exec_source_ms']:5.2f}")
    for message in result["skipped"]:
        lines.append(f"\nskipped: {message}")
    return "\n".join(lines)


def _ordered(items: dict[str, float]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        if name.startswith("service: "):
            return (0, name)
        if name in _breakdown.CRYPTO_STEPS.values():
            return (1, name)
        if name.startswith("script call"):
            return (2, name)
        return (3, name)

    return sorted(items, key=rank)


def _span(s: dict[str, float]) -> str:
    return f"({s['min']:.1f}..{s['max']:.1f})"


def cold_start_probe(keys: list[str]) -> dict[str, Any]:
    """Run `_cold_start.py` in a fresh interpreter started as the runner starts its workers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csrs = {}
    for key in keys:
        csrs[key] = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe.bench.test")]))
            .sign(_bound.generate_key(key), hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode()
        )
    probe = Path(__file__).resolve().parent / "_cold_start.py"
    done = subprocess.run([sys.executable, "-I", str(probe)], input=json.dumps(csrs), capture_output=True,
                          text=True, check=True, cwd="/", env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    return json.loads(done.stdout)


def warm_worker_probe(local_ca: Any, count: int) -> dict[str, float]:
    """The bundled local-CA script through a stock worker and through a warmed one (EC CSRs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csrs = []
    for i in range(count):
        host = f"h{i}.warm.bench.test"
        csrs.append((
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .sign(_bound.generate_key("ec:p256"), hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode(),
            host,
        ))
    args = {"ca_cert_path": str(local_ca.cert_path), "ca_key_path": str(local_ca.key_path),
            "ca_key_password": local_ca.password, "validity_days": "90"}
    return _runner_cost.stock_vs_warmed_worker(bundled_local_ca_source(), args, (local_ca.password,), csrs)


# --- profile ------------------------------------------------------------------------


def profile_pass(backend: Backend, count: int, out_dir: Path) -> None:
    import cProfile
    import pstats

    out_dir.mkdir(parents=True, exist_ok=True)
    key = KeySpec.parse("ec:p256")
    todo = _setup.names(f"ec-prof-{backend.name}", count)
    profiler = cProfile.Profile()
    profiler.enable()
    for name, host in todo:
        _setup.issue_one(backend.app, name, host, key)
    profiler.disable()
    path = out_dir / f"profile-{backend.name}-ec.pstats"
    profiler.dump_stats(str(path))
    log(f"\ncProfile of {count} sequential EC issuances on {backend.name} -> {path}")
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("cumulative").print_stats(r"certpilot/(services|store|pki|keys|issuers)/", 30)
    stats.strip_dirs().sort_stats("tottime").print_stats(20)


# --- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    root = Path(tempfile.mkdtemp(prefix="certpilot-bench-"))
    backends: list[Backend] = []
    skipped: list[str] = []
    result: dict[str, Any] = {"environment": env, "skipped": skipped,
                              "config": {k: getattr(args, k) for k in ("count", "rsa_count", "repeat", "keys", "backends",
                                                                        "runner_calls", "spawns", "quick")}}
    try:
        local_ca = _setup.make_ca(root / "ca")
        ca = _bound.CA.load(str(local_ca.cert_path), str(local_ca.key_path), local_ca.password)
        if "sqlite" in args.backends:
            backends.append(_setup.sqlite_backend(root, local_ca))
        if "postgresql" in args.backends:
            pg = _setup.postgres_backend(root, local_ca, args.postgres_url)
            if isinstance(pg, str):
                log(f"skipping PostgreSQL: {pg}")
                skipped.append(pg)
            else:
                backends.append(pg)
        for backend in backends:
            log(f"warming up {backend.name}: {backend.describe}")
            _setup.warm_up(backend.app, "warm", KeySpec.parse("ec:p256"))
        result["backends"] = {b.name: b.describe for b in backends}

        started = time.perf_counter()
        raw = run_all(args, backends, ca)
        result["timed_runs_s"] = time.perf_counter() - started
        result["raw"] = raw
        result["summary"] = summarise(raw)

        breakdown_default = {"ec:p256": max(1, args.count // 8), "rsa:2048": max(1, args.rsa_count // 3)}
        if args.breakdown_count != 0:
            result["breakdown"] = {}
            result["script_in_process"] = {}
            ca_args = {"ca_cert_path": str(local_ca.cert_path), "ca_key_path": str(local_ca.key_path),
                       "ca_key_password": local_ca.password, "validity_days": "90"}
            for key in args.keys:
                n = args.breakdown_count or breakdown_default[key]
                for backend in backends:
                    for mode, threads in zip(MODES, (1, 2)):
                        log(f"instrumented pass: {backend.name}, {key}, {mode} ({n})")
                        tag = f"{key.split(':')[0]}-bd{threads}"
                        result["breakdown"][f"{backend.name}, {key}, {mode}"] = _breakdown.run(
                            backend.app, KeySpec.parse(key), n, tag, threads)
                result["script_in_process"][key] = _breakdown.script_in_process(
                    ca_args, bundled_local_ca_source(), key, n)
            log("cold-start probe")
            result["cold_start"] = cold_start_probe(args.keys)
            log("stock vs warmed script worker")
            result["warm_worker"] = warm_worker_probe(local_ca, 10 if args.quick else 60)
        if args.profile:
            for backend in backends:
                profile_pass(backend, max(1, args.count // 2), Path(args.profile))
    finally:
        # a second Ctrl-C must not leave a database, a directory or worker processes behind
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for backend in backends:
                backend.close()
            shutil.rmtree(root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    env["loadavg_end"] = os.getloadavg()

    report = format_report(result)
    if args.json == "-":
        print(report, file=sys.stderr)
        json.dump(result, sys.stdout, indent=2, default=str)
        print()
    else:
        print(report)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
            log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
