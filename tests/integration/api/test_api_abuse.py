"""A real `certpilot serve` on loopback under abuse (issue 12): bodies refused before
they are read, and a flood of bad logins from many addresses that neither stalls
authorised requests and probes nor grows the server without bound.

SQLite only: what is tested is the HTTP edge and the process, not the database.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from certpilot.config import Settings
from certpilot.domain.model import Role
from certpilot.services.app import App
from tests.support.api import RoleTokens
from tests.support.processes import ServerProcess, descendants

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FLOOD_CLIENTS = 50
FLOOD_LOGINS = 100
HANG_S = 30.0  # only a hang detector: a refused body is answered without being sent at all


@pytest.fixture
def server(api_app: App, settings: Settings, tokens: RoleTokens, tmp_path: Path) -> Iterator[ServerProcess]:
    started = ServerProcess.start(settings, tmp_path)
    try:
        yield started
    finally:
        seen = descendants(started.proc.pid) if started.proc.poll() is None else set()
        started.clean_up(seen)


def raw_request(server: ServerProcess, head: str, body: bytes = b"") -> str:
    """Send `head` (and `body`) on a plain socket and return the status line of the answer.
    A server that waits for a body it was promised never answers: HANG_S ends the wait."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HANG_S) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return "no answer"
    return answer.split(b"\r\n", 1)[0].decode()


def test_bodies_are_refused_before_they_are_read(server: ServerProcess) -> None:
    promised = [
        ("/api/v1/scripts", "application/json", 50 * 1024 * 1024),  # 50 MB, never sent
        ("/api/v1/certificates", "application/json", 1024 * 1024 + 1),
        ("/login", "application/x-www-form-urlencoded", 64 * 1024 + 1),
        ("/scripts", "multipart/form-data; boundary=x", 3 * 1024 * 1024),
    ]
    for path, content_type, length in promised:
        status = raw_request(server, f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
                                     f"Content-Length: {length}\r\n\r\n")
        assert " 413 " in status, f"POST {path} promising {length} bytes: {status!r}"

    # chunked: no length is promised, the bytes are counted as they come
    chunk = b"a=" + b"x" * 8190
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"  # 128 KiB
    status = raw_request(server, "POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded"
                                 "\r\nTransfer-Encoding: chunked\r\n\r\n", chunked)
    assert " 413 " in status, status
    # a body within the limit is still read and judged on what it says
    r = httpx.post(f"{server.base_url}/api/v1/scripts", json={"name": "x", "source": "y" * 1000}, timeout=HANG_S)
    assert r.status_code == 401


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_login_flood_from_many_addresses_stalls_nothing(server: ServerProcess, tokens: RoleTokens) -> None:
    answers: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def bad_logins(client_no: int) -> None:
        # a new source address per client (127.0.0.2, .3, …): a per-address throttle alone would not hold
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{client_no + 2}")
        with httpx.Client(transport=transport, base_url=server.base_url, timeout=120.0) as http:
            go.wait()
            for _ in range(FLOOD_LOGINS // FLOOD_CLIENTS):
                r = http.post("/api/v1/tokens", json={}, auth=(f"nobody-{uuid.uuid4().hex[:8]}", "wrong-password-1"))
                with lock:
                    answers.append(r.status_code)
                    if r.status_code == 429:
                        retry_after.append(r.headers.get("retry-after", ""))

    flood = [threading.Thread(target=bad_logins, args=(n,)) for n in range(FLOOD_CLIENTS)]
    for thread in flood:
        thread.start()
    served: list[tuple[str, int]] = []
    with httpx.Client(base_url=server.base_url, timeout=HANG_S) as http:
        go.set()
        while any(t.is_alive() for t in flood):
            served.append(("/healthz", http.get("/healthz").status_code))
            served.append(("/api/v1/certificates",
                           http.get("/api/v1/certificates", headers=tokens.headers(Role.VIEWER)).status_code))
    for thread in flood:
        thread.join()

    assert len(answers) == FLOOD_LOGINS and set(answers) <= {401, 429}, sorted(set(answers))
    assert 429 in answers, "more password checks ran at once than the bound allows"
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
    assert served and all(status == 200 for _, status in served), served
    # argon2 takes 64 MiB a hash: bounded hashing keeps the server far from 45 x 64 MiB
    assert peak_rss_kib(server.proc.pid) < 768 * 1024, f"peak RSS {peak_rss_kib(server.proc.pid)} KiB"


FORGED = "2026-01-01 00:00:00,000 INFO certpilot.api: admin logged in from 10.0.0.1"
MULTILINE_SCRIPT = f'''
def certificate_request(csr, common_name, args_dict):
    raise RuntimeError("the CA is down\\n{FORGED}\\r\\n\\x1b[2Jscreen cleared")
'''


def test_multi_line_script_output_stays_on_one_line_of_the_server_log(
    server: ServerProcess, tokens: RoleTokens
) -> None:
    admin = tokens.headers(Role.ADMIN)
    with httpx.Client(base_url=server.base_url, timeout=HANG_S, headers=admin) as http:
        assert http.post("/api/v1/scripts", json={"name": "liar", "source": MULTILINE_SCRIPT}).status_code == 201
        assert http.post("/api/v1/profiles", json={"name": "liar", "script": "liar"}).status_code == 201
        r = http.post("/api/v1/certificates", json={"name": "forger", "spec": {
            "profile": "liar", "subject": {"common_name": "forger.example.test"}}})
        assert r.status_code == 202, r.text
        for _ in range(600):  # the server's renewal loop makes the attempt and logs its failure
            if "forger" in server.stderr() and "the CA is down" in server.stderr():
                break
            threading.Event().wait(0.1)
    log = server.stderr()
    assert "the CA is down" in log, log[-3000:]
    assert not any(line.startswith(FORGED) for line in log.splitlines()), "a script forged a line of the log"
    assert "\x1b" not in log
    line = next(line for line in log.splitlines() if "the CA is down" in line)
    assert "\\n" + FORGED in line, line
