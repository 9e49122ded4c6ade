from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from certpilot.api.auth import Admin, CertpilotApp, current_principal
from certpilot.api.schemas import LoggedOutOut, NewTokenOut, PasswordIn, TokenIn, TokenOut, UserIn, UserOut
from certpilot.domain.model import User, Principal, Role
from certpilot.services import users as service
from certpilot.services.views import timestamp, token_view

router = APIRouter(prefix="/api/v1", tags=["users and tokens"])
_basic = HTTPBasic(auto_error=False, description="user name and password: only to create a token")
_bearer = HTTPBearer(auto_error=False)


UserName = Annotated[str, Path(min_length=1, max_length=128)]


def _user_view(user: User) -> dict:
    return {"username": user.username, "role": user.role.value, "created_at": timestamp(user.created_at),
            "disabled": user.disabled}


@router.get("/users", response_model=list[UserOut])
def list_users(app: CertpilotApp, _: Admin) -> list[dict]:
    return [_user_view(u) for u in service.list_users(app)]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(body: UserIn, app: CertpilotApp, who: Admin) -> dict:
    return _user_view(service.add_user(app, body.username, Role(body.role), body.password, actor=who.actor))


@router.delete("/users/{name}", status_code=204)
def remove_user(name: UserName, app: CertpilotApp, who: Admin) -> Response:
    """Remove a user, their tokens and their sessions."""
    service.remove_user(app, name, actor=who.actor)
    return Response(status_code=204)


@router.post("/users/{name}/disable", response_model=UserOut)
def disable_user(name: UserName, app: CertpilotApp, who: Admin) -> dict:
    """Disable a user: every session and token of theirs ends at once."""
    return _user_view(service.set_disabled(app, name, True, actor=who.actor))


@router.post("/users/{name}/enable", response_model=UserOut)
def enable_user(name: UserName, app: CertpilotApp, who: Admin) -> dict:
    return _user_view(service.set_disabled(app, name, False, actor=who.actor))


@router.put("/users/{name}/password", response_model=UserOut)
def set_password(name: UserName, body: PasswordIn, app: CertpilotApp, who: Admin) -> dict:
    """A new password: every session and token of the user ends."""
    return _user_view(service.set_password(app, name, body.password, actor=who.actor))


@router.post("/logout-everywhere", response_model=LoggedOutOut)
def log_out_everywhere(app: CertpilotApp, who: Annotated[Principal, Depends(current_principal)]) -> dict:
    """End every web session and revoke every API token of the caller (this one too)."""
    return service.log_out_everywhere(app, who.username, actor=who.actor)


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
                                       role=Role(body.role) if body.role else None,
                                       parent_token_id=who.token_id, actor=who.actor)
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
