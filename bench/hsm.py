#!/usr/bin/env python3
"""HSM benchmark: certificates per second with keys in a PKCS#11 token (SoftHSM), next to
software keys, through the same services path as bench/issue.py.

    .venv/bin/python bench/hsm.py                  # full run (a few minutes on 2 cores)
    .venv/bin/python bench/hsm.py --quick          # smoke run
    .venv/bin/python bench/hsm.py --json out.json  # also write every sample as JSON

For each repetition, key type (EC P-256, RSA 2048), database (SQLite, and PostgreSQL
when a server answers) and mode (one after the other; 2 threads) it times N
certificates with software keys and N with keys generated in a SoftHSM token (HSM group
on a token initialised for this run), each `request_certificate` + `attempt` to a stored
revision, the two runs back to back, in alternating order from one repetition to the
next. The ratio HSM/software is taken per repetition; medians are reported. After each
run its certificates are removed, untimed (for the HSM run that destroys the token keys),
so every run starts from the same token and database size.

Alongside, on one thread, it times the key operations alone: `pkcs11_backend.generate_key`
+ one `pkcs11_backend.sign` + `destroy_key` in the token, against pyca key generation +
one signature; and (with --fill) HSM issuance on a token already holding many key pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "certpilot-bench"
PIN = "1234"
GROUP = "bench-hsm"
KEYS = ("ec:p256", "rsa:2048")
MODES = {"sequential": 1, "2 threads": 2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import _setup

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=40, help="EC P-256 certificates per timed run (default 40)")
    p.add_argument("--rsa-count", type=int, default=10, help="RSA 2048 certificates per timed run (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 EC, 3 RSA, 1 repetition, no fill probe")
    p.add_argument("--keys", default=",".join(KEYS), help=f"key types (default {','.join(KEYS)})")
    p.add_argument("--backends", default="sqlite,postgresql", help="databases (default sqlite,postgresql)")
    p.add_argument("--modes", default=",".join(MODES), help="sequential and/or '2 threads' (default both)")
    p.add_argument("--postgres-url", default=os.environ.get("CERTPILOT_BENCH_POSTGRES_URL", _setup.DEFAULT_POSTGRES_SERVER),
                   help="a URL on the PostgreSQL server to use (a throwaway database is created and dropped)")
    p.add_argument("--ops", type=int, default=None, help="key operations per kind in the key-only timing "
                   "(default: 2 x count for EC, rsa-count for RSA)")
    p.add_argument("--fill", type=int, default=500,
                   help="key pairs put in the token for the fill probe (SQLite, EC, sequential); 0 skips it")
    p.add_argument("--token-dir", metavar="DIR", default=None,
                   help="make the SoftHSM token directory under DIR (default: the run's temporary directory, "
                        "on the disk that holds $TMPDIR); e.g. /dev/shm for a token in memory")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all figures as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.rsa_count, args.repeat, args.fill = 8, 3, 1, 0
    args.keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for k in args.keys:
        if k not in KEYS:
            p.error(f"unknown key type {k!r}: use {', '.join(KEYS)}")
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}: use {', '.join(MODES)}")
    if min(args.count, args.rsa_count, args.repeat) < 1:
        p.error("counts and repetitions must be at least 1")
    return args


def prepare_softhsm(root: Path, token_parent: Path | None) -> Path:
    """A token directory of this run (under `token_parent` if given, else under `root`);
    SOFTHSM2_CONF is set before PKCS#11 is loaded in this process."""
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        raise SystemExit(f"softhsm2 is not installed (need softhsm2-util and {MODULE})")
    if "pkcs11" in sys.modules and MODULE in getattr(sys.modules["pkcs11"], "_loaded", {}):
        raise SystemExit("the PKCS#11 module was loaded before SOFTHSM2_CONF was set")
    root.mkdir(parents=True)
    tokens = Path(tempfile.mkdtemp(prefix="certpilot-bench-tokens-", dir=token_parent)) if token_parent else root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "5678"],
                   check=True, capture_output=True)
    return tokens


def filesystem_of(path: Path) -> str:
    try:
        out = subprocess.run(["df", "--output=fstype,source", str(path)], capture_output=True, text=True, check=True)
        fstype, source = out.stdout.splitlines()[1].split()
        return f"{fstype} ({source})"
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return "unknown file system"


def softhsm_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "softhsm2"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# --- timed runs ------------------------------------------------------------------------


def issue_one(app: Any, name: str, host: str, key: Any, hsm_group: str | None) -> None:
    """What is timed per certificate, as in _setup.issue_one, with the HSM group or without."""
    from certpilot.domain.model import Outcome, make_subject
    from certpilot.services.certificates import request_certificate
    from certpilot.services.issuance import attempt

    import _setup

    request_certificate(app, name, profile=_setup.PROFILE, subject=make_subject(host), key=key,
                        hsm_group=hsm_group, actor=_setup.ACTOR)
    report = attempt(app, name, actor=_setup.ACTOR)
    if report.outcome is not Outcome.ISSUED or report.revision != 1:
        raise _setup.BenchError(f"certificate {name}: attempt ended {report.outcome.value}: {report.error}")


