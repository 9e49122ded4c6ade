"""The FastAPI application factory. For now: the health probes."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from certpilot import __version__
from certpilot.domain.errors import ConfigurationError
from certpilot.services.app import App


def create_app(app: App) -> FastAPI:
    api = FastAPI(title="certpilot", version=__version__, openapi_url="/api/openapi.json", docs_url="/api/docs")

    @api.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            app.db.check_ready()
        except ConfigurationError as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    return api
