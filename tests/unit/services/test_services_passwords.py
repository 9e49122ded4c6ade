"""Bounded password hashing and the login throttle: no database, no clock of the wall."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher

from certpilot.services.passwords import LoginThrottle, Passwords, TooManyAttempts, cheap_hasher


class GatedHasher(PasswordHasher):
    """A cheap hasher whose hash waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.inside = threading.Semaphore(0)
        self.gate = threading.Event()

    def hash(self, password, *, salt=None):  # type: ignore[no-untyped-def, override]
        self.inside.release()
        assert self.gate.wait(30)
        return super().hash(password, salt=salt)


def test_no_more_hashes_at_once_than_the_bound_and_the_rest_are_told_to_retry() -> None:
    hasher = GatedHasher()
    passwords = Passwords(hasher, max_concurrent=2, wait_s=0.01)
    busy = [threading.Thread(target=passwords.hash, args=("x",)) for _ in range(2)]
    for t in busy:
        t.start()
    for _ in busy:
        assert hasher.inside.acquire(timeout=30)
    with pytest.raises(TooManyAttempts) as refused:
        passwords.verify(None, "wrong")
    assert refused.value.retry_after_s >= 1
    hasher.gate.set()
    for t in busy:
        t.join()
    assert passwords.verify(passwords.hash("right-password"), "right-password")  # slots are given back


def test_verify_answers_for_known_and_unknown_users() -> None:
    passwords = Passwords(cheap_hasher())
    stored = passwords.hash("correct horse")
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "wrong horse")
    assert not passwords.verify(None, "anything")  # unknown user: same work, no
    assert not passwords.verify("not-a-hash", "anything")
    assert PasswordHasher().verify(stored, "correct horse"), "a cheap hash verifies at production cost"


def test_throttle_lets_two_failures_through_then_asks_to_wait_doubling() -> None:
    now = [100.0]
    throttle = LoginThrottle(monotonic=lambda: now[0])
    key = "alice\x1fweb from 10.0.0.1"
    waits = []
    for _ in range(6):
        waits.append(throttle.retry_after_s(key))
        throttle.failed(key)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert throttle.retry_after_s(key) == 4.0  # after 6 failures: 0.5 * 2**3
    now[0] += 4.0
    assert throttle.retry_after_s(key) == 0.0
    assert throttle.retry_after_s("bob\x1fweb from 10.0.0.1") == 0.0
    throttle.succeeded(key)
    assert throttle.retry_after_s(key) == 0.0
