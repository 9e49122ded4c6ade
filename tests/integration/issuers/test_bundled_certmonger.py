"""The bundled `certmonger` script runs a certmonger-style CA helper (shell + openssl,
written here) unchanged, in the real sandbox: SUBMIT that defers (exit 1 with a cookie),
POLL that defers with a delay (exit 5), POLL that issues (exit 0), a rejection (exit 2)
reported in the helper's own words, and a helper that issues at once. SQLite and
PostgreSQL."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certpilot.domain.model import Outcome, Phase, ProfileParam, make_subject
from certpilot.issuers.bundled import bundled_source
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.local_ca import LocalCA
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_revisions, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from tests.support.script_access import scripts_directory

ACTOR = "test:certmonger"

HELPER = textwrap.dedent("""\
    #!/bin/sh
    # A certmonger CA helper: queues each CSR for an approver, signs with openssl once approved.
    queue="$1" ca="$2" key="$3" pass="$4" mode="$5"
    case "$CERTMONGER_OPERATION" in
    SUBMIT)
        if [ "$mode" = reject ]; then echo "request refused: the approver says no"; exit 2; fi
        id="req-$$-$(date +%s%N)"
        printf '%s\\n' "$CERTMONGER_CSR" > "$queue/$id.csr"
        if [ "$mode" != now ]; then echo "$id"; exit 1; fi
        ;;
    POLL)
        id="$CERTMONGER_CA_COOKIE"
        echo "$id" >> "$queue/polls.log"
        if [ -e "$queue/$id.rejected" ]; then echo "request $id was rejected by the approver"; exit 2; fi
        if [ ! -e "$queue/$id.approved" ]; then printf '7\\n%s\\n' "$id"; exit 5; fi
        ;;
    *)
        echo "unsupported operation $CERTMONGER_OPERATION"; exit 6;;
    esac
    openssl x509 -req -in "$queue/$id.csr" -CA "$ca" -CAkey "$key" -passin "file:$pass" -days 30 \\
        -copy_extensions copy -set_serial "$(date +%s%N)" -out "$queue/$id.pem" 2> "$queue/$id.err" \\
        || { cat "$queue/$id.err"; exit 3; }
    cat "$queue/$id.pem" "$ca"
    """)


@dataclass(frozen=True)
class HelperSetup:
    helper: Path
    queue: Path
    args: str


@pytest.fixture
def setup(test_ca: LocalCA) -> Iterator[HelperSetup]:
    with scripts_directory() as shared:
        home = shared / "helper"
        home.mkdir()
        queue = shared / "queue"
        queue.mkdir()
        queue.chmod(0o1777)
        helper = home / "submit-h"
        helper.write_text(HELPER)
        helper.chmod(0o755)
        ca, key, password = home / "ca.pem", home / "ca.key", home / "ca.pass"
        shutil.copy(test_ca.cert_path, ca)
        shutil.copy(test_ca.key_path, key)
        password.write_text(test_ca.password)
        for f in (ca, key, password):
            f.chmod(0o644)
        home.chmod(0o755)
        yield HelperSetup(helper, queue, f"{queue} {ca} {key} {password}")


def _profile(app: App, setup: HelperSetup, name: str, mode: str = "defer") -> None:
    add_script(app, name, bundled_source("certmonger"), actor=ACTOR)
    create_profile(app, name, script=name, actor=ACTOR, allow_read=[str(setup.helper.parent)],
                   allow_write=[str(setup.queue)], params=[
                       ProfileParam("helper", str(setup.helper)),
                       ProfileParam("helper_args", f"{setup.args} {mode}"),
                       ProfileParam("poll_interval_s", "45"),
                   ])


def _request(app: App, name: str, profile: str) -> None:
    request_certificate(app, name, profile=profile, subject=make_subject(f"{name}.example.test"), actor=ACTOR)


def test_a_deferring_helper_is_polled_with_its_cookie_and_issues_once_approved(app: App, setup: HelperSetup) -> None:
    _profile(app, setup, "corp-ca")
    _request(app, "web1", "corp-ca")

    report = issuance.attempt(app, "web1", actor=ACTOR)  # SUBMIT: exit 1 with a cookie
    assert report.outcome is Outcome.DEFERRED, report.error
    (csr_file,) = setup.queue.glob("*.csr")
    cookie = csr_file.stem
    status = get_certificate(app, "web1").status
    assert status.phase is Phase.DEFERRED
    assert (status.next_poll_at - status.deferred_since).total_seconds() == 45  # poll_interval_s

    report = issuance.attempt(app, "web1", actor=ACTOR)  # POLL: exit 5, "7\ncookie"
    assert report.outcome is Outcome.DEFERRED
    assert (report.next_poll_at - app.clock.now()).total_seconds() <= 30  # 7 s, held at the 30 s floor
    (setup.queue / f"{cookie}.approved").touch()

    report = issuance.attempt(app, "web1", actor=ACTOR)  # POLL: exit 0 with the certificate
    assert issuance.is_success(report), report.error
    assert (setup.queue / "polls.log").read_text().split() == [cookie, cookie]
    assert list(setup.queue.glob("*.csr")) == [csr_file], "one submission"
    (revision,) = list_revisions(app, "web1")
    assert revision.public_key_sha256 == public_key_sha256(
        x509.load_pem_x509_csr(csr_file.read_bytes()).public_key())


def test_a_rejection_is_a_failure_in_the_helpers_words(app: App, setup: HelperSetup) -> None:
    _profile(app, setup, "corp-ca")
    _request(app, "web2", "corp-ca")
    issuance.attempt(app, "web2", actor=ACTOR)
    (csr_file,) = setup.queue.glob("*.csr")
    (setup.queue / f"{csr_file.stem}.rejected").touch()

    report = issuance.attempt(app, "web2", actor=ACTOR)

    assert report.outcome is Outcome.FAILED
    assert report.error is not None and "the CA rejected the request (helper exit status 2)" in report.error
    assert f"request {csr_file.stem} was rejected by the approver" in report.error
    assert get_certificate(app, "web2").status.deferred_since is None


def test_a_helper_that_refuses_on_submit_and_one_that_issues_at_once(app: App, setup: HelperSetup) -> None:
    _profile(app, setup, "refusing", mode="reject")
    _profile(app, setup, "instant", mode="now")
    _request(app, "no", "refusing")
    _request(app, "yes", "instant")

    refused = issuance.attempt(app, "no", actor=ACTOR)
    issued = issuance.attempt(app, "yes", actor=ACTOR)

    assert refused.outcome is Outcome.FAILED and "request refused: the approver says no" in (refused.error or "")
    assert issuance.is_success(issued), issued.error
    assert [r.revision for r in list_revisions(app, "yes")] == [1]
