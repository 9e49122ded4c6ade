"""`certpilot hsm …`"""

from pathlib import Path
from typing import Annotated

import typer

from certpilot.cli.context import lazy_module, local_actor, open_app, read_secret_file, settings_flags
from certpilot.cli.output import print_fields, print_json, print_table, say
from certpilot.domain.errors import InvalidInput
from certpilot.services.views import hsm_group_view

service = lazy_module("certpilot.services.hsm")

app = typer.Typer(help="HSM groups: PKCS#11 tokens that hold certificate keys.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


@app.command("add")
@settings_flags
def add(
    name: str,
    module: Annotated[str, typer.Option("--module", help="Path of the PKCS#11 module (.so).")],
    token: Annotated[str, typer.Option("--token", help="Token label.")],
    pin: Annotated[str | None, typer.Option("--pin", help="User PIN (prefer --pin-file: argv is visible to others).")] = None,
    pin_file: Annotated[Path | None, typer.Option("--pin-file", help="Read the user PIN from the first line.")] = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", help="NAME=VALUE the module reads from the environment, e.g. SOFTHSM2_CONF=/etc/softhsm2.conf; "
                      "set in every certpilot process before it loads the module (repeatable).")] = None,
) -> None:
    """Add an HSM group; its PIN is sealed under the master key and never shown."""
    if (pin is None) == (pin_file is None):
        raise InvalidInput("give the PIN with exactly one of --pin or --pin-file", field="pin")
    if pin_file is not None:
        pin = read_secret_file(pin_file, "PIN")
    module_env: dict[str, str] = {}
    for text in env or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {text!r}: give NAME=VALUE", field="module_env")
        if key in module_env:
            raise InvalidInput(f"--env {key} is given twice", field="module_env")
        module_env[key] = value
    with open_app() as ctx:
        service.add_group(ctx, name, module_path=module, token_label=token, pin=pin or "", actor=local_actor(),
                          module_env=module_env)
    say(f"HSM group {name} added (token {token}); check it with `certpilot hsm check {name}`")


@app.command("list")
@settings_flags
def list_(json_: JsonFlag = False) -> None:
    """List HSM groups."""
    with open_app() as ctx:
        rows = [hsm_group_view(g) for g in service.list_groups(ctx)]
    if json_:
        print_json(rows)
        return
    print_table(["NAME", "TOKEN", "MODULE", "ENV"],
                [(r["name"], r["token_label"], r["module_path"],
                  " ".join(f"{k}={v}" for k, v in sorted(r["module_env"].items())) or None) for r in rows],
                empty="no HSM groups")


@app.command("show")
@settings_flags
def show(name: str, json_: JsonFlag = False) -> None:
    """Show an HSM group (never its PIN)."""
    with open_app() as ctx:
        view = hsm_group_view(service.get_group(ctx, name))
    if json_:
        print_json(view)
        return
    env = " ".join(f"{k}={v}" for k, v in sorted(view["module_env"].items())) or None
    print_fields([(k, env if k == "module_env" else v) for k, v in view.items()])


@app.command("check")
@settings_flags
def check(name: str, json_: JsonFlag = False) -> None:
    """Log in to the token and report what it is."""
    with open_app() as ctx:
        info = service.check_group(ctx, name)
    view = {"label": info.label, "manufacturer": info.manufacturer, "model": info.model, "serial": info.serial,
            "mechanisms": info.mechanisms}
    if json_:
        print_json(view)
        return
    say(f"HSM group {name}: logged in to token {info.label!r}")
    print_fields(list(view.items()))


@app.command("remove")
@settings_flags
def remove(name: str) -> None:
    """Remove an HSM group no certificate uses."""
    with open_app() as ctx:
        service.remove_group(ctx, name, actor=local_actor())
    say(f"HSM group {name} removed")
