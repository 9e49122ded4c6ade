"""store.heartbeats: a loop's first beat records when it started, later beats move only its
last pass; `last_pass_at` is the latest pass of any loop (aware UTC), None before any; two
loops beating at once (two connections) are both recorded."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from certpilot.store import heartbeats
from certpilot.store.session import Database
from certpilot.store.tables import LoopHeartbeatRow
from tests.integration.store.conftest import T0

PLUS_2 = dt.timezone(dt.timedelta(hours=2))


def _rows(db: Database) -> dict[str, tuple[dt.datetime, dt.datetime | None]]:
    with db.read() as session:
        return {r.owner: (r.started_at, r.last_pass_at) for r in session.scalars(select(LoopHeartbeatRow))}


def test_no_pass_before_any_beat(db: Database) -> None:
    with db.read() as session:
        assert heartbeats.last_pass_at(session) is None


def test_beats_keep_the_start_and_move_the_last_pass(db: Database) -> None:
    with db.transaction() as session:
        heartbeats.beat(session, "w1:loop-a", started_at=T0, now=T0 + dt.timedelta(seconds=5))
    with db.transaction() as session:
        heartbeats.beat(session, "w1:loop-a", started_at=T0 + dt.timedelta(hours=1),  # ignored: not its first beat
                        now=T0 + dt.timedelta(seconds=65))
    assert _rows(db) == {"w1:loop-a": (T0, T0 + dt.timedelta(seconds=65))}


def test_last_pass_is_the_latest_of_all_loops_in_utc(db: Database) -> None:
    latest = dt.datetime(2026, 3, 1, 14, 30, tzinfo=PLUS_2)  # 12:30Z, given in +02:00
    with db.transaction() as session:
        heartbeats.beat(session, "w1:loop-a", started_at=T0, now=T0 + dt.timedelta(minutes=20))  # 12:20Z
        heartbeats.beat(session, "w2:loop-b", started_at=T0, now=latest)
        heartbeats.beat(session, "w3:loop-c", started_at=T0, now=T0 + dt.timedelta(minutes=25))  # 12:25Z, given last
    with db.read() as session:
        last = heartbeats.last_pass_at(session)
    assert last == latest
    assert last is not None and last.utcoffset() == dt.timedelta(0)


def test_two_loops_beating_at_once_are_both_recorded(db: Database) -> None:
    first_wrote = threading.Event()

    def loop(owner: str, wait_for: threading.Event | None, signal: threading.Event | None) -> None:
        with db.transaction() as session:
            if wait_for is not None:
                assert wait_for.wait(10)
            heartbeats.beat(session, owner, started_at=T0, now=T0 + dt.timedelta(seconds=1))
            session.flush()
            if signal is not None:
                signal.set()
                time.sleep(0.2)  # the other loop writes while this one has not committed

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(loop, "w1:loop-a", None, first_wrote), pool.submit(loop, "w2:loop-b", first_wrote, None)]
        for f in futures:
            f.result(timeout=30)
    assert sorted(_rows(db)) == ["w1:loop-a", "w2:loop-b"]
