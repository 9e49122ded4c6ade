"""Reads that are mostly Python work run at most `READ_SLOTS` at a time per process.

All of a server process's Python runs under one GIL. Eight list requests on eight
threads of the pool do not finish sooner than one after another; they take turns every
few milliseconds, and the switching itself cost ~70 % more CPU per list page (11 ms at
one request in flight, 19 ms at eight, measured on 5,000 rows). So the token check and
the certificate reads go through a small limiter of their own: requests beyond it wait
their turn on the event loop, and the work runs about as cheaply as one request alone.
Two slots, not one, so that one thread's database round trip (PostgreSQL's network,
SQLite's page reads) overlaps the other's Python. Everything else (writes, `?wait=true`,
password checks) keeps Starlette's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

READ_SLOTS = 2
T = TypeVar("T")

_limiter: RunVar[CapacityLimiter] = RunVar("certpilot_read_limiter")


def read_limiter() -> CapacityLimiter:
    """This event loop's limiter (one per loop, as anyio's own default limiter)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = CapacityLimiter(READ_SLOTS)
        _limiter.set(limiter)
        return limiter


async def run_read(func: Callable[..., T], *args: object) -> T:
    """`func(*args)` on a worker thread, in one of the read slots."""
    return await to_thread.run_sync(func, *args, limiter=read_limiter())
