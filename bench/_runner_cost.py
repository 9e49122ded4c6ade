"""What one call through the script runner costs, against starting a fresh interpreter.

The runner keeps `workers` pre-started worker processes (`python -I -m
certpilot.issuers.worker`, with cryptography, json, ssl already imported); each
call is a JSON message to an idle worker, which forks a child from its
initialised interpreter, runs the script there, reaps it and answers. A design
that started a fresh interpreter per call would pay at least
`python -I -c pass`, and more to import what scripts use.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from certpilot.issuers.runner import ScriptCall, ScriptRunner

CONSTANT_SCRIPT = 'def certificate_request(csr, common_name, args_dict):\n    return "constant"\n'
WORKER_PRELOAD = "import cryptography.x509, cryptography.hazmat.primitives.serialization, json, ssl, certpilot.issuer"


def runner_calls(runner: ScriptRunner, count: int) -> dict[str, float]:
    """Median per-call ms of a trivial script through `runner.call`, and the part
    the worker itself measured (fork of the child to its reaping)."""
    call = ScriptCall(script_name="constant", source=CONSTANT_SCRIPT, timeout_s=60, csr_pem="",
                      common_name="bench.test", args={}, secrets=())
    for _ in range(5):  # warm: the worker exists, the path is hot
        runner.call(call)
    round_trips, in_worker = [], []
    for _ in range(count):
        started = time.perf_counter()
        result = runner.call(call)
        round_trips.append(time.perf_counter() - started)
        if result.pem != "constant":
            raise RuntimeError(f"trivial script call failed: {result.error}")
        in_worker.append(result.duration_s)
    return {
        "call_ms": 1000 * statistics.median(round_trips),
        "call_mean_ms": 1000 * statistics.fmean(round_trips),
        "in_worker_ms": 1000 * statistics.median(in_worker),
    }


def fresh_interpreter(count: int, code: str = "pass") -> float:
    """Median ms of `subprocess.run([sys.executable, "-I", "-c", code])`."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(runner: ScriptRunner, calls: int, spawns: int) -> dict[str, Any]:
    figures: dict[str, Any] = runner_calls(runner, calls)
    figures["fresh_interpreter_ms"] = fresh_interpreter(spawns)
    figures["fresh_interpreter_with_preload_ms"] = fresh_interpreter(spawns, WORKER_PRELOAD)
    return figures


# --- what a warmed worker would save ----------------------------------------------------

# What a warm-up at the end of the worker's `_preload` could do: use OpenSSL once
# (EC and RSA sign + verify, an encrypted PEM) so each forked child inherits
# initialised state instead of paying OpenSSL's first-use cost itself.
WARM_WORKER = """\
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
for key in (ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(public_exponent=65537, key_size=2048)):
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warm-up")])).sign(key, hashes.SHA256())
    assert x509.load_pem_x509_csr(csr.public_bytes(serialization.Encoding.PEM)).is_signature_valid
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"warm-up"))
    serialization.load_pem_private_key(pem, password=b"warm-up")
import datetime, secrets
from certpilot.issuers.worker import main
main()
"""


def stock_vs_warmed_worker(source: str, args: dict[str, str], secrets: tuple[str, ...],
                           csrs: list[tuple[str, str]]) -> dict[str, float]:
    """Median ms of real script calls (the bundled local-CA script, one worker) with the
    stock worker, and with the same worker started through `WARM_WORKER`.

    The second runner is made by rewriting, for its start only, the worker's command
    line `-m certpilot.issuers.worker` into `-c WARM_WORKER`; certpilot is not edited.
    """
    real_popen = subprocess.Popen

    def warm_popen(argv: list[str], *a: Any, **kw: Any) -> Any:
        if list(argv[-2:]) == ["-m", "certpilot.issuers.worker"]:
            argv = [*argv[:-2], "-c", WARM_WORKER]
        return real_popen(argv, *a, **kw)

    start = ScriptCall("constant", CONSTANT_SCRIPT, 60, "", "x", {}, ())
    stock = ScriptRunner(1)
    try:
        stock.call(start)
        subprocess.Popen = warm_popen  # type: ignore[misc]  # only while the worker starts
        try:
            warmed = ScriptRunner(1)
            warmed.call(start)
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]
        try:
            times: dict[str, list[float]] = {"stock_ms": [], "warmed_ms": []}
            for i, (csr, host) in enumerate(csrs):  # alternate, so drift hits both alike
                call = ScriptCall("local-ca", source, 60, csr, host, dict(args), secrets)
                for label, runner in (("stock_ms", stock), ("warmed_ms", warmed)):
                    started = time.perf_counter()
                    result = runner.call(call)
                    elapsed = time.perf_counter() - started
                    if result.pem is None:
                        raise RuntimeError(f"local-CA script call failed: {result.error}")
                    if i >= 3:
                        times[label].append(elapsed)
        finally:
            warmed.close()
    finally:
        stock.close()
    return {label: 1000 * statistics.median(values) for label, values in times.items()}