def remove_all(app: Any, names: list[str]) -> None:
    from certpilot.services.certificates import remove_certificate

    import _setup

    for name in names:
        remove_certificate(app, name, actor=_setup.ACTOR)


def timed_run(backend: Any, key: str, count: int, tag: str, threads: int, hsm_group: str | None) -> dict[str, float]:
    import _cpu
    import _setup

    from certpilot.domain.model import KeySpec

    key_spec = KeySpec.parse(key)
    todo = _setup.names(tag, count)
    app = backend.app
    meter = _cpu.CpuMeter(app.runner.worker_pids, backend.server_pids)
    latencies: list[float] = []
    before = meter.snapshot()
    if threads == 1:
        started = time.perf_counter()
        for name, host in todo:
            t0 = time.perf_counter()
            issue_one(app, name, host, key_spec, hsm_group)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda item: issue_one(app, item[0], item[1], key_spec, hsm_group), todo))
            wall = time.perf_counter() - started
    cpu = _cpu.CpuMeter.spent(before, meter.snapshot())
    stored = _setup.count_revisions(app, tag)
    if stored != count:
        raise _setup.BenchError(f"{backend.name} {tag}: {stored} revisions stored, {count} expected")
    remove_all(app, [n for n, _ in todo])
    figures = {"rate": count / wall, "wall_s": wall, "cpu_controller_ms": 1000 * cpu["controller"] / count}
    if cpu["scripts"] is not None:
        figures["cpu_scripts_ms"] = 1000 * cpu["scripts"] / count
    if cpu["database"] is not None:
        figures["cpu_database_ms"] = 1000 * cpu["database"] / count
    if latencies:
        figures["latency_median_ms"] = 1000 * statistics.median(latencies)
    return figures


