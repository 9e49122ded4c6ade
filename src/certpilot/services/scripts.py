"""Issuer scripts: add, replace, list, remove."""

from __future__ import annotations

import ast

from dataclasses import dataclass

from certpilot.domain.errors import InvalidInput, IssuerFailed
from certpilot.domain.model import (
    DEFAULT_SCRIPT_TIMEOUT_S,
    EventKind,
    KeySpec,
    Script,
    check_name,
    make_sans,
    make_subject,
)
from certpilot.issuers.runner import Failed, Pending, ScriptCall
from certpilot.keys.software import generate_private_key
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.checks import check_issued
from certpilot.pki.csr import build_csr
from certpilot.services.app import App
from certpilot.store import profiles as profile_repo
from certpilot.store import scripts as repo
from certpilot.store.events import record_event

MAX_SOURCE_BYTES = 1024 * 1024
MAX_TIMEOUT_S = 3600


def check_source(source: str) -> None:
    """The source compiles and defines `certificate_request` at module level."""
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise InvalidInput(f"the script is larger than {MAX_SOURCE_BYTES // 1024} KiB", field="source")
    try:
        tree = ast.parse(source, filename="<script>")
    except SyntaxError as exc:
        raise InvalidInput(f"the script does not compile: {exc.msg} (line {exc.lineno})", field="source") from None
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "certificate_request" not in functions:
        raise InvalidInput(
            "the script defines no function certificate_request(csr, common_name, args_dict)", field="source"
        )
    for name, positional in (("certificate_request", ("csr", "common_name", "args_dict")),
                             ("certificate_poll", ("cookie", "args_dict"))):
        if name in functions:
            _check_signature(functions[name], positional)


def _check_signature(func: ast.FunctionDef | ast.AsyncFunctionDef, positional: tuple[str, ...]) -> None:
    """`func` can be called as certpilot calls it: the positional arguments, and `context=`
    when it declares one. Checked on the source: the script is never run here."""
    expected = f"{func.name}({', '.join(positional)}[, context])"
    if isinstance(func, ast.AsyncFunctionDef):
        raise InvalidInput(f"{func.name} must be a plain function, not async: def {expected}", field="source")
    args = func.args
    taking = [a.arg for a in args.posonlyargs + args.args]
    required = len(taking) - len(args.defaults)
    required_extra = taking[len(positional):required]  # `context` may be one: it is passed by name
    if args.vararg is None and len(taking) < len(positional) or required_extra not in ([], ["context"]):
        got = ", ".join(taking) or "no arguments"
        raise InvalidInput(f"{func.name} takes ({got}); certpilot calls it as {expected}", field="source")
    keyword_only = {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)}
    unfilled = [name for name, default in keyword_only.items() if default is None and name != "context"]
    if unfilled:
        raise InvalidInput(f"{func.name} requires keyword arguments certpilot never gives ({', '.join(unfilled)}); "
                           f"certpilot calls it as {expected}", field="source")


def check_timeout(timeout_s: int) -> int:
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds", field="timeout_s")
    return timeout_s


def add_script(app: App, name: str, source: str, *, timeout_s: int = DEFAULT_SCRIPT_TIMEOUT_S, actor: str) -> Script:
    check_name(name, "script")
    check_source(source)
    check_timeout(timeout_s)
    now = app.clock.now()
    with app.db.transaction() as session:
        script = repo.add_script(session, name, source, timeout_s, now)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "created", "sha256": script.sha256})
    return script


def update_script(app: App, name: str, source: str, *, timeout_s: int, actor: str) -> Script:
    check_source(source)
    check_timeout(timeout_s)
    now = app.clock.now()
    with app.db.transaction() as session:
        script = repo.update_script(session, name, source, timeout_s, now)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "updated", "sha256": script.sha256})
    return script


def get_script(app: App, name: str) -> Script:
    with app.db.read() as session:
        return repo.get_script(session, name)


def list_scripts(app: App) -> list[Script]:
    with app.db.read() as session:
        return repo.list_scripts(session)


def remove_script(app: App, name: str, *, actor: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_script(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.SCRIPT_CHANGED, object_type="script",
                     object_name=name, details={"action": "removed"})


@dataclass(frozen=True)
class TrialRun:
    ok: bool
    outcome: str
    message: str
    output: str
    duration_s: float


def trial_run(app: App, name: str, *, profile: str | None = None, common_name: str = "test-run.certpilot.invalid") -> TrialRun:
    """Call the script once with a throwaway key and CSR (and the params of `profile`,
    dynamic ones empty) and check what it returns; nothing is stored."""
    with app.db.read() as session:
        script = repo.get_script(session, name)
        prof = profile_repo.get_profile(session, profile, app.sealer) if profile else None
    args = {p.name: (p.value or "") for p in prof.params} if prof else {}
    secrets = tuple(p.value for p in prof.params if p.sensitive and p.value) if prof else ()
    key = generate_private_key(KeySpec.parse("ec:p256"))
    subject = make_subject(common_name)
    sans = make_sans(common_name, ())
    result = app.runner.call(ScriptCall(
        script_name=script.name, source=script.source, timeout_s=script.timeout_s,
        csr_pem=build_csr(key, subject, sans), common_name=common_name, args=args, secrets=secrets,
        context={"certificate_name": "(test run)", "profile_name": profile or "", "key_algorithm": "ec:p256",
                 "subject_alt_names": [str(s) for s in sans], "previous_certificate": None},
        profile=f"{profile or ''} (test run)",  # a pool of its own: a draft never evicts the profile's hosts
        allow_read=prof.sandbox.allow_read if prof else (), allow_write=prof.sandbox.allow_write if prof else (),
    ))
    if isinstance(result, Pending):
        return TrialRun(False, "deferred", f"the CA deferred issuance (retry after {result.retry_after_s} s)",
                        result.output, result.duration_s)
    if isinstance(result, Failed):
        outcome = "timeout" if result.timed_out else "failed"
        return TrialRun(False, outcome, result.error, result.output, result.duration_s)
    try:
        issued = check_issued(result.pem, expected_public_key_sha256=public_key_sha256(key.public_key()),
                              requested_names=sans, now=app.clock.now())
    except IssuerFailed as exc:
        return TrialRun(False, "invalid", str(exc), result.output, result.duration_s)
    message = f"issued: serial {issued.facts.serial}, valid until {issued.facts.not_after.isoformat()}"
    return TrialRun(True, "issued", message, result.output, result.duration_s)
