"""CLI start-up: what a person waits for when typing `certpilot …`.

Runs, interleaved round after round so that the machine's load falls on all of them
alike, the installed console script (`.venv/bin/certpilot`) for

    help        certpilot --help
    list        certpilot cert list               (SQLite, 20 certificates)
    list-json   certpilot cert list --json        (the ordinary path: App, SQLAlchemy, services)
    show        certpilot cert show NAME
    bare        python -I -c "import sqlite3, json, argparse"   (the baseline)

and reports each one's median wall time and its ratio to the baseline's median
measured in the same run. The goal of issue 13: `cert list` <= 12x the baseline,
`--help` less. Also reports which heavy modules each command imported
(`python -X importtime`), which is what the ratios mostly come from.

    .venv/bin/python bench/cli.py                 # 15 rounds
    .venv/bin/python bench/cli.py --quick         # 3 rounds
    .venv/bin/python -m bench cli --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
HEAVY = ("sqlalchemy", "alembic", "pydantic", "pydantic_settings", "cryptography", "certpilot.services.app",
         "certpilot.store.session", "fastapi")
CERTIFICATES = 20


def certpilot() -> str:
    found = BIN / "certpilot"
    if not found.exists():
        sys.exit(f"no certpilot console script beside {sys.executable}: run `make venv`")
    return str(found)


def environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_")}
    env["CERTPILOT_DATA_DIR"] = str(data_dir)
    return env


def seed(data_dir: Path) -> None:
    """`init --demo` and CERTIFICATES issued through the demo profile (one process)."""
    env = environment(data_dir)
    subprocess.run([certpilot(), "init", "--demo"], env=env, check=True, capture_output=True)
    code = (
        "import sys\n"
        "from certpilot.config import Settings\n"
        "from certpilot.domain.model import make_subject\n"
        "from certpilot.services.app import App\n"
        "from certpilot.services import certificates, issuance\n"
        "app = App(Settings())\n"
        f"for n in range({CERTIFICATES}):\n"
        "    name = f'bench{n:02d}'\n"
        "    certificates.request_certificate(app, name, profile='demo', subject=make_subject(f'{name}.example.test'),"
        " actor='bench')\n"
        "    issuance.attempt(app, name, actor='bench')\n"
        "app.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


def commands() -> dict[str, list[str]]:
    return {
        "bare": [sys.executable, "-I", "-c", "import sqlite3, json, argparse"],
        "help": [certpilot(), "--help"],
        "list": [certpilot(), "cert", "list"],
        "list-json": [certpilot(), "cert", "list", "--json"],
        "show": [certpilot(), "cert", "show", "bench00"],
    }


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """The HEAVY modules `argv` (a certpilot command) imports, by `python -X importtime`."""
    if argv[0] != certpilot():
        return []
    code = f"import sys; sys.argv = {['certpilot', *argv[1:]]!r}; from certpilot.cli.main import run; run()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True,
                          check=False)
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in imported]


def run(rounds: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="certpilot-bench-cli-"))
    try:
        data_dir = work / "data"
        seed(data_dir)
        env = environment(data_dir)
        argvs = commands()
        for argv in argvs.values():  # warm the page cache and the bytecode caches
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        for _ in range(rounds):
            for name, argv in argvs.items():
                samples[name].append(timed(argv, env))
        bare = statistics.median(samples["bare"])
        result: dict[str, object] = {
            "rounds": rounds,
            "loadavg_start_end": None,
            "median_s": {name: round(statistics.median(s), 4) for name, s in samples.items()},
            "ratio_to_bare": {name: round(statistics.median(s) / bare, 2) for name, s in samples.items()},
            "heavy_imports": {name: heavy_imports(argv, env) for name, argv in argvs.items()},
            "raw_s": {name: [round(x, 4) for x in s] for name, s in samples.items()},
        }
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds (a smoke run)")
    parser.add_argument("--repeat", type=int, default=15, help="rounds of every command (default 15)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--postgres-url", help="accepted for the harness; this scenario runs on SQLite only")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.repeat
    load_start = os.getloadavg()
    result = run(rounds)
    result["loadavg_start_end"] = [load_start, os.getloadavg()]
    result["nproc"] = os.cpu_count()
    medians, ratios, heavy = result["median_s"], result["ratio_to_bare"], result["heavy_imports"]
    print(f"CLI start-up, {rounds} rounds, load {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"{'command':<11} {'median':>8} {'x bare':>7}  heavy imports")
    for name in medians:  # type: ignore[union-attr]
        print(f"{name:<11} {medians[name]:>7.3f}s {ratios[name]:>6.1f}x  "  # type: ignore[index]
              f"{', '.join(heavy[name]) or '-'}")  # type: ignore[index]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
