"""Probe, run as `python -I bench/_cold_start.py < csrs.json`: what a script child
pays for crypto the worker never did before forking.

It does what a script worker does at start (`certpilot.issuers.worker._preload`:
imports only), then forks children that parse a CSR and check its signature
twice, timing each step. Then the parent checks one signature of each kind
itself and forks again. Prints JSON: medians in ms per key type, cold and warm.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

FORKS = 7


def main() -> None:
    csrs: dict[str, str] = json.load(sys.stdin)
    from certpilot.issuers.worker import _preload

    _preload()
    from cryptography import x509

    def steps(pem: bytes) -> list[float]:
        t0 = time.perf_counter()
        request = x509.load_pem_x509_csr(pem)
        t1 = time.perf_counter()
        assert request.is_signature_valid
        t2 = time.perf_counter()
        assert request.is_signature_valid
        t3 = time.perf_counter()
        return [1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (t3 - t2)]

    def in_child(pem: bytes) -> list[float]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write_fd, json.dumps(steps(pem)).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        data = os.read(read_fd, 4096)
        os.waitpid(pid, 0)
        os.close(read_fd)
        return json.loads(data)

    def medians(pem: bytes) -> dict[str, float]:
        runs = [in_child(pem) for _ in range(FORKS)]
        return {
            "parse_ms": statistics.median(r[0] for r in runs),
            "first_verify_ms": statistics.median(r[1] for r in runs),
            "second_verify_ms": statistics.median(r[2] for r in runs),
        }

    result: dict[str, dict[str, dict[str, float]]] = {"cold": {}, "warm": {}}
    for key, pem in csrs.items():
        result["cold"][key] = medians(pem.encode())
    for pem in csrs.values():  # what a warm-up in _preload would do
        assert x509.load_pem_x509_csr(pem.encode()).is_signature_valid
    for key, pem in csrs.items():
        result["warm"][key] = medians(pem.encode())
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
