"""The mapping a script sees as `context.state` (the rules: `domain.script_state`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from certpilot.domain.script_state import (
    KEY_LIMIT_CHARS,
    STATE_LIMIT_BYTES,
    StateChanges,
    entry_size,
    is_key,
    state_size,
)

__all__ = ["STATE_LIMIT_BYTES", "ScriptState", "StateChanges"]


class ScriptState(MutableMapping[str, str]):
    """The mapping a script sees as `context.state`; it remembers what the call changed."""

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(initial or {})
        self._size = state_size(self._data)
        self._set: set[str] = set()
        self._deleted: set[str] = set()

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __setitem__(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"context.state maps str to str, not {type(key).__name__} to {type(value).__name__}")
        if not is_key(key):
            raise ValueError(f"a context.state key has 1 to {KEY_LIMIT_CHARS} characters")
        old = entry_size(key, self._data[key]) if key in self._data else 0
        size = self._size - old + entry_size(key, value)
        if size > STATE_LIMIT_BYTES:
            raise ValueError(f"context.state would hold {size} bytes; it holds at most {STATE_LIMIT_BYTES}")
        self._data[key] = value
        self._size = size
        self._set.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        value = self._data.pop(key)
        self._size -= entry_size(key, value)
        self._set.discard(key)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:  # key names only: values may be secrets (an account key)
        return f"<context.state keys={sorted(self._data)}>"

    def changes(self) -> StateChanges | None:
        changes = StateChanges({k: self._data[k] for k in self._set}, frozenset(self._deleted))
        return None if changes.is_empty() else changes
