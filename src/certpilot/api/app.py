"""The REST API edge: its routers and problem responses, installed on the server's app
by the composition root (`certpilot.server`)."""

from __future__ import annotations

from fastapi import FastAPI

from certpilot.api import problems
from certpilot.api.routes import certificates, events, hsm_groups, operations, profiles, scripts, users


def install_api(api: FastAPI) -> None:
    """Add the REST API, the operations endpoints and their error handling to `api`."""
    problems.install(api)
    api.add_middleware(problems.RejectControlCharacters)
    for module in (operations, scripts, profiles, certificates, events, users, hsm_groups):
        api.include_router(module.router)
