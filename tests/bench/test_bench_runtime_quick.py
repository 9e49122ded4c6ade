"""The script-runtime benchmark's smoke run (`bench/runtime.py --quick`) on SQLite, so that
the benchmark cannot rot: it must run to the end and give figures. No timing is asserted
(the machine may be loaded); only what the runtime promises whatever the load: a slow CA
gets a profile's whole concurrency (16 calls) in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # the benchmark runs with certpilot's defaults, whatever this run's CERTPILOT_* say
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}


@pytest.mark.slow
def test_runtime_benchmark_quick_run_gives_figures(tmp_path: Path) -> None:
    out = tmp_path / "runtime.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "runtime.py"), "--quick", "--databases", "sqlite", "--json", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert "drain EC P-256" in done.stdout

    result = json.loads(out.read_text())
    assert result["environment"]["nproc"] >= 1 and result["environment"]["loadavg_end"]
    assert list(result["raw"]) == ["sqlite"]
    summary = result["summary"]["sqlite"]

    def median(key: str) -> float:
        assert key in summary, f"{key} missing from the summary"
        return summary[key]["median"]

    for key in ("drain_ec.certs_per_s", "drain_ec.controller_cpu_ms", "drain_ec.bound_1thread_per_s",
                "drain_ec.ratio_to_2process_bound", "drain_rsa.certs_per_s", "drain_rsa.keygen_1thread_per_s",
                "drain_rsa.ratio_to_keygen_bound", "slow.certs_per_s", "slow.memory.pss_per_call_mb",
                "slow.memory.rss_per_call_mb", "two.fast_alone_s", "two.fast_with_slow_s"):
        assert median(key) > 0, key
    assert median("slow.in_flight_max") >= 16  # the default profile concurrency against a 0.5 s CA
    assert median("slow.memory.in_flight") >= 1
    assert result["raw"]["sqlite"][0]["slow"]["memory"]["hosts"] >= 1


def test_bench_harness_knows_the_runtime_scenario() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "runtime", "--help"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--databases" in done.stdout
    listing = subprocess.run([sys.executable, "-m", "bench"], cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=60)
    for name in ("issue", "renewal", "api", "hsm", "runtime"):
        assert name in listing.stdout


def test_a_full_run_keeps_its_figures_in_a_dated_results_file() -> None:
    sys.path.insert(0, str(REPO))
    try:
        from bench.__main__ import results_file, scenario_flags
    finally:
        sys.path.remove(str(REPO))
    import datetime as dt

    dated = results_file("api", dt.date(2026, 12, 3))
    assert dated == REPO / "bench" / "results" / "api-2026-12-03.json"
    assert scenario_flags("api", ["--rows", "10"])[:2] == ["--rows", "10"]
    assert scenario_flags("api", ["--rows", "10"])[2:] == ["--json", str(results_file("api"))]
    for own_choice in (["--json", "x.json"], ["--json=x.json"], ["--quick"], ["--help"]):
        assert scenario_flags("api", own_choice) == own_choice, "a run's own --json/--quick/--help is left alone"
