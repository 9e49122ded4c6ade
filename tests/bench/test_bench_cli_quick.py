"""The CLI start-up benchmark's smoke run (`bench/cli.py --quick`), so that it cannot rot:
it runs to the end and gives a median and a ratio for every command. No timing is
asserted; only what does not depend on the load: `--help` and `cert list` (SQLite)
import none of the heavy modules, and `cert show` does (it opens the App)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_benchmark_quick_run_gives_figures(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    done = subprocess.run([sys.executable, "-m", "bench", "cli", "--quick", "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-5000:]}"
    assert "x bare" in done.stdout
    result = json.loads(out.read_text())
    commands = {"bare", "help", "list", "list-json", "show"}
    assert set(result["median_s"]) == commands and set(result["ratio_to_bare"]) == commands
    assert all(value > 0 for value in result["median_s"].values())
    assert result["ratio_to_bare"]["bare"] == 1.0
    assert all(len(samples) == 3 for samples in result["raw_s"].values())
    assert result["heavy_imports"]["help"] == [] and result["heavy_imports"]["list"] == []
    assert "sqlalchemy" in result["heavy_imports"]["show"]
