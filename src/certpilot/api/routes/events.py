from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from certpilot.api.auth import CertpilotApp, Viewer
from certpilot.api.pagination import link_next
from certpilot.api.schemas import EventOut
from certpilot.services import events as service
from certpilot.services.views import event_view

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.get("", response_model=list[EventOut])
def list_events(
    request: Request,
    response: Response,
    app: CertpilotApp,
    _: Viewer,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    object_type: Annotated[str | None, Query(max_length=32)] = None,
    object: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="the last id of the previous page")] = None,
) -> list[dict]:
    events = service.list_events(app, kind=kind, object_type=object_type, object_name=object,
                                 before_id=cursor, limit=limit)
    if len(events) == limit:
        link_next(request, response, str(events[-1].id))
    return [event_view(e) for e in events]
