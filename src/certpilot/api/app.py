"""The FastAPI application factory: API, operations endpoints and the renewal loop."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from certpilot import __version__
from certpilot.api import problems
from certpilot.api.routes import certificates, events, hsm_groups, operations, profiles, scripts, users
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App


def create_app(app: App, reconciler: Reconciler | None = None, *, web: bool = True, https_only: bool = False) -> FastAPI:
    """The ASGI app: the API, and with `web` the web UI; with `reconciler`, its loop runs
    on a thread for the app's lifetime. `https_only` marks the session cookie Secure."""

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

    api = FastAPI(
        title="certpilot",
        version=__version__,
        description="Certificates signed by your CA through issuer scripts, renewed before they expire.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    api.state.certpilot = app
    problems.install(api)
    api.add_middleware(problems.RejectControlCharacters)
    for module in (operations, scripts, profiles, certificates, events, users, hsm_groups):
        api.include_router(module.router)
    if web:
        from certpilot.web.app import mount_web
        from certpilot.web.rendering import error_page

        api.state.html_errors = error_page
        mount_web(api, app, https_only=https_only)
    return api
