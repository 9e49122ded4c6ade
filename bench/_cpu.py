"""CPU time spent during a timed run, by whom: less noisy than wall time on a shared machine.

controller  this process, all threads (`time.process_time`)
scripts     the script worker processes plus the children they forked and reaped
            (/proc/<pid>/stat utime+stime+cutime+cstime)
database    the PostgreSQL server processes serving this benchmark's database
            (local server only; none for SQLite, whose work is in the controller)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int, with_children: bool) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is the state (field 3 of proc(5)): utime is field 14, stime 15, cutime 16, cstime 17
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


@dataclass
class Snapshot:
    controller: float
    scripts: dict[int, float]
    database: dict[int, float]


class CpuMeter:
    def __init__(self, worker_pids: Callable[[], list[int]], server_pids: Callable[[], list[int]] | None) -> None:
        self._worker_pids = worker_pids
        self._server_pids = server_pids

    def snapshot(self) -> Snapshot:
        scripts = {pid: proc_cpu_s(pid, True) for pid in self._worker_pids()}
        database = {pid: proc_cpu_s(pid, False) for pid in (self._server_pids() if self._server_pids else [])}
        return Snapshot(
            time.process_time(),
            {p: v for p, v in scripts.items() if v is not None},
            {p: v for p, v in database.items() if v is not None},
        )

    @staticmethod
    def spent(before: Snapshot, after: Snapshot) -> dict[str, float | None]:
        """CPU seconds between the snapshots. A process that appeared in between counts from 0;
        script workers that went away make `scripts` unknown (None)."""

        def delta(a: dict[int, float], b: dict[int, float]) -> float | None:
            if set(a) - set(b):
                return None
            return sum(v - a.get(pid, 0.0) for pid, v in b.items())

        return {
            "controller": after.controller - before.controller,
            "scripts": delta(before.scripts, after.scripts),
            "database": delta(before.database, after.database) if after.database or before.database else None,
        }
