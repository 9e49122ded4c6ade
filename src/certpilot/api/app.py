"""The FastAPI application factory. For now: the health probes."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from certpilot import __version__
from certpilot.domain.errors import ConfigurationError
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App


def create_app(app: App, reconciler: Reconciler | None = None) -> FastAPI:
    """The ASGI app; with `reconciler`, its loop runs on a thread for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = None
        if reconciler is not None:
            thread = threading.Thread(target=reconciler.run_forever, name="renewal-loop", daemon=True)
            thread.start()
        try:
            yield
        finally:
            if reconciler is not None and thread is not None:
                reconciler.stop()
                thread.join()

    api = FastAPI(title="certpilot", version=__version__, openapi_url="/api/openapi.json", docs_url="/api/docs",
                  lifespan=lifespan)

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
