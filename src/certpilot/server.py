"""The composition root of `certpilot serve`: one ASGI app that mounts both edges (the
REST API and the web UI) over one `App`, and runs the renewal loop for its lifetime.
The edges do not import each other; what they share comes from the services."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from certpilot import __version__
from certpilot.api.app import install_api
from certpilot.api.body_limits import LimitBodySize
from certpilot.api.docs import install_docs
from certpilot.api.login_admission import LoginAdmission
from certpilot.reconciler.loop import Reconciler
from certpilot.services.app import App
from certpilot.web.app import mount_web
from certpilot.web.rendering import error_page


def create_server(app: App, reconciler: Reconciler | None = None, *, web: bool = True,
                  https_only: bool = False) -> FastAPI:
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

    server = FastAPI(
        title="certpilot",
        version=__version__,
        description="Certificates signed by your CA through issuer scripts, renewed before they expire.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # no Swagger UI from a CDN: certpilot.api.docs serves a plain page
        redoc_url=None,
        lifespan=lifespan,
    )
    server.state.certpilot = app
    install_api(server)
    install_docs(server)
    if web:
        server.state.html_errors = error_page
        mount_web(server, app, https_only=https_only)
    server.add_middleware(LoginAdmission)  # logins beyond a few in flight: 429 before they take a thread
    server.add_middleware(LimitBodySize)  # last added, outermost: bodies are judged before anything reads them
    return server
