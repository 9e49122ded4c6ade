"""`context.state` as a script sees it: str to str, 64 KiB in all, and what a call changed."""

from __future__ import annotations

import pytest

from certpilot.domain.script_state import STATE_LIMIT_BYTES, StateChanges
from certpilot.issuers.state import ScriptState


def test_a_call_that_changes_nothing_reports_nothing() -> None:
    state = ScriptState({"a": "1"})
    assert state["a"] == "1" and dict(state) == {"a": "1"}
    assert state.changes() is None


def test_changes_are_the_keys_set_and_deleted_only() -> None:
    state = ScriptState({"keep": "1", "gone": "2", "moved": "3"})
    state["new"] = "x"
    state["moved"] = "4"
    del state["gone"]
    assert state.changes() == StateChanges({"new": "x", "moved": "4"}, frozenset({"gone"}))


def test_set_then_deleted_is_a_deletion_and_deleted_then_set_is_a_write() -> None:
    state = ScriptState({"a": "1"})
    state["b"] = "2"
    del state["b"]
    del state["a"]
    state["a"] = "3"
    assert state.changes() == StateChanges({"a": "3"}, frozenset({"b"}))


@pytest.mark.parametrize(("key", "value", "error"), [
    pytest.param("k", 1, TypeError, id="value-not-str"),
    pytest.param(1, "v", TypeError, id="key-not-str"),
    pytest.param("", "v", ValueError, id="empty-key"),
    pytest.param("k" * 257, "v", ValueError, id="key-too-long"),
])
def test_only_str_to_str(key: object, value: object, error: type[Exception]) -> None:
    state = ScriptState()
    with pytest.raises(error):
        state[key] = value  # type: ignore[index,assignment]
    assert state.changes() is None


def test_the_state_holds_at_most_64_kib() -> None:
    state = ScriptState({"a": "x" * (STATE_LIMIT_BYTES - 10)})
    with pytest.raises(ValueError, match="at most 65536"):
        state["b"] = "y" * 20
    state["a"] = "short"  # replacing a value frees its room
    state["b"] = "y" * 20
    assert set(state.changes().set) == {"a", "b"}  # type: ignore[union-attr]


def test_the_repr_shows_key_names_only() -> None:
    assert "s3cret" not in repr(ScriptState({"account_key": "s3cret"}))


def test_a_reply_from_a_host_is_validated() -> None:
    assert StateChanges.from_message(None) is None
    assert StateChanges.from_message({"set": "no", "deleted": []}) is None
    changes = StateChanges.from_message({"set": {"a": "1", "b": 2, "": "x"}, "deleted": ["c", 5, "a"]})
    assert changes == StateChanges({"a": "1"}, frozenset({"c"}))
