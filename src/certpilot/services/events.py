"""The audit and lifecycle log."""

from __future__ import annotations

from certpilot.domain.model import Event
from certpilot.services.app import App
from certpilot.store import events as repo


def list_events(
    app: App, *, kind: str | None = None, object_type: str | None = None, object_name: str | None = None,
    before_id: int | None = None, limit: int = 100,
) -> list[Event]:
    """Newest first; `before_id` pages backwards."""
    with app.db.read() as session:
        return repo.list_events(session, kind=kind, object_type=object_type, object_name=object_name,
                                before_id=before_id, limit=limit)
