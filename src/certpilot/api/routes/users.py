from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from certpilot.api.auth import Admin, CertpilotApp, current_principal
from certpilot.api.schemas import NewTokenOut, TokenIn, TokenOut, UserIn, UserOut
from certpilot.domain.model import Principal, Role
from certpilot.services import users as service
from certpilot.services.views import timestamp, token_view

router = APIRouter(prefix="/api/v1", tags=["users and tokens"])
_basic = HTTPBasic(auto_error=False, description="user name and password: only to create a token")
_bearer = HTTPBearer(auto_error=False)


@router.get("/users", response_model=list[UserOut])
def list_users(app: CertpilotApp, _: Admin) -> list[dict]:
    return [{"username": u.username, "role": u.role.value, "created_at": timestamp(u.created_at),
             "disabled": u.disabled} for u in service.list_users(app)]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(body: UserIn, app: CertpilotApp, who: Admin) -> dict:
    user = service.add_user(app, body.username, Role(body.role), body.password, actor=who.actor)
    return {"username": user.username, "role": user.role.value, "created_at": timestamp(user.created_at),
            "disabled": user.disabled}


def _caller(
    request: Request,
    app: CertpilotApp,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """A token is made for whoever proves who they are: by password (login) or by a token."""
    if basic is not None:
        source = request.client.host if request.client else "unknown"
        return service.authenticate_password(app, basic.username, basic.password, source=f"api from {source}")
    return current_principal(request, bearer)


@router.post("/tokens", response_model=NewTokenOut, status_code=201)
def create_token(body: TokenIn, app: CertpilotApp, who: Annotated[Principal, Depends(_caller)]) -> dict:
    token, info = service.create_token(app, who.username, name=body.name, expires_in_days=body.expires_in_days,
                                       actor=who.actor)
    return {**token_view(info), "token": token}


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(app: CertpilotApp, who: Annotated[Principal, Depends(current_principal)]) -> list[dict]:
    username = None if who.role is Role.ADMIN else who.username
    return [token_view(t) for t in service.list_tokens(app, username)]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], app: CertpilotApp, who: Annotated[Principal, Depends(current_principal)]) -> Response:
    if who.role is not Role.ADMIN and all(t.id != token_id for t in service.list_tokens(app, who.username)):
        raise HTTPException(404, f"token {token_id} does not exist")
    service.revoke_token(app, token_id, actor=who.actor)
    return Response(status_code=204)
