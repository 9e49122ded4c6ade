"""`certpilot serve --workers N`: N uvicorn worker processes answer HTTP; the renewal loop
runs once, on a thread of the parent process, never once per worker.

One server process does all of its Python work under one GIL, so concurrent requests
queue for one core. With `--workers N` the parent binds the socket and keeps N worker
processes (uvicorn's supervisor: a worker that dies is replaced); each worker builds its
own `App` (database engine, sealer, and a script runner should a request need one, e.g.
`?wait=true`) from the same settings and serves the API and the web UI without a loop.
API servers hold no state (DESIGN §4), so any worker may answer any request; on SQLite
the workers read side by side (WAL) and take turns writing.

The workers are started afresh (spawned, not forked), so the settings given as flags
reach them through the environment (`CERTPILOT_DATA_DIR`, `CERTPILOT_DATABASE_URL`).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from certpilot.services.app import App

_FACTORY = "certpilot.cli.serve_workers:{}"


class _ClosesApp:
    """The worker's ASGI app; its `App` is closed when the server shuts down (its script
    runner, if a request started one, does not outlive the worker)."""

    def __init__(self, asgi: Any, app: App) -> None:
        self.asgi = asgi
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.asgi(scope, receive, send)
            return

        async def send_then_close(message: Any) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.app.close()
            await send(message)

        await self.asgi(scope, receive, send_then_close)


def _worker_api(https_only: bool) -> Any:
    from certpilot.cli.context import open_app
    from certpilot.cli.main import configure_logging
    from certpilot.server import create_server

    configure_logging()
    app = open_app()
    return _ClosesApp(create_server(app, None, https_only=https_only), app)


def worker_api() -> Any:
    """uvicorn's factory in each worker process (HTTP)."""
    return _worker_api(https_only=False)


def worker_api_https() -> Any:
    """uvicorn's factory in each worker process (HTTPS: the session cookie is Secure)."""
    return _worker_api(https_only=True)


def hand_settings_to_workers(overrides: dict[str, Any]) -> None:
    """The `--data-dir` / `--database-url` flags, as the environment the workers read."""
    if overrides.get("data_dir") is not None:
        os.environ["CERTPILOT_DATA_DIR"] = str(Path(overrides["data_dir"]).absolute())
    if overrides.get("database_url") is not None:
        os.environ["CERTPILOT_DATABASE_URL"] = str(overrides["database_url"])


def listening_socket(config: Any) -> socket.socket:
    """uvicorn's listening socket, with TCP_NODELAY, which the connections accepted from it
    inherit. uvicorn makes it with protocol 0, so asyncio does not set TCP_NODELAY on the
    accepted sockets as it does for the ones of a server it binds itself: without it a small
    answer waited for the client's delayed ACK (~40 ms per /healthz with 8 clients)."""
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock  # type: ignore[no-any-return]


def serve_in_workers(app: App, *, host: str, port: int, workers: int, tls_cert: Path | None,
                     tls_key: Path | None, overrides: dict[str, Any]) -> None:
    """Serve with `workers` processes; the renewal loop runs here until the server stops."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from certpilot.reconciler.loop import Reconciler

    hand_settings_to_workers(overrides)
    reconciler = Reconciler(app)
    loop = threading.Thread(target=reconciler.run_forever, name="renewal-loop", daemon=True)
    loop.start()
    try:
        config = uvicorn.Config(_FACTORY.format("worker_api_https" if tls_cert else "worker_api"), factory=True,
                                workers=workers, host=host, port=port, log_level="info",
                                ssl_certfile=tls_cert, ssl_keyfile=tls_key)
        Multiprocess(config, sockets=[listening_socket(config)]).run()  # what uvicorn.run does for workers
    finally:
        reconciler.stop()
        loop.join()
