"""`certpilot cert …`"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certpilot.cli.context import (
    lazy_module,
    local_actor,
    open_app,
    read_secret_file,
    settings_flags,
    sqlite_database_for_reads,
)
from certpilot.cli.output import error, print_fields, print_json, print_table, say
from certpilot.cli.profiles import split_assignment
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import KeySpec, make_subject
from certpilot.services.views import (
    attempt_view,
    certificate_view,
    deployment_view,
    event_view,
    revision_view,
    timestamp,
)

if TYPE_CHECKING:
    from certpilot.services.app import App

# services (and with them SQLAlchemy) are imported when a command runs, not for --help
service = lazy_module("certpilot.services.certificates")
deployment = lazy_module("certpilot.services.deployment")
issuance = lazy_module("certpilot.services.issuance")

app = typer.Typer(help="Certificates: request, inspect, renew, export.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
WaitFlag = Annotated[bool, typer.Option("--wait/--no-wait", help="Issue now, in this process, and report the outcome.")]

def _attempt_and_report(ctx: "App", name: str, json_out: bool = False, holder: str | None = None) -> None:
    report = issuance.attempt_or_wait(ctx, name, actor=local_actor(), owner=holder)
    if issuance.is_deferred(report):  # accepted: the renewal loop polls the CA from now on
        if not json_out:
            awaiting = certificate_view(service.get_certificate(ctx, name))["status"]["awaiting_ca"]
            say(f"certificate {name}: awaiting the CA {_awaiting(awaiting)}")
        return
    if issuance.is_success(report):
        if not json_out:
            say(f"certificate {name}: revision {report.revision} issued")
        _deploy_and_report(ctx, name, json_out)
        return
    error(f"certificate {name}: attempt {report.outcome.value}: {report.error}")
    raise typer.Exit(1)

def _deploy_and_report(ctx: "App", name: str, json_out: bool = False) -> bool:
    """Deploy the new revision now when its profile deploys (`--wait`); False when that failed."""
    report = deployment.deploy_or_wait(ctx, name, actor=local_actor())
    if report is None:
        return True
    if report.deployed:
        if not json_out:
            say(f"certificate {name}: revision {report.revision} deployed")
        return True
    error(f"certificate {name}: deployment of revision {report.revision} failed (retried later): {report.error}")
    return False

@app.command("request")
@settings_flags
def request(
    name: str,
    profile: Annotated[str, typer.Option("--profile", help="The certificate management profile.")],
    cn: Annotated[str, typer.Option("--cn", help="Subject common name (added as a DNS SAN).")],
    san: Annotated[list[str] | None, typer.Option("--san", help="DNS:…, IP:…, EMAIL:… or URI:… (repeatable).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="rsa:2048|3072|4096 or ec:p256|p384|p521 (default: the profile's).")] = None,
    org: Annotated[str | None, typer.Option("--org")] = None,
    ou: Annotated[str | None, typer.Option("--ou")] = None,
    locality: Annotated[str | None, typer.Option("--locality")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    country: Annotated[str | None, typer.Option("--country", help="Two-letter country code.")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="K=V for a dynamic parameter of the profile.")] = None,
    hsm_group: Annotated[str | None, typer.Option("--hsm-group", help="Generate the key in this HSM group.")] = None,
    wait: WaitFlag = False,
    json_: JsonFlag = False,
) -> None:
    """Request a certificate; with --wait, issue it now."""
    subject = make_subject(cn, org, ou, locality, state, country, email)
    spec = KeySpec.parse(key) if key is not None else None
    values: dict[str, str] = {}
    for text in param or []:
        k, v = split_assignment(text, "--param")
        if k in values:
            raise InvalidInput(f"--param {k} is given twice", field="dynamic_params")
        values[k] = v
    with open_app() as ctx:
        holder = issuance.new_holder(ctx) if wait else None
        service.request_certificate(
            ctx, name, profile=profile, subject=subject, subject_alt_names=san or [], key=spec,
            hsm_group=hsm_group, dynamic_params=values, actor=local_actor(), hold_for=holder,
        )
        if not json_:
            say(f"certificate {name} requested")
        try:
            if wait:
                _attempt_and_report(ctx, name, json_, holder)
        finally:
            if json_:
                print_json(certificate_view(service.get_certificate(ctx, name)))

@app.command("list")
@settings_flags
def list_(
    expiring_within: Annotated[int | None, typer.Option("--expiring-within", help="Only those expiring within DAYS.")] = None,
    json_: JsonFlag = False,
) -> None:
    """List certificates."""
    columns = ["NAME", "PROFILE", "PHASE", "EXPIRY", "NOT_AFTER", "REV", "FAILURES"]
    empty = ("no certificates" if expiring_within is not None else
             "no certificates yet: request one with `certpilot cert request NAME --profile P --cn CN`")
    lines = None if json_ else _quick_lines(expiring_within)
    if lines is not None:  # SQLite: read without SQLAlchemy, the services or the settings model
        print_table(columns, [(c.name, c.profile, c.phase, c.expiry_status, timestamp(c.not_after), c.revision,
                               c.failures) for c in lines], empty=empty)
        return
    with open_app() as ctx:
        certs = service.list_certificates(ctx, expiring_within_days=expiring_within)
    if json_:
        print_json([certificate_view(c) for c in certs])
        return
    print_table(
        columns,
        [(c.name, c.spec.profile, c.status.phase.value,
          c.status.expiry_status.value if c.status.expiry_status else None,
          timestamp(c.status.not_after), c.status.revision, c.status.failures) for c in certs],
        empty=empty,
    )


def _quick_lines(expiring_within: int | None) -> list | None:  # type: ignore[type-arg]
    """`cert list`'s lines read straight from a SQLite file, or None (not SQLite, a schema
    the quick reader does not know): then the ordinary path answers."""
    database = sqlite_database_for_reads()
    if database is None:
        return None
    from certpilot.clock import SystemClock
    from certpilot.services.certificate_lines import certificate_lines

    return certificate_lines(database, SystemClock().now(), expiring_within_days=expiring_within)

@app.command("show")
@settings_flags
def show(name: str, json_: JsonFlag = False) -> None:
    """Show a certificate's spec and status."""
    with open_app() as ctx:
        view = certificate_view(service.get_certificate(ctx, name))
    if json_:
        print_json(view)
        return
    spec, st = view["spec"], view["status"]
    subject = ", ".join(f"{k}={v}" for k, v in spec["subject"].items() if v)
    print_fields([
        ("name", view["name"]), ("profile", spec["profile"]), ("subject", subject),
        ("SANs", ", ".join(spec["subject_alt_names"])), ("key", spec["key"]),
        ("dynamic params", ", ".join(f"{k}={v}" for k, v in spec["dynamic_params"].items()) or None),
        ("phase", st["phase"]), ("revision", st["revision"]), ("serial", st["serial"]),
        ("not before", st["not_before"]), ("not after", st["not_after"]),
        ("expiry status", st["expiry_status"]), ("fingerprint", st["fingerprint_sha256"]),
        ("renew at", st["renew_at"]), ("next action at", st["next_action_at"]),
        ("failures", st["failures"]), ("last error", st["last_error"]),
        ("deployed revision", st["deployed_revision"]), ("deploy error", st["deploy_error"]),
        ("awaiting the CA", _awaiting(st["awaiting_ca"])),
        ("renewal window", _window(st["renewal_info"])),
    ])


