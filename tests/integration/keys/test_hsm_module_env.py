"""An HSM group carries the environment its PKCS#11 module reads (`hsm add --env
NAME=VALUE`): every certpilot process that uses the group sets it before it loads the
module, so processes started WITHOUT SOFTHSM2_CONF (a `certpilot serve`/`worker`
started by `make run`, a CLI call) find the token.

The tokens here live in a SoftHSM configuration of their own, named by no process's
environment: only the group's `--env` can lead a process to them. The processes are
real `certpilot` commands (and one Python process for a module loaded twice) started
with SOFTHSM2_CONF removed from their environment; the test reads what the worker did
from the database, and checks `hsm add`'s refusals (which load no module) in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate
from tests.integration.keys.hsm_support import MODULE, init_token
from tests.support.cli import Cli
from tests.support.processes import certpilot_executable

pytestmark = pytest.mark.slow

PIN = "Pin-5e1f2a9c"
CALL_TIMEOUT_S = 120


@dataclass(frozen=True)
class PrivateSoftHsm:
    conf: Path
    token: str


def private_softhsm(root: Path, token: str) -> PrivateSoftHsm:
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    init_token(conf, token, PIN)
    return PrivateSoftHsm(conf, token)


def clean_env(data_dir: Path) -> dict[str, str]:
    """This process's environment without SOFTHSM2_CONF or any certpilot setting."""
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith("CERTPILOT_")}
    env["CERTPILOT_DATA_DIR"] = str(data_dir)
    env["CERTPILOT_INSECURE_TEST_PASSWORD_HASHING"] = "1"
    return env


