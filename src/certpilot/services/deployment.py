"""Deployment: the served revision written to the profile's deploy root, then its command.

    DIR/<certificate>/cert.pem, chain.pem, fullchain.pem, key.pem (0600; HSM keys:
    key.pkcs11-uri)

    validate settings (here) -> lease -> material and secrets loaded -> files
    (services.deploy_io, never through a symlink) -> "written" saved -> command
    (no shell, 60 s, output bounded and scrubbed) -> outcome, event, reschedule

The status row keeps the progress (store.deployments): files written, command run.
A failed deployment is retried with the issuer's backoff curve, on counters of its
own: it never causes a re-issue. Runs in the controller, never in the script sandbox.
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import shlex
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from certpilot.clock import monotonic_s
from certpilot.domain.errors import Conflict, InvalidInput, NotFound
from certpilot.domain.model import DeploySettings, EventKind
from certpilot.domain.paths import checked_path, guard
from certpilot.issuers.capture import scrub
from certpilot.keys.pkcs11_backend import pkcs11_uri
from certpilot.keys.software import open_private_key
from certpilot.pki.encoding import private_key_pem
from certpilot.policy import next_retry_at
from certpilot.services import scheduling
from certpilot.services.app import App
from certpilot.services.deploy_io import COMMAND_TIMEOUT_S, DeployError, Material, run_command, write_files
from certpilot.store import certificates as cert_repo
from certpilot.store import deployments as repo
from certpilot.store import hsm as hsm_repo
from certpilot.store import profiles as profile_repo
from certpilot.store import schedule
from certpilot.store.events import record_event

MAX_COMMAND_CHARS = 4096
LEASE_S = COMMAND_TIMEOUT_S + 120  # a deployment's lease outlives its command
WAIT_POLL_S = 0.2


# --- validation (CLI, API and web alike) ----------------------------------------------


def check_deploy(root: str | None, command: str | None, owner: str | None,
                 *, protected: Sequence[tuple[str, Path]] = ()) -> DeploySettings:
    """Deploy settings as given, validated: `root` absolute without `..` (and not
    certpilot's own data dir, master key or database), `command` non-empty once split
    and its executable present, `owner` an existing `USER[:GROUP]`. A command or an owner
    needs a root. Empty strings count as absent. Raises InvalidInput."""
    root, command, owner = (v.strip() if isinstance(v, str) and v.strip() else None for v in (root, command, owner))
    if root is None:
        if command is not None or owner is not None:
            field = "deploy_command" if command is not None else "deploy_owner"
            raise InvalidInput(f"{field} needs a deploy root: give --deploy-root DIR too", field=field)
        return DeploySettings()
    root = _check_root(root, protected)
    if command is not None:
        _check_command(command)
    if owner is not None:
        owner_ids(owner)
    return DeploySettings(root=root, command=command, owner=owner)


def _check_root(root: str, protected: Sequence[tuple[str, Path]]) -> str:
    return checked_path(root, field="deploy_root", subject="deploy_root", guarded=guard(protected),
                        because="deployed files never go near certpilot's own")


def _check_command(command: str) -> None:
    if len(command) > MAX_COMMAND_CHARS or "\x00" in command:
        raise InvalidInput("deploy_command is too long or contains a NUL character", field="deploy_command")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidInput(f"deploy_command cannot be split into arguments: {exc}", field="deploy_command") from None
    if not argv:
        raise InvalidInput("deploy_command is empty", field="deploy_command")
    if _executable(argv[0]) is None:
        raise InvalidInput(f"deploy_command: {argv[0]!r} is not an executable file "
                           "(give its absolute path, or a name found on PATH)", field="deploy_command")


def _executable(program: str) -> str | None:
    if "/" in program:
        if not program.startswith("/"):
            return None  # relative to which directory? the command must not depend on that
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program)


def owner_ids(owner: str) -> tuple[int, int]:
    """`USER[:GROUP]` (names or numbers) as (uid, gid); the user's group when none is given."""
    user, _, group = owner.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise InvalidInput(f"deploy_owner: there is no user {user!r} on this host", field="deploy_owner") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise InvalidInput(f"deploy_owner: there is no group {group!r} on this host",
                               field="deploy_owner") from None
    return entry.pw_uid, gid


# --- one deployment --------------------------------------------------------------------


@dataclass(frozen=True)
class DeployReport:
    name: str
    revision: int | None
    deployed: bool
    error: str | None


def _material(app: App, session: Session, target: repo.DeployTarget) -> Material:
    assert target.key_id is not None
    stored = cert_repo.get_key(session, target.key_id)
    key_pem = uri = None
    if stored.private_key_sealed is not None:
        key_pem = private_key_pem(open_private_key(app.sealer, stored.private_key_sealed, stored.key_id))
    elif stored.hsm_group and stored.pkcs11_id:
        token_label = hsm_repo.get_group(session, stored.hsm_group).token_label
        uri = pkcs11_uri(token_label, stored.pkcs11_label or "", bytes.fromhex(stored.pkcs11_id))
    return Material(target.leaf_pem or "", target.chain_pem or "", key_pem, uri)


def _hidden(app: App, session: Session, target: repo.DeployTarget, material: Material) -> list[str]:
    """What must never reach a record: the profile's and certificate's sensitive values, the key."""
    profile = profile_repo.get_profile(session, target.profile, app.sealer)
    values = [p.value for p in profile.params if p.sensitive and p.value]
    cert = cert_repo.get_certificate(session, target.name, app.clock.now(), app.sealer)
    values += [cert.spec.dynamic_params[n] for n in cert.sensitive_params if cert.spec.dynamic_params.get(n)]
    if profile.notify.url:
        values.append(profile.notify.url)
    if material.key_pem:
        values.append(material.key_pem)
        values += [line for line in material.key_pem.splitlines() if len(line) >= 16 and "-----" not in line]
    return values


def deploy_leased(app: App, name: str, *, owner: str, actor: str) -> DeployReport | None:
    """Deploy `name`'s served revision; the caller holds the lease. None when there is
    nothing to deploy (no deploy root, no revision, or deployed already). The outcome is
    recorded (CERT_DEPLOYED / CERT_DEPLOY_FAILED, status, a deployment row) and the
    certificate rescheduled; a failure never touches the issuance state."""
    now = app.clock.now()
    with app.db.transaction() as session:
        target = repo.deploy_target(session, name)
        if target.deploy.root is None or target.revision is None or target.deployed_revision == target.revision:
            return None
        material = _material(app, session, target)
        hidden = _hidden(app, session, target, material)
        directory = f"{target.deploy.root.rstrip('/')}/{name}"
        deployment_id = repo.start_deployment(session, name, revision=target.revision, directory=directory,
                                              worker=owner, now=now)
    revision = target.revision
    error: str | None = None
    output: str | None = None
    try:
        if target.written_revision != revision:  # after a crash past this point only the command is left
            owner_ids_ = owner_ids(target.deploy.owner) if target.deploy.owner else None
            write_files(target.deploy.root, name, material, owner_ids_)
            with app.db.transaction() as session:
                repo.mark_written(session, name, revision)
        if target.deploy.command:
            result = run_command(target.deploy.command, certificate=name, revision=revision,
                                 directory=directory, hidden=hidden)
            error, output = result.error, result.output or None
    except (DeployError, InvalidInput) as exc:
        error = scrub(str(exc), hidden)
    now = app.clock.now()
    retry_at = None
    if error is not None:
        failures = target.failures + 1 if target.failed_revision == revision else 1
        retry_at = next_retry_at(failures, now=now, not_after=None, random_fraction=app.random_fraction())
    with app.db.transaction() as session:
        failures = repo.finish_deployment(session, name, deployment_id=deployment_id, revision=revision,
                                          error=error, output=output, now=now, retry_at=retry_at)
        details: dict[str, object] = {"revision": revision, "directory": directory}
        if error is None:
            record_event(session, at=now, actor=actor, kind=EventKind.CERT_DEPLOYED, object_type="certificate",
                         object_name=name, details=details)
        else:
            details.update(error=error, failures=failures, next_attempt_at=retry_at.isoformat() if retry_at else None)
            record_event(session, at=now, actor=actor, kind=EventKind.CERT_DEPLOY_FAILED,
                         object_type="certificate", object_name=name, details=details)
        scheduling.reschedule(session, name, now)
    return DeployReport(name, revision, error is None, error)


def deploy_or_wait(app: App, name: str, *, actor: str, timeout_s: float = LEASE_S) -> DeployReport | None:
    """Deploy now when a deployment is due (`--wait` after an issuance, `cert deploy`), or,
    when a renewal loop holds the certificate, wait until it lets go and report the
    status it left. None when the certificate's profile deploys nothing."""
    holder = f"{app.worker_id}:deploy-{uuid.uuid4().hex[:8]}"
    deadline = monotonic_s() + timeout_s
    while True:
        now = app.clock.now()
        try:
            with app.db.transaction() as session:
                schedule.claim(session, name, owner=holder, now=now,
                               lease_until=now + dt.timedelta(seconds=LEASE_S))
            break
        except Conflict:
            if monotonic_s() >= deadline:
                raise Conflict(f"certificate {name!r} is still being worked on by another worker") from None
            time.sleep(WAIT_POLL_S)
    try:
        report = deploy_leased(app, name, owner=holder, actor=actor)
        if report is not None:
            return report
        with app.db.read() as session:
            target = repo.deploy_target(session, name)
        if target.deploy.root is None:
            return None
        with app.db.read() as session:
            cert = cert_repo.get_certificate(session, name, app.clock.now())
        return DeployReport(name, target.revision, cert.status.deploy_error is None
                            and target.deployed_revision == target.revision, cert.status.deploy_error)
    finally:
        with app.db.transaction() as session:
            schedule.release(session, name, holder)


def redeploy(app: App, name: str, *, actor: str) -> DeployReport:
    """`certpilot cert deploy NAME`: write the served revision's files and run the command
    again now, whatever was deployed before. Raises NotFound, or InvalidInput when the
    profile has no deploy root or there is no revision yet."""
    with app.db.transaction() as session:
        target = repo.deploy_target(session, name)
        if target.deploy.root is None:
            raise InvalidInput(f"profile {target.profile!r} of certificate {name!r} has no deploy root: "
                               "set one with `certpilot profile update --deploy-root DIR`", field="name")
        if target.revision is None:
            raise InvalidInput(f"certificate {name!r} has no issued revision to deploy yet", field="name")
        repo.request_redeploy(session, name)
    report = deploy_or_wait(app, name, actor=actor)
    if report is None:
        raise NotFound("deploy root of certificate", name)
    return report


def list_deployments(app: App, name: str) -> list[repo.DeploymentRecord]:
    with app.db.read() as session:
        return repo.list_deployments(session, name)
