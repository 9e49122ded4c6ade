"""Where the time of one issuance goes: an instrumented sequential pass.

Nothing in certpilot is edited: for the pass only, this wraps the crypto helpers
that `certpilot.services.issuance` imported, the App's script runner, and the
engine's DB-API calls (cursor execute, commit, rollback, pre-ping), and restores
them afterwards. The instrumented pass is not one of the timed runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from certpilot.domain.model import KeySpec
from certpilot.issuers.runner import ScriptCall
from certpilot.services import issuance
from certpilot.services.app import App

import _setup

# issuance-module names wrapped when present (the module is being worked on; a
# missing name is reported, not an error)
CRYPTO_STEPS = {
    "generate_private_key": "key generation",
    "build_csr": "CSR build + signature",
    "seal_private_key": "key sealing (PKCS#8 + AES-GCM)",
    "check_issued": "checks on the result (parse, verify)",
}


class Recorder:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, what: str, seconds: float) -> None:
        with self._lock:
            self.seconds[what] += seconds
            self.counts[what] += 1

    def wrap(self, what: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.add(what, time.perf_counter() - started)

        return timed


@contextmanager
def instrumented(app: App, rec: Recorder) -> Iterator[list[str]]:
    """Install the probes; yields the names of the steps that could not be wrapped."""
    missing: list[str] = []
    saved_module: dict[str, Any] = {}
    for attr, label in CRYPTO_STEPS.items():
        if hasattr(issuance, attr):
            saved_module[attr] = getattr(issuance, attr)
            setattr(issuance, attr, rec.wrap(label, saved_module[attr]))
        else:
            missing.append(attr)

    runner = app.runner
    real_call = runner.call

    def call(script_call: ScriptCall) -> Any:
        started = time.perf_counter()
        result = real_call(script_call)
        rec.add("script call: round trip", time.perf_counter() - started)
        rec.add("script call: in the worker (fork..reap)", result.duration_s)
        return result

    runner.call = call  # type: ignore[method-assign]

    engine = app.db.engine
    dialect = engine.dialect
    saved_dialect = {name: getattr(dialect, name) for name in ("do_commit", "do_rollback", "do_ping")}
    dialect.do_commit = rec.wrap("db: COMMIT", saved_dialect["do_commit"])  # type: ignore[method-assign]
    dialect.do_rollback = rec.wrap("db: ROLLBACK", saved_dialect["do_rollback"])  # type: ignore[method-assign]
    dialect.do_ping = rec.wrap("db: pre-ping", saved_dialect["do_ping"])  # type: ignore[method-assign]

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        rec.add(f"db: {verb}", time.perf_counter() - conn.info.pop("bench_started"))

    def checkout(*args: Any) -> None:
        with rec._lock:
            rec.counts["db: connection checkouts"] += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield missing
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        event.remove(engine.pool, "checkout", checkout)
        for name, value in saved_dialect.items():
            setattr(dialect, name, value)
        del runner.call
        for attr, value in saved_module.items():
            setattr(issuance, attr, value)


def run(app: App, key: KeySpec, count: int, tag: str, threads: int = 1) -> dict[str, Any]:
    """Per-certificate means (ms) and counts over `count` issuances on `threads` threads.

    With 1 thread the parts add up to the wall time and `rest_ms` is what no probe
    saw (SQLAlchemy ORM work, certpilot's own Python, the event log...). With more
    threads the parts are summed over threads and overlap; `rest_ms` is None.
    """
    rec = Recorder()

    def one(item: tuple[str, str]) -> None:
        name, host = item
        t0 = time.perf_counter()
        _setup.request_certificate(app, name, profile=_setup.PROFILE, subject=_setup.make_subject(host),
                                   key=key, actor=_setup.ACTOR)
        t1 = time.perf_counter()
        report = _setup.attempt(app, name, actor=_setup.ACTOR)
        t2 = time.perf_counter()
        if report.outcome is not _setup.Outcome.ISSUED:
            raise _setup.BenchError(f"{name}: {report.outcome.value}: {report.error}")
        rec.add("service: request_certificate", t1 - t0)
        rec.add("service: attempt", t2 - t1)

    with instrumented(app, rec) as missing:
        started = time.perf_counter()
        if threads == 1:
            for item in _setup.names(tag, count):
                one(item)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(one, _setup.names(tag, count)))
        wall = time.perf_counter() - started

    ms = {k: 1000 * v / count for k, v in rec.seconds.items()}
    per_cert = {k: v / count for k, v in rec.counts.items()}
    db_exec = sum(v for k, v in ms.items() if k.startswith("db: "))
    accounted = sum(ms.get(label, 0.0) for label in CRYPTO_STEPS.values()) + ms.get("script call: round trip", 0.0) + db_exec
    total = 1000 * wall / count
    return {
        "count": count,
        "threads": threads,
        "total_ms": total,
        "ms": dict(sorted(ms.items())),
        "per_cert": dict(sorted(per_cert.items())),
        "db_driver_ms": db_exec,
        "rest_ms": total - accounted if threads == 1 else None,
        "not_wrapped": missing,
    }


# --- the script's own work, in this process ----------------------------------------


def script_in_process(ca_args: dict[str, str], source: str, key_spec: str, count: int) -> dict[str, float]:
    """The bundled script's function run here (no worker, no fork), and its parts."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    import _bound

    started = time.perf_counter()
    namespace: dict[str, Any] = {"__name__": "bench_script"}
    for _ in range(20):
        namespace = {"__name__": "bench_script"}
        exec(compile(source, "<script local-ca>", "exec"), namespace)
    compile_ms = 1000 * (time.perf_counter() - started) / 20

    csrs = []
    for i in range(count):
        key = _bound.generate_key(key_spec)
        host = f"h{i}.inproc.bench.test"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        csrs.append((csr.public_bytes(serialization.Encoding.PEM).decode(), host))

    started = time.perf_counter()
    for _ in range(count):
        namespace["_load_ca"](ca_args)
    load_ms = 1000 * (time.perf_counter() - started) / count

    started = time.perf_counter()
    for csr, host in csrs:
        namespace["certificate_request"](csr, host, dict(ca_args))
    call_ms = 1000 * (time.perf_counter() - started) / count
    return {"compile_and_exec_source_ms": compile_ms, "load_ca_files_ms": load_ms, "certificate_request_ms": call_ms}
