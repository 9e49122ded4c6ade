"""The benchmark harness: `python -m bench SCENARIO [flags]`, from the repository root.

Each scenario is one of the scripts in this directory, run as if it had been
started directly (`.venv/bin/python bench/SCENARIO.py [flags]`): the flags go to
it unchanged, `python -m bench SCENARIO --help` lists them. Common to all:
`--quick` (a smoke run), `--json` (figures as JSON), `--repeat`, and the
PostgreSQL server in `--postgres-url` / $CERTPILOT_BENCH_POSTGRES_URL.

A full run started here keeps its figures: without `--json` or `--quick`, they
go to `bench/results/SCENARIO-YYYY-MM-DD.json` (UTC date), beside the earlier
runs, so bench/README.md can cite the file each table came from.
"""

from __future__ import annotations

import datetime as dt
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCENARIOS = {
    "issue": ("issue.py", "certificates per second through the services, against the crypto bound"),
    "renewal": ("renewal.py", "`certpilot worker` processes renewing due certificates; finding due work"),
    "api": ("api.py", "the HTTP API under concurrent clients at 100,000 certificates"),
    "hsm": ("hsm.py", "issuance with keys in a PKCS#11 token (SoftHSM2)"),
    "runtime": ("runtime.py", "the renewal loop through warm sandboxed script hosts; slow CA; memory per call"),
    "cli": ("cli.py", "CLI start-up (--help, cert list, cert show) against a bare Python start"),
    "acme": ("acme.py", "the bundled ACME script against Pebble, next to the plain acme library client"),
}


def usage() -> str:
    width = max(map(len, SCENARIOS))
    lines = ["usage: python -m bench SCENARIO [flags]   (python -m bench SCENARIO --help for its flags)", "",
             "scenarios:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in SCENARIOS.items()]
    return "\n".join(lines)


def results_file(name: str, today: dt.date | None = None) -> Path:
    """Where a full run of `name` keeps its figures: one file per scenario and UTC day."""
    day = today or dt.datetime.now(dt.timezone.utc).date()
    return HERE / "results" / f"{name}-{day.isoformat()}.json"


def scenario_flags(name: str, flags: list[str]) -> list[str]:
    """The flags given, plus `--json` to the dated results file for a full run."""
    if {"--json", "--quick", "-h", "--help"} & {flag.split("=")[0] for flag in flags}:
        return list(flags)
    return [*flags, "--json", str(results_file(name))]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SCENARIOS:
        print(f"unknown scenario {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    script = HERE / SCENARIOS[name][0]
    sys.argv = [str(script), *scenario_flags(name, rest)]
    runpy.run_path(str(script), run_name="__main__")  # the script ends with sys.exit(main())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
