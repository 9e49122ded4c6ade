"""`context.state`: a script's durable memory, one mapping of str to str per profile.

A call sees the profile's state as it was when the call started and may change
it; when the call ends (returned, raised, `Pending` or `sys.exit`) the host
reports what it changed: the keys it set and the keys it deleted, nothing else.
The controller saves those changes sealed, in the transaction that records the
call's outcome (see `store.script_state`).

Merge rule for calls of one profile that overlap: each call's changes are
applied key by key when its outcome is recorded, so the last call to finish
wins for a key both changed, and a key only one of them touched keeps that
call's value. Keys a call did not touch are never written back, so concurrent
calls cannot undo each other's writes to different keys. A call whose host
died (killed at its timeout, crashed) saves nothing.

At most `STATE_LIMIT_BYTES` in all (UTF-8 bytes of keys and values): a write
that would pass it raises `ValueError` in the script.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_LIMIT_BYTES = 64 * 1024
KEY_LIMIT_CHARS = 256


def entry_size(key: str, value: str) -> int:
    return len(key.encode("utf-8")) + len(value.encode("utf-8"))


def state_size(state: Mapping[str, str]) -> int:
    return sum(entry_size(k, v) for k, v in state.items())


@dataclass(frozen=True)
class StateChanges:
    """What one call did to the state: keys set (with their new values) and keys deleted."""

    set: Mapping[str, str] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return not self.set and not self.deleted

    def to_message(self) -> dict[str, Any]:
        return {"set": dict(self.set), "deleted": sorted(self.deleted)}

    @classmethod
    def from_message(cls, message: Mapping[str, Any] | None) -> StateChanges | None:
        """Validated: a host's reply is not trusted to be well-formed."""
        if not message:
            return None
        sets, deleted = message.get("set") or {}, message.get("deleted") or []
        if not isinstance(sets, dict) or not isinstance(deleted, list):
            return None
        clean = {k: v for k, v in sets.items() if isinstance(k, str) and isinstance(v, str) and is_key(k)}
        gone = frozenset(k for k in deleted if isinstance(k, str) and is_key(k)) - set(clean)
        changes = cls(clean, gone)
        return None if changes.is_empty() else changes


def is_key(key: str) -> bool:
    return 0 < len(key) <= KEY_LIMIT_CHARS
