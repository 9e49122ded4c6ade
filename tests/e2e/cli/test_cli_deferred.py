"""A deferred certificate through the console script: `cert request --wait` reports that
the CA accepted the request and when it is polled next, `cert show` shows it awaiting the
CA, `profile show` the profile's max pending days."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.pki.local_ca import LocalCA
from tests.support.cli import Cli
from tests.support.queued_ca import queued_ca_source, submissions
from tests.support.script_access import scripts_directory


@pytest.fixture
def queue() -> Iterator[Path]:
    with scripts_directory() as shared:
        directory = shared / "queue"  # granted through its parent
        directory.mkdir()
        directory.chmod(0o1777)
        yield directory


def test_a_deferred_request_is_reported_awaiting_the_ca(cli: Cli, tmp_path: Path, queue: Path,
                                                        test_ca: LocalCA) -> None:
    cli.ok("init")
    source = tmp_path / "queued.py"
    source.write_text(queued_ca_source())
    cli.ok("script", "add", "queued-ca", "--file", source)
    cli.ok("profile", "create", "approvals", "--script", "queued-ca", "--max-pending-days", "7",
           "--param", f"ca_cert={test_ca.cert_path.read_text()}",
           "--sensitive-param", f"ca_key={test_ca.key_path.read_text()}",
           "--sensitive-param", f"ca_key_password={test_ca.password}",
           "--param", f"queue_dir={queue}", "--param", "retry_after_s=300", "--allow-write", str(queue.parent))

    requested = cli.ok("cert", "request", "web1", "--profile", "approvals", "--cn", "web1.example.test", "--wait")

    assert "web1: awaiting the CA since" in requested.stdout and "next poll at" in requested.stdout
    assert len(submissions(queue)) == 1
    shown = cli.ok("cert", "show", "web1").stdout
    assert "deferred" in shown and "awaiting the CA" in shown and "0 poll(s) so far" in shown
    view = cli.json("cert", "show", "web1", "--json")
    assert view["status"]["phase"] == "deferred" and view["status"]["awaiting_ca"]["polls"] == 0
    assert cli.json("profile", "show", "approvals", "--json")["max_pending_days"] == 7
    assert test_ca.password not in cli.all_output()