def _window(view: dict[str, object] | None) -> str | None:
    """The CA's suggested renewal window (RFC 9773), where the script asks for one."""
    if view is None:
        return None
    if view["error"]:
        return f"asking the CA failed: {view['error']} (asking again at {view['next_check_at']})"
    if view["window_start"] is None:
        return f"the CA suggests none (asked at {view['checked_at'] or 'not yet'})"
    return (f"{view['window_start']} to {view['window_end']}, suggested by the CA at {view['checked_at']}; "
            f"asking again at {view['next_check_at']}")


def _awaiting(view: dict[str, object] | None) -> str | None:
    if view is None:
        return None
    return f"since {view['since']} ({view['polls']} poll(s) so far); next poll at {view['next_poll_at']}"

@app.command("history")
@settings_flags
def history(name: str, json_: JsonFlag = False) -> None:
    """Revisions, newest first."""
    with open_app() as ctx:
        current = service.get_certificate(ctx, name).status.revision
        revisions = [revision_view(r, current) for r in service.list_revisions(ctx, name)]
    if json_:
        print_json(revisions)
        return
    print_table(
        ["REV", "SERIAL", "NOT_BEFORE", "NOT_AFTER", "PUBLIC_KEY_SHA256", "SERVED"],
        [(r["revision"], r["serial"], r["not_before"], r["not_after"], r["public_key_sha256"][:16],
          "yes" if r["current"] else "no") for r in revisions],
        empty="no revision issued yet",
    )