def certpilot(env: dict[str, str], *args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([certpilot_executable(), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=CALL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    if ok:
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def unloaded(tmp_path: Path) -> Cli:
    """The command line in the test process, SOFTHSM2_CONF unset, for the commands that load
    no PKCS#11 module (those that do are real processes: `certpilot(...)`)."""
    return Cli(tmp_path / "data", None, env={"SOFTHSM2_CONF": None})


@pytest.fixture
def installation(tmp_path: Path, softhsm: object) -> tuple[dict[str, str], PrivateSoftHsm, Path]:
    hsm = private_softhsm(tmp_path / "softhsm", "envtoken")
    env = clean_env(tmp_path / "data")
    unloaded(tmp_path).ok("init", "--demo")
    pin_file = tmp_path / "pin.txt"
    pin_file.write_text(PIN + "\n")
    return env, hsm, pin_file


def test_a_process_without_softhsm2_conf_uses_the_group(installation: tuple[dict[str, str], PrivateSoftHsm, Path],
                                                        tmp_path: Path) -> None:
    env, hsm, pin_file = installation
    assert "SOFTHSM2_CONF" not in env

    cli = unloaded(tmp_path)
    # without the group's environment the token is out of reach: the control
    cli.ok("hsm", "add", "bare", "--module", MODULE, "--token", hsm.token, "--pin-file", pin_file)
    bare = certpilot(env, "hsm", "check", "bare", ok=False)
    assert bare.returncode == 1 and f"no token labelled '{hsm.token}'" in bare.stderr, bare.stderr
    cli.ok("hsm", "remove", "bare")

    cli.ok("hsm", "add", "soft", "--module", MODULE, "--token", hsm.token, "--pin-file", pin_file,
           "--env", f"SOFTHSM2_CONF={hsm.conf}")
    listed = cli.ok("hsm", "list").stdout
    assert listed.splitlines()[0].split() == ["NAME", "TOKEN", "MODULE", "ENV"], listed
    assert f"soft  envtoken  {MODULE}  SOFTHSM2_CONF={hsm.conf}" in listed, listed
    [group] = cli.json("hsm", "list", "--json")
    assert group["module_env"] == {"SOFTHSM2_CONF": str(hsm.conf)} and group["pin"] == "***"

    check = certpilot(env, "hsm", "check", "soft", "--json")
    assert json.loads(check.stdout)["label"] == hsm.token

    certpilot(env, "cert", "request", "h1", "--profile", "demo", "--cn", "h1.example.test", "--hsm-group", "soft",
              "--wait")
    out = tmp_path / "h1"
    certpilot(env, "cert", "export", "h1", "--out", out)
    assert (out / "key.pkcs11-uri").read_text().startswith(f"pkcs11:token={hsm.token};")

    # a renewal loop in a process of its own, like the server `make run` starts
    worker = subprocess.Popen([certpilot_executable(), "worker"], env={**env, "CERTPILOT_RECONCILE_INTERVAL_S": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        cli.ok("cert", "request", "h2", "--profile", "demo", "--cn", "h2.example.test", "--hsm-group", "soft")
        cli.ok("cert", "renew", "h1")
        with App(Settings(data_dir=tmp_path / "data")) as app:  # reads the database only: no module loaded
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                h1, h2 = get_certificate(app, "h1").status, get_certificate(app, "h2").status
                if h1.revision == 2 and h2.phase.value == "issued":
                    break
                assert h1.failures == 0 and h2.failures == 0, (h1, h2)
                time.sleep(0.2)
            else:
                pytest.fail(f"the worker did not issue h2 and renew h1: {h1} {h2}")
    finally:
        worker.terminate()
        log, _ = worker.communicate(timeout=60)
    assert "no token labelled" not in log, log


def test_groups_on_one_module_share_its_environment(installation: tuple[dict[str, str], PrivateSoftHsm, Path],
                                                    tmp_path: Path) -> None:
    _, hsm, pin_file = installation
    cli = unloaded(tmp_path)
    cli.ok("hsm", "add", "soft", "--module", MODULE, "--token", hsm.token, "--pin-file", pin_file,
           "--env", f"SOFTHSM2_CONF={hsm.conf}")
    other = cli.run("hsm", "add", "other", "--module", MODULE, "--token", hsm.token, "--pin-file", pin_file,
                    "--env", f"SOFTHSM2_CONF={tmp_path / 'elsewhere.conf'}")
    assert other.returncode == 1 and "same environment" in other.stderr and "'soft'" in other.stderr, other.stderr
    for bad, says in ((f"LD_PRELOAD={tmp_path}/x.so", "LD_PRELOAD"), ("CERTPILOT_DATA_DIR=/tmp", "CERTPILOT_DATA_DIR"),
                      ("NO_EQUALS", "NAME=VALUE"), ("BAD-NAME=1", "BAD-NAME")):
        refused = cli.run("hsm", "add", "x", "--module", MODULE, "--token", hsm.token, "--pin-file", pin_file,
                          "--env", bad)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    names = [g["name"] for g in cli.json("hsm", "list", "--json")]
    assert names == ["soft"]


RELOAD = textwrap.dedent("""
    import json, sys
    from certpilot.keys import pkcs11_backend
    from certpilot.keys.pkcs11_backend import TokenRef
    module, first_conf, first_token, second_conf, second_token, pin = sys.argv[1:]
    labels = []
    for conf, token in ((first_conf, first_token), (second_conf, second_token), (first_conf, first_token)):
        ref = TokenRef(module, token, pin, env=(("SOFTHSM2_CONF", conf),))
        labels.append(pkcs11_backend.token_info(ref).label)
    print(json.dumps(labels))
""")


def test_a_process_that_loaded_the_module_reads_a_new_environment(tmp_path: Path, softhsm: object) -> None:
    """A server keeps running while a group is removed and added again with another
    environment: the module is initialised again and reads it."""
    first = private_softhsm(tmp_path / "first", "first-token")
    second = private_softhsm(tmp_path / "second", "second-token")
    env = clean_env(tmp_path / "unused")
    done = subprocess.run([sys.executable, "-c", RELOAD, MODULE, first.conf, first.token, second.conf, second.token,
                           PIN], env=env, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["first-token", "second-token", "first-token"]
