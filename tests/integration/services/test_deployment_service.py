"""Deployment through the renewal loop, on SQLite and PostgreSQL: the files of each new
revision land in DIR/<certificate>/ (atomically, never through a symlink), the deploy
command runs with its environment, a failure is retried with a backoff of its own and
never re-issues, a crash between files and command is finished by the next worker, and
a profile that gains a deploy root deploys what it already has."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import select

from certpilot.config import Settings
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import DeploySettings, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.reconciler.loop import Reconciler
from certpilot.services import deployment
from certpilot.services.app import App
from certpilot.services.certificates import (
    certificate_events,
    get_certificate,
    list_attempts,
    request_certificate,
    request_renewal,
)
from certpilot.services.profiles import create_profile, get_profile, update_profile
from certpilot.services.scripts import add_script
from certpilot.store.database import create_db_engine, upgrade
from certpilot.store.tables import CertificateStatusRow
from tests.conftest import missing
from tests.integration.services.test_issuance_fake_issuer import FakeIssuer, sign_with
from tests.support.reconciler import FakeClock, local_ca_params, real_now, whole_seconds

ACTOR = "test:deploy"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(whole_seconds(real_now()))


@pytest.fixture
def deploy_app(settings: Settings, test_ca: LocalCA, clock: FakeClock) -> Iterator[App]:
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings, issuer=FakeIssuer(sign_with(test_ca)), clock=clock, random_fraction=lambda: 0.5) as app:
        add_script(app, "local-ca", "def certificate_request(csr, common_name, args_dict):\n    pass\n", actor=ACTOR)
        yield app


def make_profile(app: App, ca: LocalCA, name: str = "corp", **deploy: str) -> None:
    """`deploy`: root, command, owner."""
    create_profile(app, name, script="local-ca", params=local_ca_params(ca), actor=ACTOR,
                   deploy=DeploySettings(**deploy) if deploy else None)


def hook(tmp_path: Path, body: str, name: str = "hook.sh") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def issue(app: App, name: str, profile: str = "corp") -> None:
    """Request, issue (one pass) and deploy (the next pass, as a running loop does at once)."""
    request_certificate(app, name, profile=profile, subject=make_subject(f"{name}.example.test"), actor=ACTOR)
    Reconciler(app).run_once()
    Reconciler(app).run_once()


def events(app: App, name: str) -> list[str]:
    return [e.kind for e in reversed(certificate_events(app, name))]


def served(app: App, name: str) -> tuple[str, str]:
    with app.db.read() as session:
        from certpilot.store.certificates import current_revision

        rev = current_revision(session, name)
        assert rev is not None
        return rev.leaf_pem, rev.chain_pem


def test_a_new_revision_is_written_and_the_command_runs_with_its_environment(
    deploy_app: App, test_ca: LocalCA, tmp_path: Path
) -> None:
    root = tmp_path / "deploy"
    root.mkdir()
    log = tmp_path / "hook.log"
    script = hook(tmp_path, 'echo "$CERTPILOT_CERTIFICATE $CERTPILOT_REVISION $CERTPILOT_DEPLOY_DIR $PWD" >> "$1"')
    command = f"{script} {log}"
    make_profile(deploy_app, test_ca, root=str(root), command=command)
    issue(deploy_app, "web1")

    directory = root / "web1"
    leaf, chain = served(deploy_app, "web1")
    assert (directory / "cert.pem").read_text() == leaf
    assert (directory / "chain.pem").read_text() == chain
    assert (directory / "fullchain.pem").read_text() == leaf + chain
    key = load_pem_private_key((directory / "key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.encode())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers(), "key and certificate match"
    assert stat.S_IMODE((directory / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "cert.pem").stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "key.pem"]
    assert log.read_text().split() == ["web1", "1", str(directory), str(directory)]

    status = get_certificate(deploy_app, "web1").status
    assert (status.deployed_revision, status.deploy_error) == (1, None)
    assert events(deploy_app, "web1")[-2:] == ["CERT_ISSUED", "CERT_DEPLOYED"]

    request_renewal(deploy_app, "web1", actor=ACTOR)
    Reconciler(deploy_app).run_once()
    Reconciler(deploy_app).run_once()  # the deployment of the new revision: the next pass
    assert get_certificate(deploy_app, "web1").status.deployed_revision == 2
    assert (directory / "cert.pem").read_text() == served(deploy_app, "web1")[0] != leaf
    assert log.read_text().split()[4:6] == ["web1", "2"]


def test_a_failing_command_is_retried_with_its_own_backoff_and_never_re_issues(
    deploy_app: App, test_ca: LocalCA, clock: FakeClock, tmp_path: Path
) -> None:
    root = tmp_path / "deploy"
    root.mkdir()
    script = hook(tmp_path, "echo reload failed: ca_key_password=$1 >&2; exit 3")
    make_profile(deploy_app, test_ca, root=str(root), command=f"{script} {test_ca.password}")
    issue(deploy_app, "web1")

    status = get_certificate(deploy_app, "web1").status
    assert status.revision == 1 and status.deployed_revision is None
    assert status.deploy_error is not None and "exited with status 3" in status.deploy_error
    assert test_ca.password not in status.deploy_error, "the profile's secret is scrubbed from the error"
    records = deployment.list_deployments(deploy_app, "web1")
    assert [r.outcome for r in records] == ["failed"]
    assert records[0].output is not None and "reload failed" in records[0].output
    assert test_ca.password not in records[0].output
    served_files = (root / "web1" / "cert.pem").stat().st_ino
    assert (root / "web1" / "cert.pem").read_text() == served(deploy_app, "web1")[0], "files and revision agree"

    assert Reconciler(deploy_app).run_once() == 0, "a failed deployment waits for its backoff"
    clock.advance(dt.timedelta(minutes=6))  # past the first retry (5 min +- 10 %)
    Reconciler(deploy_app).run_once()
    assert [r.outcome for r in deployment.list_deployments(deploy_app, "web1")] == ["failed", "failed"]
    failed = [e for e in certificate_events(deploy_app, "web1") if e.kind == "CERT_DEPLOY_FAILED"]
    assert [e.details["failures"] for e in failed] == [2, 1]

    script.write_text("#!/bin/sh\necho reloaded\n")  # the server is fixed
    clock.advance(dt.timedelta(minutes=11))
    Reconciler(deploy_app).run_once()
    status = get_certificate(deploy_app, "web1").status
    assert (status.revision, status.deployed_revision, status.deploy_error) == (1, 1, None)
    assert (root / "web1" / "cert.pem").stat().st_ino == served_files, "written once: retries only run the command"
    assert len(list_attempts(deploy_app, "web1")) == 1, "a failing deployment never causes a re-issue"


def test_a_symlink_planted_at_the_key_path_is_refused_not_followed(
    deploy_app: App, test_ca: LocalCA, tmp_path: Path
) -> None:
    root = tmp_path / "deploy"
    (root / "web1").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (root / "web1" / "key.pem").symlink_to(victim)
    make_profile(deploy_app, test_ca, root=str(root))
    issue(deploy_app, "web1")

    status = get_certificate(deploy_app, "web1").status
    assert status.deployed_revision is None
    assert status.deploy_error is not None and "key.pem is a symbolic link" in status.deploy_error
    assert victim.read_text() == "precious\n", "the link was not followed"
    assert (root / "web1" / "key.pem").is_symlink()
    assert sorted(p.name for p in (root / "web1").iterdir()) == ["key.pem"], "no file replaced, no temp left"


@pytest.mark.parametrize("where", ["certificate-dir", "inside-root"])
def test_a_symlink_on_the_way_to_the_files_is_refused(
    deploy_app: App, test_ca: LocalCA, tmp_path: Path, where: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if where == "certificate-dir":
        root = tmp_path / "deploy"
        root.mkdir()
        (root / "web1").symlink_to(elsewhere)
        expected = f"{root}/web1 is a symbolic link"
    else:
        real = tmp_path / "real"
        real.mkdir()
        (real / "sub").symlink_to(elsewhere)
        root = real / "sub"
        expected = f"{root} is a symbolic link"
    make_profile(deploy_app, test_ca, root=str(root))
    issue(deploy_app, "web1")
    status = get_certificate(deploy_app, "web1").status
    assert status.deploy_error is not None and expected in status.deploy_error
    assert list(elsewhere.rglob("*")) == [], "nothing was written through the link"


def test_a_crash_between_files_and_command_is_finished_by_the_next_worker(
    deploy_app: App, test_ca: LocalCA, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "deploy"
    root.mkdir()
    log = tmp_path / "hook.log"
    script = hook(tmp_path, 'echo ran >> "$1"')
    make_profile(deploy_app, test_ca, root=str(root), command=f"{script} {log}")

    class Crash(BaseException):
        """The worker dies: nothing after this point runs, nothing is recorded."""

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash()

    request_certificate(deploy_app, "web1", profile="corp", subject=make_subject("web1.example.test"), actor=ACTOR)
    first = Reconciler(deploy_app)
    first.run_once()  # issued; the deployment is the next pass
    monkeypatch.setattr(deployment, "run_command", crash)
    assert [c.name for c in first._claim(10, Counter())] == ["web1"]  # leased as a loop pass leases it
    with pytest.raises(Crash):
        first.reconcile("web1")  # the files are written, then the worker dies
    monkeypatch.undo()
    written = (root / "web1" / "cert.pem").stat().st_ino
    with deploy_app.db.read() as session:
        st = session.scalars(select(CertificateStatusRow)).one()
        assert (st.deploy_written_revision, st.deployed_revision, st.lease_owner) == (1, None, first.owner)
    assert not log.exists()

    clock.advance(dt.timedelta(minutes=10))  # the dead worker's lease runs out
    Reconciler(deploy_app).run_once()
    assert log.read_text() == "ran\n", "the next worker ran the command once"
    assert (root / "web1" / "cert.pem").stat().st_ino == written, "and did not need to write the files again"
    assert get_certificate(deploy_app, "web1").status.deployed_revision == 1
    assert [r.outcome for r in deployment.list_deployments(deploy_app, "web1")] == ["deployed", "interrupted"]


def test_a_profile_that_gains_a_deploy_root_deploys_its_certificates_and_cert_deploy_redeploys(
    deploy_app: App, test_ca: LocalCA, tmp_path: Path
) -> None:
    make_profile(deploy_app, test_ca)
    issue(deploy_app, "web1")
    issue(deploy_app, "web2")
    assert get_certificate(deploy_app, "web1").status.deployed_revision is None
    with pytest.raises(InvalidInput, match="no deploy root"):
        deployment.redeploy(deploy_app, "web1", actor=ACTOR)

    root = tmp_path / "deploy"
    root.mkdir()
    before = get_profile(deploy_app, "corp")
    update_profile(deploy_app, "corp", script="local-ca", params=_masked(before), actor=ACTOR,
                   deploy=DeploySettings(root=str(root)))
    Reconciler(deploy_app).run_once()
    for name in ("web1", "web2"):
        assert get_certificate(deploy_app, name).status.deployed_revision == 1
        assert (root / name / "fullchain.pem").exists()
    assert get_profile(deploy_app, "corp").params == before.params, "the update changed only the deploy root"

    (root / "web1" / "cert.pem").write_text("damaged\n")
    report = deployment.redeploy(deploy_app, "web1", actor=ACTOR)
    assert (report.deployed, report.revision) == (True, 1)
    assert (root / "web1" / "cert.pem").read_text() == served(deploy_app, "web1")[0]


def _masked(profile):  # type: ignore[no-untyped-def]
    from certpilot.domain.model import SENSITIVE_MASK, ProfileParam

    return [ProfileParam(p.name, SENSITIVE_MASK if p.sensitive else p.value, sensitive=p.sensitive,
                         dynamic=p.dynamic) for p in profile.params]


@pytest.mark.parametrize(
    ("deploy", "says"),
    [
        ({"root": "srv/certs"}, "not absolute"),
        ({"root": "/srv/../etc"}, "'..'"),
        ({"root": "/srv/certs", "command": "/no/such/reload --now"}, "'/no/such/reload' is not an executable"),
        ({"root": "/srv/certs", "command": "no-such-program-here"}, "not an executable"),
        ({"root": "/srv/certs", "command": "'unclosed"}, "cannot be split"),
        ({"root": "/srv/certs", "owner": "no-such-user-x"}, "no user 'no-such-user-x'"),
        ({"root": "/srv/certs", "owner": "root:no-such-group-x"}, "no group 'no-such-group-x'"),
        ({"command": "/bin/true"}, "needs a deploy root"),
    ],
    ids=["relative", "dot-dot", "missing-executable", "not-on-path", "bad-quoting", "no-user", "no-group",
         "command-without-root"],
)
def test_bad_deploy_settings_are_refused_with_one_clear_sentence(
    deploy_app: App, test_ca: LocalCA, deploy: dict[str, str], says: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        make_profile(deploy_app, test_ca, **deploy)
    assert says in str(raised.value)


def test_the_data_dir_is_no_deploy_root(deploy_app: App, test_ca: LocalCA) -> None:
    with pytest.raises(InvalidInput, match="data dir"):
        make_profile(deploy_app, test_ca, root=str(deploy_app.settings.data_dir / "deploy"))


def test_the_deploy_owner_owns_the_directory_and_files(deploy_app: App, test_ca: LocalCA, tmp_path: Path) -> None:
    import grp
    import pwd

    if os.geteuid() != 0:
        missing("only root can give deployed files to another owner")
    root = tmp_path / "deploy"
    root.mkdir()
    make_profile(deploy_app, test_ca, root=str(root), owner="nobody:nogroup")
    issue(deploy_app, "web1")
    assert get_certificate(deploy_app, "web1").status.deployed_revision == 1
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for path in [root / "web1", *(root / "web1").iterdir()]:
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
    assert stat.S_IMODE((root / "web1" / "key.pem").stat().st_mode) == 0o600
