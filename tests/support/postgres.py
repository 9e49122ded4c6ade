"""Finding a PostgreSQL server for the tests, or starting a throwaway one."""

from __future__ import annotations

import glob
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.processes import free_port


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path | None = None  # set when this run started the cluster
    pg_ctl: str | None = None
    run_as: str | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def close(self) -> None:
        if self.data_dir is not None and self.pg_ctl is not None:
            _run(self.run_as, [self.pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "stop"])


def _reachable(host: str, port: int, user: str) -> bool:
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _run(user: str | None, argv: list[str]) -> None:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


def find_or_start_postgres(scratch: Path) -> PostgresServer | None:
    url = os.environ.get("CERTPILOT_TEST_POSTGRES_URL")
    if url:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return PostgresServer(parsed.host or "127.0.0.1", parsed.port or 5432, parsed.username or "postgres")
    if _reachable("127.0.0.1", 5432, "postgres"):
        return PostgresServer("127.0.0.1", 5432, "postgres")
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        return None
    bindir = Path(binaries[-1]).parent
    run_as = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
        run_as = "postgres"
        os.chmod(scratch, 0o777)
    data_dir, port = scratch / "cluster", free_port()
    _run(run_as, [str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    _run(run_as, [str(bindir / "pg_ctl"), "-D", str(data_dir), "-w", "-l", str(scratch / "log"),
                  "-o", f"-p {port} -k {scratch} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
    return PostgresServer("127.0.0.1", port, "postgres", data_dir, str(bindir / "pg_ctl"), run_as)


__all__ = ["PostgresServer", "find_or_start_postgres"]
