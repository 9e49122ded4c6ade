"""Who is calling: a Bearer API token (or, for the web UI, its session), and may they.

Only the token's lookup touches the database: in a read slot (`api.concurrency`) for the
role-checked routes, in the thread pool where `current_principal` is used directly.
`certpilot_app` and the role check are `async def`: they only read what is at hand, and a
plain `def` would cost each request one more trip through the thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from certpilot.api.concurrency import run_read
from certpilot.domain.model import Principal, Role
from certpilot.services.app import App
from certpilot.services.users import SESSION_PRINCIPAL_KEY, authenticate_token

_bearer = HTTPBearer(auto_error=False, description="An API token from `certpilot token create` or POST /api/v1/tokens")


def app_of(request: Request) -> App:
    return request.app.state.certpilot  # type: ignore[no-any-return]


async def certpilot_app(request: Request) -> App:
    return app_of(request)


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is not None:
        return authenticate_token(app_of(request), credentials.credentials)
    from_session = request.scope.get(SESSION_PRINCIPAL_KEY)
    if isinstance(from_session, Principal):
        return from_session
    raise HTTPException(401, "authentication required: send Authorization: Bearer <token>",
                        headers={"WWW-Authenticate": "Bearer"})


async def checked_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """`current_principal`, with the token's lookup in a read slot."""
    if credentials is not None:
        return await run_read(authenticate_token, app_of(request), credentials.credentials)
    return current_principal(request, None)  # the web session's principal, or 401: no database


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets `role` and the roles above it through, and answers 403 to the rest."""

    async def dependency(principal: Annotated[Principal, Depends(checked_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise HTTPException(403, f"this needs the {role.value} role; {principal.username} is {principal.role.value}")
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
CertpilotApp = Annotated[App, Depends(certpilot_app)]
