"""The public JSON shapes (DESIGN §5), shared by the CLI's --json and the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

from certpilot.domain.model import (
    SENSITIVE_MASK,
    ApiToken,
    Attempt,
    Certificate,
    CertificateStatus,
    Event,
    HsmGroup,
    Profile,
    Revision,
    Script,
)


def timestamp(value: dt.datetime | None) -> str | None:
    """RFC 3339 UTC with a `Z`, to the second."""
    if value is None:
        return None
    if value.tzinfo is not _UTC:  # the store's values are UTC already: a list page has hundreds
        value = value.astimezone(_UTC)
    return value.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


_UTC = dt.timezone.utc


def script_view(script: Script) -> dict[str, Any]:
    return {
        "name": script.name,
        "kind": script.kind,
        "sha256": script.sha256,
        "timeout_s": script.timeout_s,
        "source": script.source,
        "created_at": timestamp(script.created_at),
        "updated_at": timestamp(script.updated_at),
    }


def profile_view(profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "script": profile.script,
        "params": [
            {
                "name": p.name,
                "value": None if p.dynamic else (SENSITIVE_MASK if p.sensitive else p.value),
                "sensitive": p.sensitive,
                "dynamic": p.dynamic,
            }
            for p in profile.params
        ],
        "renew_before_days": profile.renewal.renew_before_days,
        "renew_before_percent": profile.renewal.renew_before_percent,
        "warning_days": list(profile.renewal.warning_days),
        "max_pending_days": profile.renewal.max_pending_days,
        "default_key": str(profile.default_key),
        "concurrency": profile.sandbox.concurrency,
        "allow_read": list(profile.sandbox.allow_read),
        "allow_write": list(profile.sandbox.allow_write),
        "deploy_root": profile.deploy.root,
        "deploy_command": profile.deploy.command,
        "deploy_owner": profile.deploy.owner,
        "notify_url": None if profile.notify.url is None else SENSITIVE_MASK,
        "notify_email": profile.notify.email,
        "created_at": timestamp(profile.created_at),
        "updated_at": timestamp(profile.updated_at),
    }


def certificate_view(cert: Certificate) -> dict[str, Any]:
    spec, st = cert.spec, cert.status
    return {
        "name": cert.name,
        "spec": {
            "profile": spec.profile,
            "subject": spec.subject.as_dict(),
            "subject_alt_names": [str(s) for s in spec.subject_alt_names],
            "key": str(spec.key),
            "hsm_group": spec.hsm_group,
            "dynamic_params": {
                k: (SENSITIVE_MASK if k in cert.sensitive_params else v) for k, v in spec.dynamic_params.items()
            },
        },
        "status": {
            "phase": st.phase.value,
            "revision": st.revision,
            "serial": st.serial,
            "not_before": timestamp(st.not_before),
            "not_after": timestamp(st.not_after),
            "fingerprint_sha256": st.fingerprint_sha256,
            "expiry_status": st.expiry_status.value if st.expiry_status else None,
            "renew_at": timestamp(st.renew_at),
            "next_action_at": timestamp(st.next_action_at),
            "failures": st.failures,
            "last_error": st.last_error,
            "deployed_revision": st.deployed_revision,
            "deploy_error": st.deploy_error,
            "awaiting_ca": awaiting_ca_view(st),
            "renewal_info": renewal_info_view(st),
        },
    }


def renewal_info_view(st: CertificateStatus) -> dict[str, Any] | None:
    """The CA's suggested renewal window (RFC 9773) for the served revision; None where
    the script does not ask. `window_start`/`window_end` None: the CA suggests none."""
    info = st.renewal_info
    if info is None:
        return None
    return {"window_start": timestamp(info.window_start), "window_end": timestamp(info.window_end),
            "checked_at": timestamp(info.checked_at), "next_check_at": timestamp(info.next_check_at),
            "explanation_url": info.explanation_url, "error": info.error}


def awaiting_ca_view(st: CertificateStatus) -> dict[str, Any] | None:
    """A deferred request: the CA accepted it and has not issued yet (None otherwise)."""
    if st.deferred_since is None:
        return None
    return {"since": timestamp(st.deferred_since), "next_poll_at": timestamp(st.next_poll_at),
            "polls": st.deferred_polls}


def revision_view(rev: Revision, current: int | None = None) -> dict[str, Any]:
    return {
        "revision": rev.revision,
        "serial": rev.serial,
        "not_before": timestamp(rev.not_before),
        "not_after": timestamp(rev.not_after),
        "fingerprint_sha256": rev.fingerprint_sha256,
        "public_key_sha256": rev.public_key_sha256,
        "issued_at": timestamp(rev.issued_at),
        "current": rev.revision == current,
    }


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "kind": attempt.kind,
        "started_at": timestamp(attempt.started_at),
        "finished_at": timestamp(attempt.finished_at),
        "outcome": attempt.outcome.value if attempt.outcome else None,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "output": attempt.output,
        "revision": attempt.revision,
    }


def deployment_view(record: Any) -> dict[str, Any]:
    """One deployment run (`store.deployments.DeploymentRecord`)."""
    return {
        "id": record.id,
        "revision": record.revision,
        "directory": record.directory,
        "started_at": timestamp(record.started_at),
        "finished_at": timestamp(record.finished_at),
        "outcome": record.outcome,
        "error": record.error,
        "output": record.output,
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": timestamp(event.at),
        "actor": event.actor,
        "kind": event.kind,
        "object_type": event.object_type,
        "object": event.object_name,
        "details": dict(event.details),
    }


def token_view(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "username": token.username,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": timestamp(token.created_at),
        "expires_at": timestamp(token.expires_at),
        "revoked_at": timestamp(token.revoked_at),
        "last_used_at": timestamp(token.last_used_at),
        "parent_id": token.parent_id,
        "role": token.role.value if token.role else None,
    }


def hsm_group_view(group: HsmGroup) -> dict[str, Any]:
    return {
        "name": group.name,
        "module_path": group.module_path,
        "token_label": group.token_label,
        "module_env": dict(group.module_env),
        "pin": SENSITIVE_MASK,
        "created_at": timestamp(group.created_at),
        "updated_at": timestamp(group.updated_at),
    }
