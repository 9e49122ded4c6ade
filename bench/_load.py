"""Child process of `api.py`: HTTP load from a separate process, with an async httpx client.

Reads one JSON object on stdin:

    {"base_url": "http://127.0.0.1:PORT", "token": "...", "seed": 1,
     "scenarios": [{"name": ..., "path": "/api/v1/...", "random_names": null | {"prefix": ..., "count": N},
                    "concurrency": 8, "requests": 2000, "time_bound_s": 15, "warmup": 50}, ...]}

Each scenario is a closed loop: `concurrency` tasks share one httpx.AsyncClient
(HTTP/1.1 keep-alive, at most `concurrency` connections), each sends its next
request as soon as its previous answer is read, until `requests` were sent or
`time_bound_s` has passed. `warmup` requests go first and are not counted.
Only 127.0.0.1 is accepted as the target. Writes one JSON object on stdout:
per scenario the latencies' percentiles, requests/s, status counts, and this
process's CPU time.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


async def run_scenario(client: httpx.AsyncClient, sc: dict, rng: random.Random) -> dict:
    names = sc.get("random_names")

    def next_path() -> str:
        if names:
            return sc["path"].format(name=f"{names['prefix']}-{rng.randrange(names['count']):07d}")
        return sc["path"]

    async def phase(total: int, bound_s: float, record: bool) -> tuple[list[float], Counter, float, int]:
        latencies: list[float] = []
        statuses: Counter = Counter()
        sent = 0
        started = time.perf_counter()
        deadline = started + bound_s

        async def worker() -> None:
            nonlocal sent
            while sent < total and time.perf_counter() < deadline:
                sent += 1
                path = next_path()
                t0 = time.perf_counter()
                try:
                    response = await client.get(path)
                    await response.aread()
                    status = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latency = time.perf_counter() - t0
                statuses[status] += 1
                if record:
                    latencies.append(latency)

        await asyncio.gather(*(worker() for _ in range(sc["concurrency"])))
        return latencies, statuses, time.perf_counter() - started, sent

    if sc.get("warmup"):
        await phase(sc["warmup"], sc["time_bound_s"], False)
    cpu0 = time.process_time()
    latencies, statuses, elapsed, sent = await phase(sc["requests"], sc["time_bound_s"], True)
    cpu = time.process_time() - cpu0
    latencies.sort()
    ok = statuses.get(200, 0)
    return {
        "name": sc["name"], "concurrency": sc["concurrency"], "requests": len(latencies), "ok": ok,
        "statuses": {str(k): v for k, v in statuses.items()}, "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000 * percentile(latencies, 0.50), "p90_ms": 1000 * percentile(latencies, 0.90),
        "p99_ms": 1000 * percentile(latencies, 0.99), "max_ms": 1000 * latencies[-1] if latencies else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else None,
        "time_bound_hit": sent < sc["requests"],
        "client_cpu_ms_per_request": 1000 * cpu / len(latencies) if latencies else None,
    }


async def main() -> None:
    cfg = json.load(sys.stdin)
    if urlsplit(cfg["base_url"]).hostname != "127.0.0.1":
        raise SystemExit("the load generator only talks to 127.0.0.1")
    rng = random.Random(cfg.get("seed", 1))
    results = []
    for sc in cfg["scenarios"]:
        limits = httpx.Limits(max_connections=sc["concurrency"], max_keepalive_connections=sc["concurrency"])
        headers = {"Authorization": f"Bearer {cfg['token']}"} if sc.get("auth", True) else {}
        async with httpx.AsyncClient(base_url=cfg["base_url"], headers=headers, limits=limits,
                                     timeout=httpx.Timeout(60.0), trust_env=False) as client:
            results.append(await run_scenario(client, sc, rng))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
