from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from certpilot.api.auth import Admin, CertpilotApp, Operator, Viewer
from certpilot.api.concurrency import run_read
from certpilot.api.pagination import link_next
from certpilot.api.responses import JsonBody
from certpilot.api.schemas import (
    AttemptOut,
    CertificateIn,
    CertificateOut,
    CertificateUpdate,
    DeploymentOut,
    ExportIn,
    ExportOut,
    RevisionOut,
    SpecIn,
)
from certpilot.domain.errors import DeployFailed, IssuerFailed
from certpilot.domain.model import KeySpec, Outcome, Phase, make_subject
from certpilot.services import certificates as service
from certpilot.services import deployment, issuance
from certpilot.services.views import attempt_view, certificate_view, deployment_view, revision_view

router = APIRouter(prefix="/api/v1/certificates", tags=["certificates"])


def _spec_input(spec: SpecIn) -> service.SpecInput:
    s = spec.subject
    return service.SpecInput(
        profile=spec.profile,
        subject=make_subject(s.common_name, s.organization, s.organizational_unit, s.locality, s.state,
                             s.country, s.email_address),
        subject_alt_names=spec.subject_alt_names,
        key=KeySpec.parse(spec.key) if spec.key else None,
        hsm_group=spec.hsm_group,
        dynamic_params=spec.dynamic_params,
    )


@router.get("", response_model=list[CertificateOut])
async def list_certificates(
    request: Request,
    app: CertpilotApp,
    _: Viewer,
    phase: Phase | None = None,
    profile: str | None = None,
    expiring_within: Annotated[int | None, Query(ge=0, le=36500, description="days")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=128, description="the last name of the previous page")] = None,
) -> Response:
    # the views are `CertificateOut`'s shape already (tests hold them to it): the API's most
    # frequent answer is encoded as it is, not validated against the model once more; the
    # page is read and encoded in a read slot (api.concurrency)
    def page() -> Response:
        certs = service.list_certificates(app, expiring_within_days=expiring_within, phase=phase,
                                          profile=profile, after_name=cursor, limit=limit)
        answer = JsonBody([certificate_view(c) for c in certs])
        if len(certs) == limit:
            link_next(request, answer, certs[-1].name)
        return answer

    return await run_read(page)


@router.post("", response_model=CertificateOut, status_code=202,
             responses={201: {"model": CertificateOut, "description": "issued (with ?wait=true)"},
                        202: {"model": CertificateOut, "description": "accepted; with ?wait=true: the CA "
                              "deferred issuance (status.awaiting_ca)"},
                        502: {"description": "with ?wait=true: the attempt ended without a certificate"}})
def request_certificate(body: CertificateIn, response: Response, app: CertpilotApp, who: Operator,
                        wait: bool = False) -> dict:
    given = _spec_input(body.spec)
    holder = issuance.new_holder(app) if wait else None
    service.request_certificate(
        app, body.name, profile=given.profile, subject=given.subject, subject_alt_names=given.subject_alt_names,
        key=given.key, hsm_group=given.hsm_group, dynamic_params=given.dynamic_params, actor=who.actor,
        hold_for=holder,
    )
    if wait and _raise_unless_issued(issuance.attempt_or_wait(app, body.name, actor=who.actor, owner=holder)):
        deployment.deploy_or_wait(app, body.name, actor=who.actor)  # its outcome is in the status
        response.status_code = 201
    return certificate_view(service.get_certificate(app, body.name))


@router.get("/{name}", response_model=CertificateOut)
async def get_certificate(name: str, app: CertpilotApp, _: Viewer) -> Response:
    def one() -> Response:  # as the list: no second validation, in a read slot
        return JsonBody(certificate_view(service.get_certificate(app, name)))

    return await run_read(one)


@router.put("/{name}", response_model=CertificateOut)
def update_certificate(name: str, body: CertificateUpdate, app: CertpilotApp, who: Operator) -> dict:
    cert, _ = service.update_certificate(app, name, _spec_input(body.spec), actor=who.actor)
    return certificate_view(cert)


@router.delete("/{name}", status_code=204)
def remove_certificate(name: str, app: CertpilotApp, who: Operator) -> Response:
    service.remove_certificate(app, name, actor=who.actor)
    return Response(status_code=204)


