"""Deployments: what a deployment needs loaded, its record, and the status it leaves.

The status row carries the deployment's progress so that a crash anywhere is
finished by the next worker: `deploy_written_revision` says the files of that
revision are in place (only the command is left), `deployed_revision` says the
command ran too. Decisions (when to retry) are the caller's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from certpilot.domain.model import DeploySettings
from certpilot.store.certificates import _id, _row
from certpilot.store.profiles import deploy_of
from certpilot.store.tables import CertificateRow, CertificateStatusRow, DeploymentRow


@dataclass(frozen=True)
class DeployTarget:
    """The served revision of one certificate and where it goes."""

    name: str
    profile: str
    deploy: DeploySettings
    revision: int | None
    leaf_pem: str | None
    chain_pem: str | None
    key_id: str | None
    written_revision: int | None
    deployed_revision: int | None
    failures: int
    failed_revision: int | None


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    revision: int
    directory: str
    worker: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None
    error: str | None
    output: str | None


def deploy_target(session: Session, name: str) -> DeployTarget:
    row = _row(session, name)
    st, rev = row.status, row.status.current_revision
    return DeployTarget(
        name=name, profile=row.profile.name, deploy=deploy_of(row.profile),
        revision=rev.number if rev else None, leaf_pem=rev.leaf_pem if rev else None,
        chain_pem=rev.chain_pem if rev else None, key_id=rev.key_id if rev else None,
        written_revision=st.deploy_written_revision, deployed_revision=st.deployed_revision,
        failures=st.deploy_failures or 0, failed_revision=st.deploy_failed_revision,
    )


def start_deployment(session: Session, name: str, *, revision: int, directory: str, worker: str,
                     now: dt.datetime) -> int:
    """A new deployment record; one left unfinished (its worker died: the caller holds the
    lease now) is marked `interrupted`."""
    cert_id = _id(session, name)
    session.execute(
        update(DeploymentRow)
        .where(DeploymentRow.certificate_id == cert_id, DeploymentRow.finished_at.is_(None))
        .values(outcome="interrupted", finished_at=now, error="the worker stopped before the deployment ended")
        .execution_options(synchronize_session=False)
    )
    row = DeploymentRow(certificate_id=cert_id, revision_number=revision, directory=directory,
                        worker=worker, started_at=now)
    session.add(row)
    session.flush()
    return row.id


def mark_written(session: Session, name: str, revision: int) -> None:
    """The files of `revision` are in place: a crash from here on leaves only the command."""
    _row(session, name).status.deploy_written_revision = revision


def finish_deployment(
    session: Session, name: str, *, deployment_id: int, revision: int, error: str | None,
    output: str | None, now: dt.datetime, retry_at: dt.datetime | None,
) -> int:
    """Record the outcome (None `error`: deployed). Returns the consecutive failures of this revision."""
    record = session.get(DeploymentRow, deployment_id)
    if record is not None:
        record.finished_at, record.error, record.output = now, error, output
        record.outcome = "deployed" if error is None else "failed"
    st = _row(session, name).status
    if error is None:
        st.deployed_revision, st.deploy_error = revision, None
        st.deploy_failures, st.deploy_retry_at, st.deploy_failed_revision = 0, None, None
        return 0
    failures = (st.deploy_failures or 0) + 1 if st.deploy_failed_revision == revision else 1
    st.deploy_error, st.deploy_failures = error, failures
    st.deploy_retry_at, st.deploy_failed_revision = retry_at, revision
    return failures


def forget_deployments(session: Session, profile_id: int, now: dt.datetime) -> int:
    """The profile's deploy settings changed: every certificate of it deploys again at
    the loop's next pass (to the new place). Returns how many were marked."""
    ids = select(CertificateRow.id).where(CertificateRow.profile_id == profile_id).scalar_subquery()
    return session.execute(
        update(CertificateStatusRow)
        .where(CertificateStatusRow.certificate_id.in_(ids))
        .values(deploy_written_revision=None, deployed_revision=None, deploy_error=None, deploy_failures=0,
                deploy_retry_at=None, deploy_failed_revision=None, next_action_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def request_redeploy(session: Session, name: str) -> None:
    """Deploy the served revision again, files and command, skipping any backoff."""
    st = _row(session, name).status
    st.deploy_written_revision = st.deployed_revision = None
    st.deploy_retry_at = None


def list_deployments(session: Session, name: str, limit: int = 50) -> list[DeploymentRecord]:
    """Newest first."""
    query = (select(DeploymentRow).where(DeploymentRow.certificate_id == _id(session, name))
             .order_by(DeploymentRow.id.desc()).limit(limit))
    return [DeploymentRecord(r.id, r.revision_number, r.directory, r.worker, r.started_at, r.finished_at,
                             r.outcome, r.error, r.output) for r in session.scalars(query)]
