"""store.deployments: the target a deployment loads (served revision, the profile's deploy
settings), its records newest first (an unfinished one is marked interrupted when the next
starts), the progress and failure count it leaves on the status, what a settings change or a
redeploy resets; records go with their certificate."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from certpilot.domain.errors import NotFound
from certpilot.domain.model import DeploySettings
from certpilot.store import deployments
from certpilot.store.certificates import remove_certificate
from certpilot.store.session import Database
from certpilot.store.tables import CertificateRow, CertificateStatusRow, DeploymentRow
from tests.integration.store.conftest import T0, Seed

DEPLOY = DeploySettings(root="/srv/certs", command="/usr/local/bin/reload", owner="www-data")
MIN = dt.timedelta(minutes=1)


@pytest.fixture
def certs(db: Database, seed: Seed) -> None:
    """web1 and web2 deploy (profile `dep`), web1 serves revision 2; other1 is elsewhere."""
    with db.transaction() as session:
        seed.profile(session, "dep", deploy=DEPLOY)
        seed.profile(session, "other", deploy=DeploySettings(root="/elsewhere"))
        seed.certificate(session, "web1", profile="dep")
        seed.certificate(session, "web2", profile="dep")
        seed.certificate(session, "other1", profile="other")
        seed.revision(session, "web1", 1)
        seed.revision(session, "web1", 2)


def _status(db: Database, name: str) -> CertificateStatusRow:
    with db.read() as session:
        row = session.scalar(select(CertificateRow).where(CertificateRow.name == name))
        assert row is not None
        status = row.status
        session.expunge_all()
        return status


def test_the_target_is_the_served_revision_and_the_profiles_settings(db: Database, certs: None) -> None:
    with db.read() as session:
        target = deployments.deploy_target(session, "web1")
        pending = deployments.deploy_target(session, "web2")
        with pytest.raises(NotFound, match="certificate"):
            deployments.deploy_target(session, "nope")
    assert (target.name, target.profile, target.deploy, target.revision) == ("web1", "dep", DEPLOY, 2)
    assert (target.leaf_pem, target.chain_pem) == ("LEAF2", "CHAIN2") and target.key_id
    assert (target.written_revision, target.deployed_revision, target.failures, target.failed_revision) == (
        None, None, 0, None)
    assert (pending.revision, pending.leaf_pem, pending.chain_pem, pending.key_id) == (None, None, None, None)


def _start(db: Database, name: str, revision: int, now: dt.datetime, worker: str = "w1") -> int:
    with db.transaction() as session:
        return deployments.start_deployment(session, name, revision=revision, directory=f"/srv/certs/{name}",
                                            worker=worker, now=now)


def _finish(db: Database, name: str, deployment_id: int, revision: int, now: dt.datetime,
            error: str | None = None) -> int:
    with db.transaction() as session:
        return deployments.finish_deployment(session, name, deployment_id=deployment_id, revision=revision,
                                             error=error, output="reloaded", now=now,
                                             retry_at=now + MIN if error else None)


def test_records_newest_first_an_unfinished_one_interrupted(db: Database, certs: None) -> None:
    first = _start(db, "web1", 1, T0, worker="dead-worker")
    second = _start(db, "web1", 2, T0 + MIN)
    other = _start(db, "web2", 1, T0 + MIN)
    _finish(db, "web1", second, 2, T0 + 2 * MIN)
    with db.read() as session:
        records = deployments.list_deployments(session, "web1")
        assert [r.id for r in deployments.list_deployments(session, "web1", limit=1)] == [second]
        assert [r.id for r in deployments.list_deployments(session, "web2")] == [other]
        with pytest.raises(NotFound, match="certificate"):
            deployments.list_deployments(session, "nope")
    assert [r.id for r in records] == [second, first]
    newest, interrupted = records
    assert (newest.revision, newest.directory, newest.worker, newest.outcome, newest.error, newest.output) == (
        2, "/srv/certs/web1", "w1", "deployed", None, "reloaded")
    assert (newest.started_at, newest.finished_at) == (T0 + MIN, T0 + 2 * MIN)
    assert newest.finished_at is not None and newest.finished_at.utcoffset() == dt.timedelta(0)
    assert (interrupted.outcome, interrupted.finished_at, interrupted.worker) == ("interrupted", T0 + MIN,
                                                                                  "dead-worker")
    assert interrupted.error is not None and "stopped" in interrupted.error
    with db.read() as session:
        assert deployments.list_deployments(session, "web2")[0].outcome is None, "web2's stays open"


def test_failures_count_per_revision_and_success_resets_them(db: Database, certs: None) -> None:
    with db.transaction() as session:
        deployments.mark_written(session, "web1", 1)
    assert _status(db, "web1").deploy_written_revision == 1
    assert _finish(db, "web1", _start(db, "web1", 1, T0), 1, T0, error="reload failed") == 1
    assert _finish(db, "web1", _start(db, "web1", 1, T0 + MIN), 1, T0 + MIN, error="reload failed again") == 2
    st = _status(db, "web1")
    assert (st.deploy_error, st.deploy_failures, st.deploy_failed_revision, st.deploy_retry_at) == (
        "reload failed again", 2, 1, T0 + 2 * MIN)
    assert st.deployed_revision is None
    assert _finish(db, "web1", _start(db, "web1", 2, T0 + 2 * MIN), 2, T0 + 2 * MIN, error="new revision") == 1
    assert _finish(db, "web1", _start(db, "web1", 2, T0 + 3 * MIN), 2, T0 + 3 * MIN) == 0
    st = _status(db, "web1")
    assert (st.deployed_revision, st.deploy_error, st.deploy_failures, st.deploy_retry_at,
            st.deploy_failed_revision) == (2, None, 0, None, None)


def test_a_redeploy_and_a_settings_change_reset_the_progress(db: Database, certs: None) -> None:
    for name in ("web1", "web2", "other1"):
        with db.transaction() as session:
            deployments.mark_written(session, name, 1)
        _finish(db, name, _start(db, name, 1, T0), 1, T0, error="boom")
    with db.transaction() as session:
        deployments.request_redeploy(session, "web2")
    st = _status(db, "web2")
    assert (st.deploy_written_revision, st.deployed_revision, st.deploy_retry_at) == (None, None, None)
    later = T0 + dt.timedelta(hours=1)
    with db.transaction() as session:
        profile_id = session.scalar(select(CertificateRow.profile_id).where(CertificateRow.name == "web1"))
        assert deployments.forget_deployments(session, profile_id, later) == 2  # type: ignore[arg-type]
    for name in ("web1", "web2"):
        st = _status(db, name)
        assert (st.deploy_written_revision, st.deployed_revision, st.deploy_error, st.deploy_failures,
                st.deploy_retry_at, st.deploy_failed_revision, st.next_action_at) == (
            None, None, None, 0, None, None, later)
    untouched = _status(db, "other1")
    assert (untouched.deploy_written_revision, untouched.deploy_failures, untouched.next_action_at) == (1, 1, T0)


def test_records_go_with_their_certificate(db: Database, certs: None) -> None:
    _start(db, "web1", 2, T0)
    _start(db, "web2", 1, T0)
    with db.transaction() as session:
        remove_certificate(session, "web1")
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(DeploymentRow)) == 1
