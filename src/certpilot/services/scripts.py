"""Issuer scripts: add, replace, list, remove."""

from __future__ import annotations

import ast

from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import DEFAULT_SCRIPT_TIMEOUT_S, EventKind, Script, check_name
from certpilot.services.app import App
from certpilot.store import scripts as repo
from certpilot.store.events import record_event

MAX_SOURCE_BYTES = 1024 * 1024
MAX_TIMEOUT_S = 3600


def check_source(source: str) -> None:
    """The source compiles and defines `certificate_request` at module level."""
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise InvalidInput(f"the script is larger than {MAX_SOURCE_BYTES // 1024} KiB", field="source")
    try:
        tree = ast.parse(source, filename="<script>")
    except SyntaxError as exc:
        raise InvalidInput(f"the script does not compile: {exc.msg} (line {exc.lineno})", field="source") from None
    names = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "certificate_request" not in names:
        raise InvalidInput(
            "the script defines no function certificate_request(csr, common_name, args_dict)", field="source"
        )


def check_timeout(timeout_s: int) -> int:
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds", field="timeout_s")
    return timeout_s


def add_script(app: App, name: str, source: str, *, timeout_s: int = DEFAULT_SCRIPT_TIMEOUT_S, actor: str) -> Script:
    check_name(name, "script")
    check_source(source)
    check_timeout(timeout_s)
    now = app.clock.now()
    with app.db.transaction() as session:
        script = repo.add_script(session, name, source, timeout_s, now)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "created", "sha256": script.sha256})
    return script


def update_script(app: App, name: str, source: str, *, timeout_s: int, actor: str) -> Script:
    check_source(source)
    check_timeout(timeout_s)
    now = app.clock.now()
    with app.db.transaction() as session:
        script = repo.update_script(session, name, source, timeout_s, now)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "updated", "sha256": script.sha256})
    return script


def get_script(app: App, name: str) -> Script:
    with app.db.transaction() as session:
        return repo.get_script(session, name)


def list_scripts(app: App) -> list[Script]:
    with app.db.transaction() as session:
        return repo.list_scripts(session)


def remove_script(app: App, name: str, *, actor: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_script(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "removed"})
