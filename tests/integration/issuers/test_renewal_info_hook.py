"""The `certificate_renewal_info` hook of any script, through the renewal loop and the real
sandboxed runner, on SQLite and PostgreSQL: the local-CA script plus a hook that answers
the window the test writes into a granted directory (as a dict of RFC 3339 text).

- after a new revision the loop asks at once, and the time drawn in the window (the
  app's random fraction 0.5: its middle) becomes the renewal time;
- a failing check keeps the window known, is retried an hour later, and is no issuance
  failure;
- a window in the past renews at once, and the new revision is asked about afresh;
- a script without the hook is never asked."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.domain.model import ProfileParam, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.policy.renewal_info import ERROR_RETRY_S
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_attempts, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.database import create_db_engine, upgrade
from tests.support.script_access import scripts_directory

ACTOR = "test:renewal-info"
HOOK = '''

import json as _json
import os as _os


def certificate_renewal_info(cert_pem, args_dict, context):
    path = _os.path.join(args_dict["window_dir"], "window.json")
    with open(path) as f:
        answer = _json.load(f)
    with open(_os.path.join(args_dict["window_dir"], "asked.log"), "a") as f:
        f.write(str(cert_pem.count("BEGIN CERTIFICATE")) + "\\n")  # the leaf and its chain
    if answer == "fail":
        raise RuntimeError("the CA's renewal information is unavailable")
    return answer
'''


class StepClock:
    def __init__(self, start: dt.datetime) -> None:
        self.instant = start

    def now(self) -> dt.datetime:
        return self.instant

    def advance(self, **delta: float) -> None:
        self.instant += dt.timedelta(**delta)


@pytest.fixture
def window_dir() -> Iterator[Path]:
    with scripts_directory() as directory:
        yield directory


@pytest.fixture
def clock() -> StepClock:
    return StepClock(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))


@pytest.fixture
def hook_app(settings: Settings, test_ca: LocalCA, window_dir: Path, clock: StepClock) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings, clock=clock, random_fraction=lambda: 0.5) as app:
        ca = [ProfileParam("ca_cert", test_ca.cert_path.read_text()),
              ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
              ProfileParam("ca_key_password", test_ca.password, sensitive=True)]
        add_script(app, "ari-ca", bundled_local_ca_source() + HOOK, timeout_s=20, actor=ACTOR)
        add_script(app, "plain-ca", bundled_local_ca_source(), timeout_s=20, actor=ACTOR)
        create_profile(app, "ari", script="ari-ca", actor=ACTOR, allow_write=[str(window_dir)],
                       params=[*ca, ProfileParam("window_dir", str(window_dir))])
        create_profile(app, "plain", script="plain-ca", actor=ACTOR, params=ca)
        yield app


def _answer(window_dir: Path, answer: object) -> None:
    (window_dir / "window.json").write_text(json.dumps(answer))
    (window_dir / "window.json").chmod(0o644)


def _window(start: dt.datetime, end: dt.datetime, retry_after_s: int) -> dict[str, object]:
    return {"start": start.isoformat(), "end": end.isoformat(), "retry_after_s": retry_after_s}


def _asked(window_dir: Path) -> int:
    """How often the hook was called; each call was given the leaf and its chain."""
    log = window_dir / "asked.log"
    calls = log.read_text().splitlines() if log.exists() else []
    assert all(c == "2" for c in calls), calls
    return len(calls)


def test_the_hook_sets_the_renewal_time_survives_a_failing_check_and_a_past_window_renews(
    hook_app: App, window_dir: Path, clock: StepClock
) -> None:
    app, now = hook_app, clock.now()
    start, end = now + dt.timedelta(days=40), now + dt.timedelta(days=42)
    _answer(window_dir, _window(start, end, 7200))
    request_certificate(app, "web1", profile="ari", subject=make_subject("web1.example.test"), actor=ACTOR)
    loop = Reconciler(app)

    loop.run_once()  # issued; the window is due to be asked for at once
    assert get_certificate(app, "web1").status.next_action_at == now
    loop.run_once()  # asked

    status = get_certificate(app, "web1").status
    assert status.renew_at == now + dt.timedelta(days=41), "the middle of the window (random fraction 0.5)"
    info = status.renewal_info
    assert info is not None and (info.window_start, info.window_end, info.checked_at) == (start, end, now)
    assert info.next_check_at == now + dt.timedelta(seconds=7200) == status.next_action_at
    assert _asked(window_dir) == 1

    _answer(window_dir, "fail")
    clock.advance(seconds=7200)
    loop.run_once()

    status = get_certificate(app, "web1").status
    assert status.renewal_info is not None
    assert status.renewal_info.error == "the CA's renewal information is unavailable"
    assert status.renewal_info.window_start == start and status.renew_at == now + dt.timedelta(days=41)
    assert status.renewal_info.next_check_at == clock.now() + dt.timedelta(seconds=ERROR_RETRY_S)
    assert status.failures == 0 and status.last_error is None, "a failed check is no issuance failure"

    _answer(window_dir, _window(now - dt.timedelta(days=2), now - dt.timedelta(days=1), 7200))
    clock.advance(seconds=ERROR_RETRY_S)
    loop.run_once()  # asks, finds the window past, renews

    status = get_certificate(app, "web1").status
    assert status.revision == 2
    assert [a.kind for a in list_attempts(app, "web1")] == ["renew", "issue"]
    assert status.renewal_info is not None and status.renewal_info.window_start is None
    assert status.renewal_info.next_check_at == clock.now(), "the new revision is asked about at once"
    assert _asked(window_dir) == 3


def test_a_script_without_the_hook_is_never_asked(hook_app: App, window_dir: Path, clock: StepClock) -> None:
    app = hook_app
    request_certificate(app, "plain1", profile="plain", subject=make_subject("plain1.example.test"), actor=ACTOR)
    loop = Reconciler(app)

    loop.run_once()
    loop.run_once()

    status = get_certificate(app, "plain1").status
    assert status.revision == 1 and status.renewal_info is None
    assert status.not_before is not None and status.next_action_at is not None
    assert status.next_action_at > clock.now() + dt.timedelta(days=30), "nothing due until the renewal time"
    assert _asked(window_dir) == 0
