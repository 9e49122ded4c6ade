"""`certpilot serve --workers 2`: two uvicorn worker processes answer the API, and the
renewal loop runs once, in the parent, not once per worker. A worker that dies is
replaced; SIGTERM stops the parent, its loop and every worker.

SQLite only (this module's override of the root fixture): several processes on one
SQLite file is the case `--workers` is for on a single host.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from certpilot.config import Settings
from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from tests.support.api import RoleTokens, add_local_ca, certificate_body
from tests.support.processes import (
    certpilot_argv,
    cmdline,
    descendants,
    env_without_settings,
    free_port,
    is_alive,
    wait_for,
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'certpilot.db'}"


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self.proc, self.base_url, self.log = proc, base_url, log

    def workers(self) -> list[int]:
        """uvicorn's worker processes (spawned: `multiprocessing.spawn`)."""
        return sorted(p for p in descendants(self.proc.pid) if "spawn_main" in cmdline(p))

    def up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def died(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"certpilot serve exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')[-3000:]}"


@pytest.fixture
def served(api_app: App, settings: Settings, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # the settings as flags, not in the environment: they must reach the workers too
        proc = subprocess.Popen([*certpilot_argv(), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "2", "--data-dir", str(settings.data_dir),
                                 "--database-url", settings.effective_database_url],
                                env={**env_without_settings(), "CERTPILOT_RECONCILE_INTERVAL_S": "1"},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    server = Served(proc, f"http://127.0.0.1:{port}", log)
    left: set[int] = set()
    try:
        wait_for(server.up, timeout_s=60, what="certpilot serve --workers 2 answering", alive=server.died)
        wait_for(lambda: len(server.workers()) == 2, timeout_s=30, what="two worker processes", alive=server.died)
        left = descendants(proc.pid)
        yield server
    finally:
        left |= descendants(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in left:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def loop_owners(settings: Settings) -> list[str]:
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT owner FROM loop_heartbeats"))]
    finally:
        engine.dispose()


def test_two_workers_serve_the_api_and_one_loop_renews(served: Served, settings: Settings, tokens: RoleTokens,
                                                       test_ca: LocalCA) -> None:
    admin = tokens.headers(Role.ADMIN)
    with httpx.Client(base_url=served.base_url, headers=admin, timeout=30) as client:
        add_local_ca(client, admin, test_ca)
        r = client.post("/api/v1/certificates", json=certificate_body("www", sans=["DNS:www.example.test"]))
        assert r.status_code == 202, r.text

        def issued() -> bool:
            answer = client.get("/api/v1/certificates/www")
            assert answer.status_code == 200, answer.text
            return answer.json()["status"]["phase"] == "issued"

        # no ?wait: the renewal loop issues it, from the parent process
        wait_for(issued, timeout_s=60, what="the loop issuing www", interval_s=0.2, alive=served.died)
        for _ in range(20):  # keep-alive connections of several clients: every answer whole and authorised
            with httpx.Client(base_url=served.base_url, headers=tokens.headers(Role.VIEWER), timeout=30) as one:
                listed = one.get("/api/v1/certificates")
                assert listed.status_code == 200 and [c["name"] for c in listed.json()] == ["www"]
                assert one.get("/api/v1/certificates", headers={"Authorization": "Bearer nope"}).status_code == 401

    owners = loop_owners(settings)
    assert len(owners) == 1, f"one renewal loop, not one per worker: {owners}"
    assert f":{served.proc.pid}:" in owners[0], f"the loop runs in the parent {served.proc.pid}: {owners[0]}"
    assert served.log.read_text().count("renewal loop started") == 1


def test_a_dead_worker_is_replaced_and_sigterm_stops_everything(served: Served, settings: Settings,
                                                                tokens: RoleTokens) -> None:
    before = served.workers()
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(served.workers()) == 2 and before[0] not in served.workers(), timeout_s=30,
             what="a replacement worker", interval_s=0.2, alive=served.died)
    r = httpx.get(f"{served.base_url}/api/v1/certificates", headers=tokens.headers(Role.VIEWER), timeout=30)
    assert r.status_code == 200, r.text
    family = descendants(served.proc.pid)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    wait_for(lambda: not any(is_alive(p) for p in family), timeout_s=15, what="every worker gone")
    assert len(loop_owners(settings)) == 1