@router.post("/{name}/renew", response_model=CertificateOut, status_code=202,
             responses={200: {"model": CertificateOut, "description": "renewed (with ?wait=true)"},
                        202: {"model": CertificateOut, "description": "accepted; with ?wait=true: the CA "
                              "deferred issuance (status.awaiting_ca)"},
                        502: {"description": "with ?wait=true: the attempt ended without a certificate"}})
def renew_certificate(name: str, response: Response, app: CertpilotApp, who: Operator, wait: bool = False) -> dict:
    holder = issuance.new_holder(app) if wait else None
    service.request_renewal(app, name, actor=who.actor, hold_for=holder)
    if wait and _raise_unless_issued(issuance.attempt_or_wait(app, name, actor=who.actor, owner=holder)):
        deployment.deploy_or_wait(app, name, actor=who.actor)  # its outcome is in the status
        response.status_code = 200
    return certificate_view(service.get_certificate(app, name))


@router.post("/{name}/deploy", response_model=CertificateOut,
             responses={502: {"description": "the deployment failed (files or command); retried with backoff"}})
def deploy_certificate(name: str, app: CertpilotApp, who: Operator) -> dict:
    """Deploy the served revision again now: the files into the profile's deploy root, then its command."""
    report = deployment.redeploy(app, name, actor=who.actor)
    if not report.deployed:
        raise DeployFailed(f"certificate {name!r}: deployment of revision {report.revision} failed: {report.error}")
    return certificate_view(service.get_certificate(app, name))


def _raise_unless_issued(report: issuance.AttemptReport) -> bool:
    """The one rule for `?wait=true`: the answer is the attempt's outcome. Issued (returns
    True): 201 for a new certificate, 200 for a renewal, with the certificate. Deferred by
    the CA (returns False): 202, with the certificate awaiting the CA (`status.awaiting_ca`).
    Failed: 502 (the issuer failed) with the attempt's outcome and error; the certificate
    stays as the attempt left it (`failed`, or still serving its previous revision) and is
    retried with backoff."""
    if report.outcome is Outcome.DEFERRED:
        return False
    if not issuance.is_success(report):
        raise IssuerFailed(f"certificate {report.name!r}: the attempt ended {report.outcome.value}: {report.error}",
                           outcome=report.outcome.value)
    return True


@router.get("/{name}/pem", response_class=PlainTextResponse,
            responses={200: {"content": {"application/x-pem-file": {}}, "description": "leaf then chain"}})
def get_pem(name: str, app: CertpilotApp, who: Viewer) -> PlainTextResponse:
    material = service.export_material(app, name, include_key=False, actor=who.actor)
    return PlainTextResponse(material.fullchain_pem, media_type="application/x-pem-file")


@router.get("/{name}/revisions", response_model=list[RevisionOut])
def list_revisions(name: str, app: CertpilotApp, _: Viewer) -> list[dict]:
    current = service.get_certificate(app, name).status.revision
    return [revision_view(r, current) for r in service.list_revisions(app, name)]


@router.get("/{name}/deployments", response_model=list[DeploymentOut])
def list_deployments(name: str, app: CertpilotApp, _: Viewer) -> list[dict]:
    """Deployments of the certificate to its profile's deploy root, newest first."""
    return [deployment_view(d) for d in deployment.list_deployments(app, name)]


@router.get("/{name}/attempts", response_model=list[AttemptOut])
def list_attempts(name: str, app: CertpilotApp, _: Viewer) -> list[dict]:
    return [attempt_view(a) for a in service.list_attempts(app, name)]


@router.post("/{name}/export", response_model=ExportOut)
def export_certificate(name: str, body: ExportIn, app: CertpilotApp, who: Admin) -> dict:
    service.check_pkcs12_protection(body.format, body.include_key, (body.password or "").encode() or None,
                                    body.no_password)
    material = service.export_material(app, name, include_key=body.include_key, fmt=body.format, actor=who.actor)
    out = {"revision": material.revision, "certificate": material.leaf_pem, "chain": material.chain_pem,
           "fullchain": material.fullchain_pem}
    if body.format == "pkcs12":
        password = body.password.encode() if body.password else None
        out["pkcs12_base64"] = base64.b64encode(material.pkcs12(password)).decode()
    else:
        out["private_key"] = material.private_key_pem
    return out
