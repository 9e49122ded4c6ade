from __future__ import annotations

from fastapi import APIRouter, Response

from certpilot.api.auth import Admin, CertpilotApp, Viewer
from certpilot.api.schemas import ScriptIn, ScriptOut, ScriptUpdate
from certpilot.services import scripts as service
from certpilot.services.views import script_view

router = APIRouter(prefix="/api/v1/scripts", tags=["scripts"])


@router.get("", response_model=list[ScriptOut])
def list_scripts(app: CertpilotApp, _: Viewer) -> list[dict]:
    return [script_view(s) for s in service.list_scripts(app)]


@router.post("", response_model=ScriptOut, status_code=201)
def add_script(body: ScriptIn, app: CertpilotApp, who: Admin) -> dict:
    return script_view(service.add_script(app, body.name, body.source, timeout_s=body.timeout_s, actor=who.actor))


@router.get("/{name}", response_model=ScriptOut)
def get_script(name: str, app: CertpilotApp, _: Viewer) -> dict:
    return script_view(service.get_script(app, name))


@router.put("/{name}", response_model=ScriptOut)
def update_script(name: str, body: ScriptUpdate, app: CertpilotApp, who: Admin) -> dict:
    current = service.get_script(app, name)
    if current.source == body.source and current.timeout_s == body.timeout_s:
        return script_view(current)  # written back as read: nothing to do
    return script_view(service.update_script(app, name, body.source, timeout_s=body.timeout_s, actor=who.actor))


@router.delete("/{name}", status_code=204)
def remove_script(name: str, app: CertpilotApp, who: Admin) -> Response:
    service.remove_script(app, name, actor=who.actor)
    return Response(status_code=204)
