"""Password hashing (argon2id) with a bound on how many hashes run at once.

One argon2 hash at the default cost takes ~64 MiB and a good part of a core; a
login flood must not turn into unbounded memory and a stalled server. At most
`max_concurrent` hashes run at once in a process; a caller that cannot get a
slot within `wait_s` gets `TooManyAttempts` (the edges answer 429 with
Retry-After) instead of queueing without end.
"""

from __future__ import annotations

import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from certpilot.domain.errors import CertpilotError

DEFAULT_MAX_CONCURRENT = 2
DEFAULT_WAIT_S = 0.1
BUSY_RETRY_AFTER_S = 1


class TooManyAttempts(CertpilotError):
    """Too many password checks in flight, or too many failures from one place for one
    name: try again after `retry_after_s` (the edges answer 429 with Retry-After)."""

    def __init__(self, retry_after_s: int = BUSY_RETRY_AFTER_S) -> None:
        super().__init__(f"too many login attempts; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def cheap_hasher() -> PasswordHasher:
    """argon2id at the smallest cost argon2 accepts: for tests only (see Settings)."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class LoginThrottle:
    """After `FREE_FAILURES` failed logins for one name from one place, further attempts
    are refused (not slept on) for 0.5 s doubling to 8 s after each failure, so a flood
    holds no worker threads; a success clears the count."""

    FREE_FAILURES = 2

    def __init__(self, monotonic=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._monotonic = monotonic

    def retry_after_s(self, key: str) -> float:
        """0 if an attempt may go ahead now, else the seconds until it may."""
        with self._lock:
            n, last = self._failures.get(key, (0, 0.0))
        if n <= self.FREE_FAILURES:
            return 0.0
        wait = min(0.5 * 2 ** (n - self.FREE_FAILURES - 1), 8.0) - (self._monotonic() - last)
        return max(wait, 0.0)

    def failed(self, key: str) -> None:
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a flood of new names
                self._failures.clear()
            n, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (min(n + 1, 16), self._monotonic())

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Passwords:
    """Hashes and verifies passwords, never more than `max_concurrent` at once."""

    def __init__(self, hasher: PasswordHasher | None = None, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 wait_s: float = DEFAULT_WAIT_S) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.hasher = hasher or PasswordHasher()
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._wait_s = wait_s
        self.throttle = LoginThrottle()

    def _acquire(self) -> None:
        if not self._slots.acquire(timeout=self._wait_s):
            raise TooManyAttempts()

    def hash(self, password: str) -> str:
        """The argon2 hash of `password`; raises TooManyAttempts when every slot is taken."""
        self._acquire()
        try:
            return self.hasher.hash(password)
        finally:
            self._slots.release()

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches `stored_hash`. With no hash (unknown user) the same
        work is done, so timing does not tell which names exist."""
        self._acquire()
        try:
            if stored_hash is None:
                self.hasher.hash(password)
                return False
            try:
                return bool(self.hasher.verify(stored_hash, password))
            except (VerificationError, InvalidHashError):
                return False
        finally:
            self._slots.release()
