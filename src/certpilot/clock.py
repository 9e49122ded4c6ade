"""The one place that reads the real time; everything else takes `now` as an argument."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    """Timezone-aware UTC wall clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


def monotonic_s() -> float:
    """Seconds from an arbitrary origin, for durations and deadlines."""
    return time.monotonic()


def utc(value: dt.datetime) -> dt.datetime:
    """The same instant as an aware UTC datetime (databases may hand back naive UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)
