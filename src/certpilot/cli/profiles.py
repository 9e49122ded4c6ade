"""`certpilot profile …`"""

from typing import Annotated

import typer

from certpilot.cli.context import lazy_module, local_actor, open_app, settings_flags
from certpilot.cli.output import print_fields, print_json, print_table, say
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_KEY_SPEC,
    SENSITIVE_MASK,
    DeploySettings,
    KeySpec,
    NotifySettings,
    ProfileParam,
)
from certpilot.services.views import profile_view

service = lazy_module("certpilot.services.profiles")

app = typer.Typer(help="Certificate management profiles: a script and the parameters passed to it.",
                  no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
DeployRootFlag = Annotated[str | None, typer.Option(
    "--deploy-root", metavar="DIR", help="After each new revision write DIR/<certificate>/cert.pem, chain.pem, "
    "fullchain.pem and key.pem (absolute path; never through a symlink).")]
DeployCommandFlag = Annotated[str | None, typer.Option(
    "--deploy-command", metavar="CMD", help="Run after the files are in place (split like a shell would, no shell; "
    "env CERTPILOT_CERTIFICATE, CERTPILOT_REVISION, CERTPILOT_DEPLOY_DIR; 60 s timeout).")]
DeployOwnerFlag = Annotated[str | None, typer.Option(
    "--deploy-owner", metavar="USER[:GROUP]", help="Owner of the deployed files.")]
NotifyUrlFlag = Annotated[str | None, typer.Option(
    "--notify-url", metavar="URL", help="POST a JSON message here on failures and expiry (Slack/Teams/Mattermost "
    "incoming webhooks work as they are).")]
NotifyEmailFlag = Annotated[str | None, typer.Option(
    "--notify-email", metavar="ADDR", help="Mail failures and expiry here (through CERTPILOT_SMTP_URL).")]

def split_assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InvalidInput(f"{flag} takes NAME=VALUE, got {text!r}", field="params")
    return name.strip(), value

@app.command("create")
@settings_flags
def create(
    name: str,
    script: Annotated[str, typer.Option("--script", help="The issuer script's name.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="K=V: a value passed to every request.")] = None,
    sensitive_param: Annotated[list[str] | None, typer.Option("--sensitive-param", help="K=V: a secret value (never shown).")] = None,
    dynamic_param: Annotated[list[str] | None, typer.Option("--dynamic-param", help="K: each certificate gives its own value.")] = None,
    sensitive_dynamic_param: Annotated[list[str] | None, typer.Option("--sensitive-dynamic-param", help="K: a dynamic secret.")] = None,
    renew_before_days: Annotated[int | None, typer.Option("--renew-before-days", help="Renew N days before expiry.")] = None,
    renew_before_percent: Annotated[float | None, typer.Option("--renew-before-percent", help="Renew when P % of the lifetime is left.")] = None,
    warning_days: Annotated[str | None, typer.Option("--warning-days", help="Comma-separated expiry warning days (default 30,7,1).")] = None,
    key: Annotated[str, typer.Option("--key", help="Default key spec for certificates of this profile.")] = str(DEFAULT_KEY_SPEC),
    allow_read: Annotated[list[str] | None, typer.Option("--allow-read", metavar="PATH", help="An absolute path the script may read (repeatable).")] = None,
    allow_write: Annotated[list[str] | None, typer.Option("--allow-write", metavar="PATH", help="An absolute path the script may read and write (repeatable).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", help="Most calls in flight to this CA, per controller process.")] = DEFAULT_CONCURRENCY,
    max_pending_days: Annotated[int | None, typer.Option("--max-pending-days", metavar="N", help="Days a deferred request may wait for the CA before it fails (default 30).")] = None,
    deploy_root: DeployRootFlag = None,
    deploy_command: DeployCommandFlag = None,
    deploy_owner: DeployOwnerFlag = None,
    notify_url: NotifyUrlFlag = None,
    notify_email: NotifyEmailFlag = None,
) -> None:
    """Create a profile."""
    params = [ProfileParam(*split_assignment(p, "--param")) for p in param or []]
    params += [ProfileParam(*split_assignment(p, "--sensitive-param"), sensitive=True) for p in sensitive_param or []]
    params += [ProfileParam(p, None, dynamic=True) for p in dynamic_param or []]
    params += [ProfileParam(p, None, sensitive=True, dynamic=True) for p in sensitive_dynamic_param or []]
    days = None
    if warning_days is not None:
        try:
            days = [int(d) for d in warning_days.split(",") if d.strip()]
        except ValueError:
            raise InvalidInput(f"--warning-days takes whole numbers separated by commas, got {warning_days!r}") from None
    default_key = KeySpec.parse(key)
    with open_app() as ctx:
        profile = service.create_profile(
            ctx, name, script=script, params=params, renew_before_days=renew_before_days,
            renew_before_percent=renew_before_percent, warning_days=days, default_key=default_key,
            concurrency=concurrency, allow_read=allow_read or [], allow_write=allow_write or [],
            max_pending_days=max_pending_days, deploy=DeploySettings(deploy_root, deploy_command, deploy_owner),
            notify=NotifySettings(notify_url, notify_email), actor=local_actor(),
        )
    say(f"profile {profile.name} created (script {profile.script}, {len(profile.params)} parameter(s))")

def _warning_days(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise InvalidInput(f"--warning-days takes whole numbers separated by commas, got {text!r}") from None


@app.command("update")
@settings_flags
def update(
    name: str,
    script: Annotated[str | None, typer.Option("--script", help="The issuer script's name.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="K=V: set a value passed to every request.")] = None,
    sensitive_param: Annotated[list[str] | None, typer.Option("--sensitive-param", help="K=V: set a secret value.")] = None,
    dynamic_param: Annotated[list[str] | None, typer.Option("--dynamic-param", help="K: each certificate gives its own value.")] = None,
    sensitive_dynamic_param: Annotated[list[str] | None, typer.Option("--sensitive-dynamic-param", help="K: a dynamic secret.")] = None,
    remove_param: Annotated[list[str] | None, typer.Option("--remove-param", metavar="K", help="Remove parameter K.")] = None,
    renew_before_days: Annotated[int | None, typer.Option("--renew-before-days", help="Renew N days before expiry.")] = None,
    renew_before_percent: Annotated[float | None, typer.Option("--renew-before-percent", help="Renew when P % of the lifetime is left.")] = None,
    warning_days: Annotated[str | None, typer.Option("--warning-days", help="Comma-separated expiry warning days.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Default key spec for certificates of this profile.")] = None,
    allow_read: Annotated[list[str] | None, typer.Option("--allow-read", metavar="PATH", help="Replaces the paths the script may read (repeatable; '' clears).")] = None,
    allow_write: Annotated[list[str] | None, typer.Option("--allow-write", metavar="PATH", help="Replaces the paths the script may write (repeatable; '' clears).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", metavar="N", help="Most calls in flight to this CA, per controller process.")] = None,
    max_pending_days: Annotated[int | None, typer.Option("--max-pending-days", metavar="N", help="Days a deferred request may wait for the CA before it fails.")] = None,
    deploy_root: DeployRootFlag = None,
    deploy_command: DeployCommandFlag = None,
    deploy_owner: DeployOwnerFlag = None,
    notify_url: NotifyUrlFlag = None,
    notify_email: NotifyEmailFlag = None,
) -> None:
    """Change a profile: only what the flags given say; everything else stays. An empty
    value ('') clears a setting (--deploy-root '', --notify-url '', --allow-read '')."""
    with open_app() as ctx:
        current = service.get_profile(ctx, name)
        params = {p.name: ProfileParam(p.name, SENSITIVE_MASK if p.sensitive and not p.dynamic else p.value,
                                       sensitive=p.sensitive, dynamic=p.dynamic) for p in current.params}
        for k in remove_param or []:
            if params.pop(k, None) is None:
                raise InvalidInput(f"--remove-param: profile {name!r} has no parameter {k!r}", field="params")
        for flag, texts, sensitive in (("--param", param, False), ("--sensitive-param", sensitive_param, True)):
            for text in texts or []:
                k, v = split_assignment(text, flag)
                params[k] = ProfileParam(k, v, sensitive=sensitive)
        for names, sensitive in ((dynamic_param, False), (sensitive_dynamic_param, True)):
            for k in names or []:
                params[k] = ProfileParam(k, None, sensitive=sensitive, dynamic=True)
        renewal = current.renewal
        days_before, percent = renewal.renew_before_days, renewal.renew_before_percent
        if renew_before_days is not None:
            days_before, percent = renew_before_days, None
        if renew_before_percent is not None:
            days_before, percent = None, renew_before_percent
        if renew_before_days is not None and renew_before_percent is not None:
            raise InvalidInput("give either --renew-before-days or --renew-before-percent, not both")
        sandbox = current.sandbox
        deploy, notify = current.deploy, current.notify
        profile = service.update_profile(
            ctx, name, script=script or current.script, params=list(params.values()),
            renew_before_days=days_before, renew_before_percent=percent,
            warning_days=_warning_days(warning_days) if warning_days is not None else list(renewal.warning_days),
            default_key=KeySpec.parse(key) if key is not None else current.default_key,
            concurrency=concurrency if concurrency is not None else sandbox.concurrency,
            allow_read=[p for p in allow_read if p] if allow_read is not None else list(sandbox.allow_read),
            allow_write=[p for p in allow_write if p] if allow_write is not None else list(sandbox.allow_write),
            max_pending_days=max_pending_days,
            deploy=DeploySettings(
                root=deploy.root if deploy_root is None else deploy_root,
                command=deploy.command if deploy_command is None else deploy_command,
                owner=deploy.owner if deploy_owner is None else deploy_owner,
            ),
            notify=NotifySettings(
                url=notify.url if notify_url is None else notify_url,  # `***` read back keeps the stored URL
                email=notify.email if notify_email is None else notify_email,
            ),
            actor=local_actor(),
        )
    say(f"profile {profile.name} updated")


@app.command("list")
@settings_flags
def list_(json_: JsonFlag = False) -> None:
    """List profiles."""
    with open_app() as ctx:
        profiles = service.list_profiles(ctx)
    if json_:
        print_json([profile_view(p) for p in profiles])
        return
    print_table(
        ["NAME", "SCRIPT", "PARAMS", "DYNAMIC", "KEY"],
        [(p.name, p.script, len(p.params), ",".join(d.name for d in p.dynamic_params()) or None, p.default_key)
         for p in profiles],
        empty="no profiles yet: create one with `certpilot profile create NAME --script SCRIPT`",
    )

def _renewal_text(view: dict) -> str:
    if view["renew_before_days"] is not None:
        return f"{view['renew_before_days']} days before expiry"
    if view["renew_before_percent"] is not None:
        return f"when {view['renew_before_percent']:g}% of the lifetime is left"
    return "at 2/3 of the lifetime"

@app.command("show")
@settings_flags
def show(name: str, json_: JsonFlag = False) -> None:
    """Show a profile; sensitive values are shown as ***."""
    with open_app() as ctx:
        profile = service.get_profile(ctx, name)
    view = profile_view(profile)
    if json_:
        print_json(view)
        return
    print_fields([("name", view["name"]), ("script", view["script"]), ("renewal", _renewal_text(view)),
                  ("warning days", ",".join(map(str, view["warning_days"]))), ("default key", view["default_key"]),
                  ("concurrency", view["concurrency"]), ("allow read", ", ".join(view["allow_read"]) or None),
                  ("allow write", ", ".join(view["allow_write"]) or None),
                  ("deploy root", view["deploy_root"]), ("deploy command", view["deploy_command"]),
                  ("deploy owner", view["deploy_owner"]), ("notify url", view["notify_url"]),
                  ("notify email", view["notify_email"]), ("max pending days", view["max_pending_days"])])
    say("")
    print_table(
        ["PARAM", "VALUE", "SENSITIVE", "DYNAMIC"],
        [(p["name"], "(per certificate)" if p["dynamic"] else p["value"], "yes" if p["sensitive"] else "no",
          "yes" if p["dynamic"] else "no") for p in view["params"]],
        empty="no parameters",
    )

@app.command("state")
@settings_flags
def state(name: str, json_: JsonFlag = False) -> None:
    """The keys its script keeps in context.state (never the values: they may be secrets)."""
    with open_app() as ctx:
        keys = service.script_state_keys(ctx, name)
    if json_:
        print_json({"profile": name, "keys": keys})
        return
    print_table(["KEY"], [(k,) for k in keys], empty=f"the script of profile {name} keeps no state")

@app.command("remove")
@settings_flags
def remove(name: str) -> None:
    """Remove a profile no certificate uses."""
    with open_app() as ctx:
        service.remove_profile(ctx, name, actor=local_actor())
    say(f"profile {name} removed")
