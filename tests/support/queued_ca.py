"""An issuer script for a CA that queues each request for an approver (deferred issuance).

`certificate_request` writes the CSR to `<queue_dir>/<id>.csr` (a submission: the
test counts them) and raises `Pending(retry_after_s, cookie=<id>)`;
`certificate_poll(cookie, ...)` appends the cookie to `<queue_dir>/polls.log`, then
issues (signs with the test CA, the bundled local-CA logic) once `<id>.approved`
exists, raises when `<id>.rejected` exists, hangs while `<queue_dir>/hang` exists, and
raises `Pending` again otherwise.
The queue directory must be granted to the script (`allow_write`).
"""

from __future__ import annotations

from pathlib import Path

from certpilot.services.setup import bundled_local_ca_source

_QUEUE = '''

import os as _os
import uuid as _uuid

from certpilot.issuer import Pending


def certificate_request(csr, common_name, args_dict):
    queue = args_dict["queue_dir"]
    request_id = _uuid.uuid4().hex
    with open(_os.path.join(queue, request_id + ".csr"), "x") as f:
        f.write(csr)
    print("queued request", request_id, "for an approver")
    raise Pending(retry_after_s=int(args_dict.get("retry_after_s") or 1), cookie=request_id)


def certificate_poll(cookie, args_dict, context=None):
    queue = args_dict["queue_dir"]
    with open(_os.path.join(queue, "polls.log"), "a") as f:
        f.write(cookie + "\\n")
    if _os.path.exists(_os.path.join(queue, "hang")):  # the CA does not answer: the call's timeout ends it
        import time as _time
        _time.sleep(3600)
    if _os.path.exists(_os.path.join(queue, cookie + ".rejected")):
        raise RuntimeError("the approver rejected request " + cookie)
    if not _os.path.exists(_os.path.join(queue, cookie + ".approved")):
        raise Pending(retry_after_s=int(args_dict.get("retry_after_s") or 1))
    with open(_os.path.join(queue, cookie + ".csr")) as f:
        csr = f.read()
    return _sign(csr, "", args_dict)
'''


def queued_ca_source() -> str:
    """The bundled local-CA script with its signing function renamed `_sign`, and the
    queueing `certificate_request` / `certificate_poll` above."""
    source = bundled_local_ca_source()
    assert "def certificate_request(" in source
    return source.replace("def certificate_request(", "def _sign(") + _QUEUE


def submissions(queue_dir: Path) -> list[Path]:
    """The CSRs the CA received, one file per submission."""
    return sorted(queue_dir.glob("*.csr"))


def polls(queue_dir: Path) -> list[str]:
    """The cookies of every poll the CA saw, in order."""
    log = queue_dir / "polls.log"
    return log.read_text().split() if log.exists() else []


def approve(queue_dir: Path, cookie: str) -> None:
    (queue_dir / f"{cookie}.approved").touch()


def reject(queue_dir: Path, cookie: str) -> None:
    (queue_dir / f"{cookie}.rejected").touch()