@app.command("attempts")
@settings_flags
def attempts(name: str, json_: JsonFlag = False) -> None:
    """Issuer calls, newest first, with their scrubbed output."""
    with open_app() as ctx:
        rows = [attempt_view(a) for a in service.list_attempts(ctx, name)]
    if json_:
        print_json(rows)
        return
    print_table(
        ["ID", "KIND", "STARTED", "OUTCOME", "MS", "ERROR", "OUTPUT"],
        [(a["id"], a["kind"], a["started_at"], a["outcome"] or "running", a["duration_ms"], a["error"],
          output_excerpt(a["output"])) for a in rows],
        empty="no attempts yet",
    )

@app.command("deployments")
@settings_flags
def deployments(name: str, json_: JsonFlag = False) -> None:
    """Deployments to the profile's deploy root, newest first, with the command's scrubbed output."""
    with open_app() as ctx:
        rows = [deployment_view(d) for d in deployment.list_deployments(ctx, name)]
    if json_:
        print_json(rows)
        return
    print_table(
        ["ID", "REV", "STARTED", "OUTCOME", "ERROR", "OUTPUT"],
        [(d["id"], d["revision"], d["started_at"], d["outcome"] or "running", d["error"],
          output_excerpt(d["output"])) for d in rows],
        empty="no deployments yet (does the profile have a deploy root?)",
    )

OUTPUT_EXCERPT_CHARS = 100

def output_excerpt(output: str | None, limit: int = OUTPUT_EXCERPT_CHARS) -> str | None:
    """An attempt's output on one table line: its non-blank lines joined with ` | `,
    cut to `limit` characters with the count left out (`--json` shows all of it)."""
    text = " | ".join(line.strip() for line in (output or "").splitlines() if line.strip())
    if not text:
        return None
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}… (+{len(text) - limit} chars, --json for all)"

@app.command("events")
@settings_flags
def events(name: str, json_: JsonFlag = False) -> None:
    """The certificate's events, newest first."""
    with open_app() as ctx:
        rows = [event_view(e) for e in service.certificate_events(ctx, name)]
    if json_:
        print_json(rows)
        return
    print_table(
        ["AT", "KIND", "ACTOR", "DETAILS"],
        [(e["at"], e["kind"], e["actor"], ", ".join(f"{k}={v}" for k, v in e["details"].items())) for e in rows],
        empty="no events",
    )

@app.command("renew")
@settings_flags
def renew(name: str, wait: WaitFlag = False) -> None:
    """Renew with a new key pair now (or, without --wait, at the renewal loop's next pass)."""
    with open_app() as ctx:
        holder = issuance.new_holder(ctx) if wait else None
        service.request_renewal(ctx, name, actor=local_actor(), hold_for=holder)
        if wait:
            _attempt_and_report(ctx, name, holder=holder)
        else:
            say(f"certificate {name}: renewal requested")

@app.command("deploy")
@settings_flags
def deploy(name: str) -> None:
    """Deploy the served revision again now: files into the profile's deploy root, then its command."""
    with open_app() as ctx:
        report = deployment.redeploy(ctx, name, actor=local_actor())
    if not report.deployed:
        error(f"certificate {name}: deployment of revision {report.revision} failed: {report.error}")
        raise typer.Exit(1)
    say(f"certificate {name}: revision {report.revision} deployed")

@app.command("export")
@settings_flags
def export(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files to.")],
    format_: Annotated[str, typer.Option("--format", help="pem or pkcs12.")] = "pem",
    include_key: Annotated[bool, typer.Option("--include-key", help="Also write the private key (audited).")] = False,
    password_file: Annotated[Path | None, typer.Option("--password-file", help="PKCS#12 password (first line).")] = None,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="Write a PKCS#12 file with the key and no password (else --password-file is needed).")] = False,
) -> None:
    """Write the served certificate, its chain and full chain (and key) to a directory.
    Never writes through a symlink: one planted in DIR is refused."""
    password = None
    if password_file is not None:
        password = read_secret_file(password_file, "PKCS#12 password").encode() or None
    service.check_pkcs12_protection(format_, include_key, password, no_password)  # before anything is opened
    with open_app() as ctx:
        exported = service.export_certificate(
            ctx, name, out, fmt=format_, include_key=include_key, pkcs12_password=password,
            no_password=no_password, actor=local_actor()
        )
    for path in exported.paths:
        say(str(path))

@app.command("remove")
@settings_flags
def remove(name: str) -> None:
    """Remove a certificate and its history."""
    with open_app() as ctx:
        service.remove_certificate(ctx, name, actor=local_actor())
    say(f"certificate {name} removed")

