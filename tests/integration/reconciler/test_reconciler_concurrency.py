"""The renewal loop's concurrency, with `Reconciler.run_forever()` on a thread and real
sandboxed script hosts: a slow CA (the bundled local-CA script that first lingers at
least 0.5 s) with 40 certificates due at once never has more calls in flight than its
profile's default concurrency (16), and reaches it; a fast CA's 5 certificates, due
at the same time (and after the slow ones), are all issued while the slow profile's
calls are still in flight.

The calls in flight are counted from inside the script: each call leaves a marker
file in a directory shared with scripts (granted to the profile with `allow_write`)
while it runs, and records the most markers it saw at once.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.domain.model import Outcome
from certpilot.issuers import sandbox
from certpilot.issuers.runner import DEFAULT_CONCURRENCY
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from certpilot.services.profiles import create_profile, get_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from tests.conftest import missing
from tests.support.processes import wait_for
from tests.support.reconciler import (
    ACTOR,
    AttemptFact,
    all_attempts,
    held_leases,
    local_ca_params,
    request,
    revision_counts,
)
from tests.support.script_access import share_with_scripts

SLOW, FAST = "slow", "fast"
SLOW_CERTS, FAST_CERTS = 40, 5
MIN_CALL_S = 0.5
SCRIPT_TIMEOUT_S = 60

# Inserted at the start of the bundled script's certificate_request: the call leaves a
# marker in `inflight_dir` (and one in `started_dir`), stays at least MIN_CALL_S, longer
# (bounded) until it has seen `want` calls at once or every call has started, lingers a
# little to see any call beyond the limit, and records the most it saw in `seen_dir`.
IN_FLIGHT = textwrap.dedent(
    f'''
    import os as _os
    import time as _time
    import uuid as _uuid


    def _count_in_flight(args_dict):
        here, started = args_dict["inflight_dir"], args_dict["started_dir"]
        want, total = int(args_dict["want"]), int(args_dict["total"])
        marker = _uuid.uuid4().hex
        open(_os.path.join(here, marker), "w").close()
        open(_os.path.join(started, marker), "w").close()
        began = _time.monotonic()
        seen = 0
        while True:
            seen = max(seen, len(_os.listdir(here)))
            waited = _time.monotonic() - began
            enough = seen >= want or len(_os.listdir(started)) >= total or waited >= 15
            if waited >= {MIN_CALL_S!r} and enough:
                break
            _time.sleep(0.01)
        linger = _time.monotonic() + 0.2
        while _time.monotonic() < linger:
            seen = max(seen, len(_os.listdir(here)))
            _time.sleep(0.01)
        _os.remove(_os.path.join(here, marker))
        with open(_os.path.join(args_dict["seen_dir"], marker), "w") as f:
            f.write(str(seen))
    '''
)


def slow_local_ca_source() -> str:
    source = bundled_local_ca_source()
    head = "def certificate_request(csr, common_name, args_dict):\n"
    assert source.count(head) == 1, "the bundled local-CA script no longer has one certificate_request"
    return source.replace(head, IN_FLIGHT + "\n\n" + head + "    _count_in_flight(args_dict)\n")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the script user reaches (not under pytest's basetemp, which a pytest
    run starting meanwhile makes private to root again)."""
    if sandbox.landlock_abi() < 1:
        missing("this kernel offers no Landlock: a grant cannot be tested")
    path = Path(tempfile.mkdtemp(prefix="certpilot-concurrency-", dir="/tmp"))
    share_with_scripts(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def finished_at(attempt: AttemptFact) -> dt.datetime:
    assert attempt.finished_at is not None, attempt
    return attempt.finished_at


def test_a_slow_profile_fills_its_own_slots_and_no_more(app: App, test_ca: LocalCA, shared_dir: Path) -> None:
    inflight, started, seen_dir = (Path(share_with_scripts(shared_dir / name)) for name in ("inflight", "started", "seen"))
    add_script(app, "slow-ca", slow_local_ca_source(), timeout_s=SCRIPT_TIMEOUT_S, actor=ACTOR)
    add_script(app, "fast-ca", bundled_local_ca_source(), timeout_s=SCRIPT_TIMEOUT_S, actor=ACTOR)
    create_profile(app, SLOW, script="slow-ca", allow_write=[str(shared_dir)], actor=ACTOR, params=local_ca_params(
        test_ca, inflight_dir=str(inflight), started_dir=str(started), seen_dir=str(seen_dir),
        want=str(DEFAULT_CONCURRENCY), total=str(SLOW_CERTS)))
    create_profile(app, FAST, script="fast-ca", actor=ACTOR, params=local_ca_params(test_ca))
    assert get_profile(app, SLOW).sandbox.concurrency == DEFAULT_CONCURRENCY == 16
    slow_names = [f"slow-{n:02d}" for n in range(SLOW_CERTS)]
    fast_names = [f"fast-{n}" for n in range(FAST_CERTS)]
    for name in slow_names + fast_names:  # all due now, the slow ones first
        request(app, name, profile=SLOW if name in slow_names else FAST)

    reconciler = Reconciler(app)
    thread = threading.Thread(target=reconciler.run_forever, name="renewal-loop")
    thread.start()
    try:
        def issued(names: list[str]) -> int:
            counts = revision_counts(app)
            return sum(1 for name in names if counts.get(name) == 1)

        wait_for(lambda: issued(fast_names) == FAST_CERTS, timeout_s=60, interval_s=0.05,
                 what=f"the issuance of the {FAST_CERTS} fast certificates")
        slow_markers_then = len(list(inflight.iterdir()))
        slow_issued_then = issued(slow_names)
        wait_for(lambda: issued(slow_names) == SLOW_CERTS, timeout_s=120, interval_s=0.2,
                 what=f"the issuance of the {SLOW_CERTS} slow certificates")
    finally:
        reconciler.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "run_forever did not return after stop()"

    attempts = all_attempts(app)
    assert sorted(a.certificate for a in attempts) == sorted(slow_names + fast_names), "one attempt each"
    assert {a.outcome for a in attempts} == {Outcome.ISSUED.value}, [(a.certificate, a.error) for a in attempts]
    assert held_leases(app) == []

    # calls in flight at once, as the slow script saw them: up to its profile's 16, never more
    seen = sorted(int(p.read_text()) for p in seen_dir.iterdir())
    assert len(seen) == SLOW_CERTS and len(list(started.iterdir())) == SLOW_CERTS
    assert list(inflight.iterdir()) == []
    assert max(seen) >= DEFAULT_CONCURRENCY, f"the slow profile never had {DEFAULT_CONCURRENCY} calls in flight: {seen}"
    assert max(seen) <= DEFAULT_CONCURRENCY, f"more calls in flight than the profile's concurrency: {seen}"

    # the fast CA was not held up: its certificates were all issued while slow calls ran
    slow_attempts = [a for a in attempts if a.certificate in slow_names]
    fast_done = max(finished_at(a) for a in attempts if a.certificate in fast_names)
    running = [a for a in slow_attempts if a.started_at < fast_done < finished_at(a)]
    slow_done_before = [a for a in slow_attempts if finished_at(a) <= fast_done]
    assert running, (f"no slow call was in flight when the last fast certificate was issued "
                     f"({slow_markers_then} slow markers seen then)")
    # not queued behind a wave of slow calls: fewer than one profile's worth were done by then
    assert len(slow_done_before) < DEFAULT_CONCURRENCY and slow_issued_then < DEFAULT_CONCURRENCY, (
        f"the fast certificates waited for the slow ones: {len(slow_done_before)} slow attempts had finished, "
        f"{slow_issued_then} slow certificates were issued")
