from __future__ import annotations

from fastapi import APIRouter, Response

from certpilot.api.auth import Admin, CertpilotApp, Viewer
from certpilot.api.schemas import ProfileIn, ProfileOut, ProfileUpdate, ScriptStateOut
from certpilot.domain.model import DeploySettings, KeySpec, NotifySettings, ProfileParam
from certpilot.services import profiles as service
from certpilot.services.views import profile_view

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"])


def _params(body: ProfileUpdate) -> list[ProfileParam]:
    return [ProfileParam(p.name, None if p.dynamic else p.value, sensitive=p.sensitive, dynamic=p.dynamic)
            for p in body.params]


def _deploy(body: ProfileUpdate) -> DeploySettings:
    return DeploySettings(root=body.deploy_root, command=body.deploy_command, owner=body.deploy_owner)


def _notify(body: ProfileUpdate) -> NotifySettings:
    return NotifySettings(url=body.notify_url, email=body.notify_email)


@router.get("", response_model=list[ProfileOut])
def list_profiles(app: CertpilotApp, _: Viewer) -> list[dict]:
    return [profile_view(p) for p in service.list_profiles(app)]


@router.post("", response_model=ProfileOut, status_code=201)
def create_profile(body: ProfileIn, app: CertpilotApp, who: Admin) -> dict:
    return profile_view(service.create_profile(
        app, body.name, script=body.script, params=_params(body), renew_before_days=body.renew_before_days,
        renew_before_percent=body.renew_before_percent, warning_days=body.warning_days,
        default_key=KeySpec.parse(body.default_key), concurrency=body.concurrency, allow_read=body.allow_read,
        allow_write=body.allow_write, max_pending_days=body.max_pending_days, deploy=_deploy(body),
        notify=_notify(body), actor=who.actor,
    ))


@router.get("/{name}", response_model=ProfileOut)
def get_profile(name: str, app: CertpilotApp, _: Viewer) -> dict:
    return profile_view(service.get_profile(app, name))


@router.put("/{name}", response_model=ProfileOut)
def update_profile(name: str, body: ProfileUpdate, app: CertpilotApp, who: Admin) -> dict:
    return profile_view(service.update_profile(
        app, name, script=body.script, params=_params(body), renew_before_days=body.renew_before_days,
        renew_before_percent=body.renew_before_percent, warning_days=body.warning_days,
        default_key=KeySpec.parse(body.default_key), concurrency=body.concurrency, allow_read=body.allow_read,
        allow_write=body.allow_write, max_pending_days=body.max_pending_days, deploy=_deploy(body),
        notify=_notify(body), actor=who.actor,
    ))


@router.get("/{name}/state", response_model=ScriptStateOut)
def get_script_state(name: str, app: CertpilotApp, _: Admin) -> dict:
    """The keys the profile's script keeps in `context.state`; never the values."""
    return {"profile": name, "keys": service.script_state_keys(app, name)}


@router.delete("/{name}", status_code=204)
def remove_profile(name: str, app: CertpilotApp, who: Admin) -> Response:
    service.remove_profile(app, name, actor=who.actor)
    return Response(status_code=204)
