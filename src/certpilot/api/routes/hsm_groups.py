from __future__ import annotations

from fastapi import APIRouter, Response

from certpilot.api.auth import Admin, CertpilotApp, Viewer
from certpilot.api.schemas import HsmCheckOut, HsmGroupIn, HsmGroupOut
from certpilot.services import hsm as service
from certpilot.services.views import hsm_group_view

router = APIRouter(prefix="/api/v1/hsm-groups", tags=["HSM groups"])


@router.get("", response_model=list[HsmGroupOut])
def list_groups(app: CertpilotApp, _: Viewer) -> list[dict]:
    return [hsm_group_view(g) for g in service.list_groups(app)]


@router.post("", response_model=HsmGroupOut, status_code=201)
def add_group(body: HsmGroupIn, app: CertpilotApp, who: Admin) -> dict:
    return hsm_group_view(service.add_group(app, body.name, module_path=body.module_path,
                                            token_label=body.token_label, pin=body.pin, actor=who.actor,
                                            module_env=body.module_env))


@router.get("/{name}", response_model=HsmGroupOut)
def get_group(name: str, app: CertpilotApp, _: Viewer) -> dict:
    return hsm_group_view(service.get_group(app, name))


@router.post("/{name}/check", response_model=HsmCheckOut)
def check_group(name: str, app: CertpilotApp, _: Admin) -> dict:
    info = service.check_group(app, name)
    return {"label": info.label, "manufacturer": info.manufacturer, "model": info.model, "serial": info.serial,
            "mechanisms": info.mechanisms}


@router.delete("/{name}", status_code=204)
def remove_group(name: str, app: CertpilotApp, who: Admin) -> Response:
    service.remove_group(app, name, actor=who.actor)
    return Response(status_code=204)
