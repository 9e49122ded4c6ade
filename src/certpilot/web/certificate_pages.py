"""Pages: the certificate inventory, the new-certificate form, a certificate's detail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from certpilot.domain.errors import CertpilotError, InvalidInput
from certpilot.domain.model import SENSITIVE_MASK, KeySpec, Phase, make_subject
from certpilot.services import certificates as service
from certpilot.services import deployment, issuance
from certpilot.services import hsm as hsm_service
from certpilot.services import profiles as profile_service
from certpilot.web.pages import KEY_SPECS, redirect
from certpilot.web.rendering import error_field, flash, render
from certpilot.web.session import Csrf, PageAdmin, PageOperator, PageViewer

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 200
SUBJECT_FIELDS = ("common_name", "organization", "organizational_unit", "locality", "state", "country", "email_address")


@router.get("/certificates", response_class=HTMLResponse)
def certificates(request: Request, user: PageViewer, q: str = "", phase: str = "", expiry: str = "",
                 profile: str = "", cursor: str | None = None) -> HTMLResponse:
    app = request.app.state.certpilot
    try:
        phase_filter = Phase(phase) if phase else None
    except ValueError:
        phase_filter = None
    profiles = profile_service.list_profiles(app)
    known_profile = profile if any(p.name == profile for p in profiles) else None
    page = service.list_certificates(app, phase=phase_filter, profile=known_profile, after_name=cursor,
                                     limit=PAGE_SIZE)
    next_cursor = page[-1].name if len(page) == PAGE_SIZE else None
    needle = q.strip().lower()
    shown = [
        c for c in page
        if (not needle or needle in c.name.lower() or needle in c.spec.subject.common_name.lower())
        and (not expiry or (c.status.expiry_status is not None and c.status.expiry_status.value == expiry))
    ]
    return render(request, "certificates.html", title="Certificates", section="Certificates", user=user,
                  certs=shown, profiles=profiles, phases=[p.value for p in Phase],
                  filters={"q": q, "phase": phase, "expiry": expiry, "profile": profile},
                  next_cursor=next_cursor,
                  next_url=str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None)


def _new_form(request: Request, user, *, form: dict, selected: str | None, errors: dict | None = None,  # type: ignore[no-untyped-def]
              status_code: int = 200) -> HTMLResponse:
    profiles = profile_service.list_profiles(request.app.state.certpilot)
    if selected is None and profiles:
        selected = profiles[0].name
    default_key = next((str(p.default_key) for p in profiles if p.name == selected), "ec:p256")
    return render(request, "certificate_new.html", title="New certificate", section="Certificates", user=user,
                  profiles=profiles, selected=selected, form=form, errors=errors or {}, key_specs=KEY_SPECS,
                  hsm_groups=hsm_service.list_groups(request.app.state.certpilot),
                  default_key=default_key, status_code=status_code)


@router.get("/certificates/new", response_class=HTMLResponse)
def new_certificate(request: Request, user: PageOperator, profile: str | None = None) -> HTMLResponse:
    form = {k: v for k, v in request.query_params.items() if k not in ("csrf",)}
    return _new_form(request, user, form=form, selected=profile)


@router.post("/certificates", response_class=HTMLResponse)
async def create_certificate(request: Request, user: PageOperator, _: Csrf) -> Response:
    app = request.app.state.certpilot
    data = await request.form()
    form = {k: str(v) for k, v in data.items() if k != "csrf"}
    name, profile = form.get("name", "").strip(), form.get("profile", "")
    prefix = f"dyn.{profile}."
    dynamic = {k[len(prefix):]: v for k, v in form.items() if k.startswith(prefix)}
    try:
        subject = make_subject(*(form.get(f, "") for f in SUBJECT_FIELDS))
        sans = [line.strip() for line in form.get("subject_alt_names", "").splitlines() if line.strip()]
        holder = issuance.new_holder(app) if "issue_now" in form else None
        service.request_certificate(
            app, name, profile=profile, subject=subject, subject_alt_names=sans,
            key=KeySpec.parse(form.get("key", "ec:p256")), hsm_group=form.get("hsm_group") or None,
            dynamic_params=dynamic, actor=user.actor, hold_for=holder,
        )
    except CertpilotError as exc:
        field = error_field(exc)
        return _new_form(request, user, form=form, selected=profile or None, errors={field: str(exc)},
                         status_code=422)
    if "issue_now" in form:
        _attempt(request, name, user.actor, holder)
    else:
        flash(request, "ok", f"Certificate {name} requested; the renewal loop will issue it.")
    return redirect(f"/certificates/{name}")


def _attempt(request: Request, name: str, actor: str, holder: str | None) -> None:
    try:
        report = issuance.attempt_or_wait(request.app.state.certpilot, name, actor=actor, owner=holder)
    except CertpilotError as exc:
        flash(request, "error", str(exc))
        return
    if issuance.is_success(report):
        flash(request, "ok", f"Revision {report.revision} of {name} issued.")
        deployed = deployment.deploy_or_wait(request.app.state.certpilot, name, actor=actor)
        if deployed is not None and not deployed.deployed:
            flash(request, "error", f"The deployment of revision {deployed.revision} failed: {deployed.error}")
    else:
        flash(request, "error", f"The attempt ended {report.outcome.value}: {report.error}")


@router.get("/certificates/{name}", response_class=HTMLResponse)
def certificate_page(request: Request, name: str, user: PageViewer) -> HTMLResponse:
    app = request.app.state.certpilot
    cert = service.get_certificate(app, name)
    dynamic = {k: (SENSITIVE_MASK if k in cert.sensitive_params else v) for k, v in cert.spec.dynamic_params.items()}
    return render(request, "certificate.html", title=f"Certificate {name}", section="Certificates", user=user,
                  cert=cert, dynamic=dynamic, revisions=service.list_revisions(app, name),
                  attempts=service.list_attempts(app, name), events=service.certificate_events(app, name),
                  deploys=profile_service.get_profile(app, cert.spec.profile).deploy.root is not None,
                  deployments=deployment.list_deployments(app, name)[:10])


@router.post("/certificates/{name}/renew")
def renew(request: Request, name: str, user: PageOperator, _: Csrf) -> Response:
    app = request.app.state.certpilot
    holder = issuance.new_holder(app)
    service.request_renewal(app, name, actor=user.actor, hold_for=holder)
    _attempt(request, name, user.actor, holder)
    return redirect(f"/certificates/{name}")


@router.post("/certificates/{name}/deploy")
def deploy(request: Request, name: str, user: PageOperator, _: Csrf) -> Response:
    try:
        report = deployment.redeploy(request.app.state.certpilot, name, actor=user.actor)
    except CertpilotError as exc:
        flash(request, "error", str(exc))
        return redirect(f"/certificates/{name}")
    if report.deployed:
        flash(request, "ok", f"Revision {report.revision} of {name} deployed.")
    else:
        flash(request, "error", f"The deployment of revision {report.revision} failed: {report.error}")
    return redirect(f"/certificates/{name}")


@router.get("/certificates/{name}/download/{kind}")
def download(request: Request, name: str, kind: str, user: PageViewer) -> Response:
    material = service.export_material(request.app.state.certpilot, name, include_key=False, actor=user.actor)
    texts = {"cert.pem": material.leaf_pem, "chain.pem": material.chain_pem, "fullchain.pem": material.fullchain_pem}
    if kind not in texts:
        raise InvalidInput(f"there is no download called {kind!r}: use cert.pem, chain.pem or fullchain.pem")
    return Response(texts[kind], media_type="application/x-pem-file",
                    headers={"Content-Disposition": f'attachment; filename="{name}-{kind}"'})


@router.post("/certificates/{name}/export-key")
def export_key(request: Request, name: str, user: PageAdmin, _: Csrf,
               confirm: Annotated[str, Form()] = "") -> Response:
    if not confirm:
        flash(request, "error", "Tick the confirmation to export the private key.")
        return redirect(f"/certificates/{name}")
    material = service.export_material(request.app.state.certpilot, name, include_key=True, actor=user.actor)
    return Response(material.private_key_pem or "", media_type="application/x-pem-file",
                    headers={"Content-Disposition": f'attachment; filename="{name}-key.pem"'})


@router.post("/certificates/{name}/delete")
def delete(request: Request, name: str, user: PageOperator, _: Csrf) -> Response:
    service.remove_certificate(request.app.state.certpilot, name, actor=user.actor)
    flash(request, "ok", f"Certificate {name} deleted.")
    return RedirectResponse("/certificates", status_code=303)
