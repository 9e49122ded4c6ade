"""`context.state` through the real runner and the store, on SQLite and PostgreSQL: two
calls of one profile in flight at once keep each other's writes (the merge rule: each
call's own changes, key by key, the last to finish winning a key both wrote); values are
stored sealed; the 64 KiB bound holds after merging."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from certpilot.domain.model import Outcome, ProfileParam, make_subject
from certpilot.domain.script_state import STATE_LIMIT_BYTES, StateChanges
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import request_certificate
from certpilot.services.profiles import create_profile, script_state_keys
from certpilot.services.scripts import add_script
from certpilot.store import script_state
from certpilot.store.tables import ProfileStateRow
from tests.support.script_access import scripts_directory

ACTOR = "test:state"

# Each call waits until both have started (so both saw the same state), then writes.
TOGETHER = '''
import os, time

def certificate_request(csr, common_name, args_dict, context):
    d, me = args_dict["dir"], common_name.split(".")[0]
    open(os.path.join(d, "started-" + me), "w").close()
    deadline = time.monotonic() + 30
    while len([f for f in os.listdir(d) if f.startswith("started-")]) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the other call never started")
        time.sleep(0.05)
    with open(os.path.join(d, "saw-" + me), "w") as f:
        f.write(",".join(sorted(context.state)))
    context.state[me] = "written by " + me
    context.state["both"] = me
    if me == "a":
        del context.state["gone"]
    raise RuntimeError("no certificate today")
'''


@pytest.fixture
def shared() -> Iterator[Path]:
    with scripts_directory() as directory:
        yield directory


def test_concurrent_calls_of_one_profile_keep_each_others_writes(app: App, shared: Path) -> None:
    add_script(app, "together", TOGETHER, actor=ACTOR)
    create_profile(app, "pair", script="together", concurrency=2, allow_write=[str(shared)], actor=ACTOR,
                   params=[ProfileParam("dir", str(shared))])
    with app.db.transaction() as session:
        script_state.apply(session, "pair", app.sealer, StateChanges({"keep": "k", "gone": "g"}), app.clock.now())
    for name in ("a", "b"):
        request_certificate(app, name, profile="pair", subject=make_subject(f"{name}.example.test"), actor=ACTOR)

    reports = {}
    threads = [threading.Thread(target=lambda n=n: reports.__setitem__(n, issuance.attempt(app, n, actor=ACTOR)))
               for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert {n: r.outcome for n, r in reports.items()} == {"a": Outcome.FAILED, "b": Outcome.FAILED}
    assert (shared / "saw-a").read_text() == (shared / "saw-b").read_text() == "gone,keep"
    with app.db.read() as session:
        state = script_state.load(session, "pair", app.sealer)
    assert state["a"] == "written by a" and state["b"] == "written by b", "a call lost the other's write"
    assert state["keep"] == "k" and "gone" not in state
    assert state["both"] in ("a", "b")
    assert script_state_keys(app, "pair") == ["a", "b", "both", "keep"]
    with app.db.read() as session:
        sealed = list(session.scalars(select(ProfileStateRow.value_sealed)))
    assert sealed and not any(b"written by" in v for v in sealed), "values are sealed"


def test_writes_that_would_pass_64_kib_after_merging_are_not_saved(app: App) -> None:
    add_script(app, "noop", "def certificate_request(csr, common_name, args_dict):\n    return ''\n", actor=ACTOR)
    create_profile(app, "big", script="noop", actor=ACTOR)
    half = "x" * (STATE_LIMIT_BYTES // 2)
    with app.db.transaction() as session:
        assert script_state.apply(session, "big", app.sealer, StateChanges({"one": half}), app.clock.now()) is None
    with app.db.transaction() as session:
        note = script_state.apply(session, "big", app.sealer, StateChanges({"two": half, "three": "y"},
                                                                           frozenset({"gone"})), app.clock.now())
    assert note is not None and str(STATE_LIMIT_BYTES) in note
    with app.db.read() as session:
        assert script_state.load(session, "big", app.sealer) == {"one": half}
    with app.db.transaction() as session:  # replacing a key frees its room
        assert script_state.apply(session, "big", app.sealer, StateChanges({"one": "small", "two": half}),
                                  app.clock.now()) is None
    assert script_state_keys(app, "big") == ["one", "two"]


LEAKY = '''
def certificate_request(csr, common_name, args_dict, context):
    print("account key:", context.state["account_key"], "count:", context.state["count"])
    raise RuntimeError("CA down; key was " + context.state["account_key"])
'''


def test_a_state_value_long_enough_to_be_a_key_is_masked_in_what_the_call_printed(app: App) -> None:
    from certpilot.services.certificates import list_attempts

    account_key = "acct-key-5f0c2a9e7b4d41c8a0e3"
    add_script(app, "leaky", LEAKY, actor=ACTOR)
    create_profile(app, "acme-like", script="leaky", actor=ACTOR)
    with app.db.transaction() as session:
        script_state.apply(session, "acme-like", app.sealer,
                           StateChanges({"account_key": account_key, "count": "7"}), app.clock.now())
    request_certificate(app, "s1", profile="acme-like", subject=make_subject("s1.example.test"), actor=ACTOR)
    report = issuance.attempt(app, "s1")
    assert report.outcome is Outcome.FAILED
    attempt = list_attempts(app, "s1")[0]
    seen = f"{report.error}\n{attempt.error}\n{attempt.output}"
    assert account_key not in seen and "***" in seen, seen
    assert "count: 7" in seen, "a short value (a counter) is not masked"