def key_ops(ref: Any, key: str, n: int) -> dict[str, float]:
    """Per key pair, one thread, no certpilot around: token generate + sign + destroy,
    against pyca generate + sign. Returns ms per key pair."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    from certpilot.domain.model import KeySpec
    from certpilot.keys import pkcs11_backend
    from certpilot.keys.software import generate_private_key

    spec = KeySpec.parse(key)
    data = os.urandom(300)  # about the size of a CSR's request info
    token = {"generate": 0.0, "sign": 0.0, "destroy": 0.0}
    for _ in range(n):
        key_id = uuid.uuid4().bytes
        t0 = time.perf_counter()
        pkcs11_backend.generate_key(ref, spec, label="bench-op", key_id=key_id)
        t1 = time.perf_counter()
        pkcs11_backend.sign(ref, key_id, spec, data)
        t2 = time.perf_counter()
        pkcs11_backend.destroy_key(ref, key_id)
        t3 = time.perf_counter()
        token["generate"] += t1 - t0
        token["sign"] += t2 - t1
        token["destroy"] += t3 - t2
    software = {"generate": 0.0, "sign": 0.0}
    for _ in range(n):
        t0 = time.perf_counter()
        private = generate_private_key(spec)
        t1 = time.perf_counter()
        if spec.algorithm == "ec":
            private.sign(data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        else:
            private.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
        t2 = time.perf_counter()
        software["generate"] += t1 - t0
        software["sign"] += t2 - t1
    out = {f"token_{k}_ms": 1000 * v / n for k, v in token.items()}
    out.update({f"software_{k}_ms": 1000 * v / n for k, v in software.items()})
    out["token_total_ms"] = sum(v for k, v in out.items() if k.startswith("token_") and not k.endswith("total_ms"))
    out["software_total_ms"] = out["software_generate_ms"] + out["software_sign_ms"]
    return out


def fill_probe(backend: Any, ref: Any, fill: int, count: int) -> dict[str, Any]:
    """Sequential EC HSM issuance on an empty token, then with `fill` extra key pairs in it."""
    from certpilot.domain.model import KeySpec
    from certpilot.keys import pkcs11_backend

    empty = timed_run(backend, "ec:p256", count, "fill-empty", 1, GROUP)
    ids = [uuid.uuid4().bytes for _ in range(fill)]
    t0 = time.perf_counter()
    for key_id in ids:
        pkcs11_backend.generate_key(ref, KeySpec.parse("ec:p256"), label="filler", key_id=key_id)
    fill_s = time.perf_counter() - t0
    try:
        full = timed_run(backend, "ec:p256", count, "fill-full", 1, GROUP)
        ops = key_ops(ref, "ec:p256", max(10, count))
    finally:
        for key_id in ids:
            pkcs11_backend.destroy_key(ref, key_id)
    return {"fill": fill, "count": count, "empty": empty, "full": full, "key_ops_full": ops,
            "fill_ms_per_key": 1000 * fill_s / fill}


def run_all(args: argparse.Namespace, backends: list[Any], ref: Any) -> dict[str, Any]:
    from _setup import log

    samples: dict[str, Any] = {}
    ops: dict[str, list[dict[str, float]]] = {key: [] for key in args.keys}
    for rep in range(args.repeat):
        for key in args.keys:
            n = args.rsa_count if key.startswith("rsa") else args.count
            short = key.split(":")[0]
            for backend in backends:
                for mode in args.modes:
                    threads = MODES[mode]
                    order = [("software", None), ("hsm", GROUP)]
                    if rep % 2:
                        order.reverse()
                    pair: dict[str, dict[str, float]] = {}
                    for kind, group in order:
                        tag = f"{short}-{kind}-{threads}-r{rep}"
                        log(f"[rep {rep + 1}/{args.repeat}] {key} {backend.name} {mode} {kind} ({n})")
                        pair[kind] = timed_run(backend, key, n, tag, threads, group)
                    pair["hsm"]["ratio"] = pair["hsm"]["rate"] / pair["software"]["rate"]
                    pair["hsm"]["cpu_ratio"] = pair["hsm"]["cpu_controller_ms"] / pair["software"]["cpu_controller_ms"]
                    for kind in ("software", "hsm"):
                        samples.setdefault(key, {}).setdefault(f"{backend.name}/{mode}", {}).setdefault(kind, []).append(
                            pair[kind])
            n_ops = args.ops or (2 * args.count if key.startswith("ec") else args.rsa_count)
            log(f"[rep {rep + 1}/{args.repeat}] {key} key operations alone ({n_ops})")
            ops[key].append(key_ops(ref, key, n_ops))
    return {"samples": samples, "key_ops": ops}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    def med(items: list[dict[str, float]], field: str) -> float | None:
        values = [i[field] for i in items if field in i]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {}
    for key, runs in raw["samples"].items():
        summary[key] = {}
        for label, kinds in runs.items():
            row: dict[str, Any] = {}
            for kind, items in kinds.items():
                row[kind] = {"rate": med(items, "rate"), "min": min(i["rate"] for i in items),
                             "max": max(i["rate"] for i in items),
                             **{f: med(items, f) for f in ("latency_median_ms", "cpu_controller_ms",
                                                           "cpu_scripts_ms", "cpu_database_ms")}}
            row["ratio"] = med(kinds["hsm"], "ratio")
            row["ratio_min"] = min(i["ratio"] for i in kinds["hsm"])
            row["ratio_max"] = max(i["ratio"] for i in kinds["hsm"])
            row["cpu_ratio"] = med(kinds["hsm"], "cpu_ratio")
            summary[key][label] = row
    summary["key_ops"] = {key: {f: statistics.median(s[f] for s in items) for f in items[0]}
                          for key, items in raw["key_ops"].items() if items}
    return summary


def format_report(result: dict[str, Any]) -> str:
    env, cfg, summary = result["environment"], result["config"], result["summary"]
    lines = [
        f"certpilot HSM benchmark, {env['date_utc']}, tree {env['git']}",
        f"machine: {env['nproc']} CPUs ({env['cpus_usable']} usable), {env['cpu_model']}; Python {env['python']}; "
        f"load average at start {env['loadavg_start'][0]:.2f}, at end {env['loadavg_end'][0]:.2f}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f", softhsm2 {result['softhsm']}",
    ]
    for name, text in result["backends"].items():
        lines.append(f"{name}: {text}")
    lines.append(f"SoftHSM token: {result['token_dir']}")
    lines.append(f"runs: {cfg['repeat']} repetition(s) of {cfg['count']} EC / {cfg['rsa_count']} RSA certificates per run; "
                 f"medians over repetitions, (min..max); timed runs took {result['timed_runs_s']:.0f} s")
    lines.append("")
    header = (f"{'key':9} {'run':24} {'software/s':>10} {'(min..max)':>13} {'HSM/s':>7} {'(min..max)':>13} "
              f"{'HSM/sw':>7} {'(min..max)':>12} {'ms sw':>7} {'ms HSM':>7} {'ctl CPU ms sw/HSM':>18}")
    lines += [header, "-" * len(header)]
    for key in cfg["keys"]:
        for label, row in summary[key].items():
            sw, hsm = row["software"], row["hsm"]
            lines.append(
                f"{key:9} {label:24} {sw['rate']:10.2f} {_span(sw):>13} {hsm['rate']:7.2f} {_span(hsm):>13} "
                f"{row['ratio']:7.3f} {_ratio_span(row):>12} "
                f"{1000 / sw['rate']:7.1f} {1000 / hsm['rate']:7.1f} "
                f"{sw['cpu_controller_ms']:8.1f}/{hsm['cpu_controller_ms']:<9.1f}")
        lines.append("")
    lines.append("HSM/sw: HSM rate over software rate, per repetition (runs back to back), median. ms: wall ms per")
    lines.append("certificate. ctl CPU: CPU of this process per certificate (SoftHSM runs inside it, as a library).")
    lines += ["", "key operations alone, one thread, ms per key pair (medians):",
              f"  {'key':9} {'token: generate':>16} {'sign':>7} {'destroy':>8} {'total':>8}   "
              f"{'pyca: generate':>15} {'sign':>7} {'total':>8}   {'token/pyca':>10}"]
    for key, o in summary["key_ops"].items():
        lines.append(f"  {key:9} {o['token_generate_ms']:16.2f} {o['token_sign_ms']:7.2f} {o['token_destroy_ms']:8.2f} "
                     f"{o['token_total_ms']:8.2f}   {o['software_generate_ms']:15.2f} {o['software_sign_ms']:7.2f} "
                     f"{o['software_total_ms']:8.2f}   {o['token_total_ms'] / o['software_total_ms']:10.1f}")
    probe = result.get("fill_probe")
    if probe:
        e, f, o = probe["empty"], probe["full"], probe["key_ops_full"]
        lines += ["", f"token size (SQLite, EC P-256, sequential, {probe['count']} certificates each):",
                  f"  empty token:                 {e['rate']:7.2f} certs/s, {1000 / e['rate']:7.1f} ms/cert",
                  f"  with {probe['fill']} more key pairs: {f['rate']:7.2f} certs/s, {1000 / f['rate']:7.1f} ms/cert; "
                  f"key ops then: generate {o['token_generate_ms']:.2f}, sign {o['token_sign_ms']:.2f}, "
                  f"destroy {o['token_destroy_ms']:.2f} ms",
                  f"  (filling took {probe['fill_ms_per_key']:.2f} ms per key pair)"]
    for message in result["skipped"]:
        lines.append(f"\nskipped: {message}")
    return "\n".join(lines)


def _span(s: dict[str, float]) -> str:
    return f"({s['min']:.1f}..{s['max']:.1f})"


def _ratio_span(row: dict[str, Any]) -> str:
    return f"({row['ratio_min']:.2f}..{row['ratio_max']:.2f})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="certpilot-bench-hsm-"))
    backends: list[Any] = []
    skipped: list[str] = []
    tokens: Path | None = None
    try:
        tokens = prepare_softhsm(root / "softhsm", Path(args.token_dir) if args.token_dir else None)

        import _setup
        from _setup import log
        from issue import environment

        from certpilot.domain.model import KeySpec
        from certpilot.keys import pkcs11_backend
        from certpilot.keys.pkcs11_backend import TokenRef
        from certpilot.services.hsm import add_group

        env = environment()
        result: dict[str, Any] = {"environment": env, "skipped": skipped, "softhsm": softhsm_version(),
                                  "token_dir": f"{tokens} on {filesystem_of(tokens)}, objectstore.backend = file",
                                  "config": {k: getattr(args, k) for k in ("count", "rsa_count", "repeat", "keys",
                                                                            "backends", "modes", "fill", "quick")}}
        ref = TokenRef(MODULE, TOKEN, PIN)
        local_ca = _setup.make_ca(root / "ca")
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
            add_group(backend.app, GROUP, module_path=MODULE, token_label=TOKEN, pin=PIN, actor=_setup.ACTOR)
            log(f"warming up {backend.name}: {backend.describe}")
            _setup.warm_up(backend.app, "warm", KeySpec.parse("ec:p256"))
            for key in args.keys:  # the PKCS#11 session is opened here, not in a timed run
                timed_run(backend, key, 2, f"warm-hsm-{key.split(':')[0]}", 1, GROUP)
        result["backends"] = {b.name: b.describe for b in backends}

        started = time.perf_counter()
        raw = run_all(args, backends, ref)
        result["timed_runs_s"] = time.perf_counter() - started
        result["raw"] = raw
        result["summary"] = summarise(raw)
        sqlite = [b for b in backends if b.name == "sqlite"]
        if args.fill and sqlite:
            log(f"token size probe: {args.fill} key pairs")
            result["fill_probe"] = fill_probe(sqlite[0], ref, args.fill, args.count)
        pkcs11_backend.close_sessions()
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for backend in backends:
                backend.close()
            shutil.rmtree(root, ignore_errors=True)
            if tokens is not None:
                shutil.rmtree(tokens, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    env["loadavg_end"] = os.getloadavg()
    report = format_report(result)
    print(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
