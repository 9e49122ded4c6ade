"""`certpilot script …`"""

from pathlib import Path
from typing import Annotated

import typer

from certpilot.cli.context import lazy_module, local_actor, open_app, settings_flags
from certpilot.cli.output import print_fields, print_json, print_table, say
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import DEFAULT_SCRIPT_TIMEOUT_S
from certpilot.services.views import script_view, timestamp

service = lazy_module("certpilot.services.scripts")

app = typer.Typer(help="Issuer scripts: Python files defining certificate_request(csr, common_name, args_dict).",
                  no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]

def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"script file {path} does not exist", field="file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read script file {path}: {exc}", field="file") from None

@app.command("add")
@settings_flags
def add(
    name: str,
    file: Annotated[Path | None, typer.Option("--file", help="The script's source file.")] = None,
    bundled: Annotated[str | None, typer.Option("--bundled", metavar="KIND", help="A script that ships with certpilot: acme, certmonger or local-ca (see `certpilot script bundled`).")] = None,
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds a call may take.")] = DEFAULT_SCRIPT_TIMEOUT_S,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the source of an existing script.")] = False,
) -> None:
    """Add a script from --file or --bundled (or, with --replace, give an existing one a new source)."""
    if (file is None) == (bundled is None):
        raise InvalidInput("give the script's source with either --file PATH or --bundled KIND", field="file")
    if bundled is not None:
        from certpilot.issuers.bundled import bundled_source

        source = bundled_source(bundled)
    else:
        assert file is not None
        source = read_source(file)
    with open_app() as ctx:
        if replace:
            script = service.update_script(ctx, name, source, timeout_s=timeout, actor=local_actor())
        else:
            script = service.add_script(ctx, name, source, timeout_s=timeout, actor=local_actor())
    say(f"script {script.name} {'replaced' if replace else 'added'} (sha256 {script.sha256[:16]}…, timeout {script.timeout_s} s)")

@app.command("list")
@settings_flags
def list_(json_: JsonFlag = False) -> None:
    """List scripts."""
    with open_app() as ctx:
        scripts = service.list_scripts(ctx)
    if json_:
        print_json([script_view(s) for s in scripts])
        return
    print_table(
        ["NAME", "SHA256", "TIMEOUT_S", "UPDATED"],
        [(s.name, s.sha256[:16], s.timeout_s, timestamp(s.updated_at)) for s in scripts],
        empty="no scripts yet: add one with `certpilot script add NAME --file PATH`",
    )

@app.command("show")
@settings_flags
def show(name: str, json_: JsonFlag = False) -> None:
    """Show one script with its source."""
    with open_app() as ctx:
        script = service.get_script(ctx, name)
    if json_:
        print_json(script_view(script))
        return
    view = script_view(script)
    print_fields([(k, view[k]) for k in ("name", "kind", "sha256", "timeout_s", "created_at", "updated_at")])
    say("")
    say(script.source)

@app.command("remove")
@settings_flags
def remove(name: str) -> None:
    """Remove a script no profile uses."""
    with open_app() as ctx:
        service.remove_script(ctx, name, actor=local_actor())
    say(f"script {name} removed")

@app.command("bundled")
def bundled_(json_: JsonFlag = False) -> None:
    """The scripts that ship with certpilot, with their parameters (add one with --bundled KIND)."""
    from certpilot.issuers.bundled import BUNDLED

    if json_:
        print_json([{"kind": b.kind, "description": b.description,
                     "params": [{"name": p.name, "description": p.description, "sensitive": p.sensitive,
                                 "required": p.required} for p in b.params]} for b in BUNDLED])
        return
    for b in BUNDLED:
        say(f"{b.kind}: {b.description}")
        print_table(["PARAM", "SENSITIVE", "REQUIRED", "DESCRIPTION"],
                    [(p.name, "yes" if p.sensitive else "no", "yes" if p.required else "no", p.description)
                     for p in b.params], empty="no parameters")
        say("")
