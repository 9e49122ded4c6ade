from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from certpilot.api.auth import CertpilotApp, Viewer
from certpilot.domain.errors import ConfigurationError
from certpilot.services.metrics import CONTENT_TYPE, render_metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process answers (no authentication: a probe; on the event loop, so a busy
    thread pool cannot hold it up)."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(app: CertpilotApp) -> JSONResponse:
    """The database is reachable and migrated (no authentication: a probe)."""
    try:
        app.db.check_ready()
        sandbox = {"description": app.runner.describe(), "limitations": app.runner.limitations()}
    except ConfigurationError as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready", "script_sandbox": sandbox})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(app: CertpilotApp, _: Viewer) -> Response:
    return Response(render_metrics(app), media_type=CONTENT_TYPE)
