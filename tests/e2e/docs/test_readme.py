"""The README as a new user follows it: every relative link resolves, and its
walkthroughs (the fenced `sh` blocks) run top to bottom on a fresh directory laid out
like a clone after `make run`.

The walkthrough runs each block with bash (`set -euo pipefail`) in a fresh working
directory that holds `.venv` and `examples/` of this checkout, after what `make run`
does on its first run (`certpilot init --demo` in ./certpilot-data, then `certpilot
serve` on a free port, which replaces 8080 in the blocks; the admin password `init`
printed replaces PASSWORD). The `export` lines of earlier blocks carry over, as they
would in one terminal. Only two things are not run as written: `make run` / `make
test` themselves (done as above) and `sudo apt-get install` (the suite installs its
Debian packages). The HSM block needs SoftHSM2: missing, it is skipped, or fails
under CI=true. Nothing in the processes' environment points at a SoftHSM
configuration: the HSM group must carry it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate
from tests.conftest import missing
from tests.support.processes import certpilot_executable, free_port
from tests.support.web import start_server, stop_server

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
DOCS = [README, REPO / "docs" / "architecture.md"]
BLOCK_TIMEOUT_S = 300

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCE.sub("", markdown.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def relative_links(markdown: Path) -> list[str]:
    text = FENCE.sub("", markdown.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert doc.exists(), doc
    links = relative_links(doc)
    assert links, f"{doc} has no relative links: is the pattern still right?"
    broken = []
    for target in links:
        path, _, fragment = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or REPO not in (file, *file.parents):
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not broken, "\n".join(broken)


def test_readme_links_the_architecture_and_nothing_outside_the_repository() -> None:
    targets = relative_links(README)
    assert "docs/architecture.md" in targets
    assert not [t for t in targets if t.split("#")[0] in ("DESIGN.md", "STYLE.md")]


def test_the_shipped_example_is_the_bundled_script() -> None:
    """`examples/issuers/local_ca.py` (what the README tells people to read and add) is
    the script `certpilot init --demo` installs."""
    shipped = (REPO / "examples" / "issuers" / "local_ca.py").read_text()
    assert shipped == (REPO / "src" / "certpilot" / "examples" / "local_ca.py").read_text()


def test_make_run_initialises_as_the_walkthrough_assumes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r'certpilot --data-dir "\$\(DATA_DIR\)" init --demo', makefile)
    assert re.search(r"^DATA_DIR \?= \./certpilot-data$", makefile, re.M)


# --- the walkthrough ----------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    heading: str
    script: str

    @property
    def needs_server(self) -> bool:
        return "curl " in self.script

    @property
    def needs_softhsm(self) -> bool:
        return "softhsm2-util" in self.script


def shell_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "sh":
            continue
        headings = re.findall(r"^##\s+(.+)$", text[: match.start()], re.M)
        blocks.append(Block(headings[-1] if headings else "", match.group(2)))
    return blocks


# What the README points at that a test must not touch: system directories, a real
# service's reload, a webhook on the internet. Each is replaced by its stand-in here;
# `test_the_walkthrough_reaches_nothing_outside_this_machine` fails for any new one.
STAND_INS = {
    "/etc/certpilot/live": "$PWD/deployed",
    "/usr/sbin/nginx -s reload": "/bin/true",
    "https://hooks.slack.com/services/T000/B000/XXXX": "http://127.0.0.1:9/webhook",  # discard port: refused
}


def runnable(block: Block, *, port: int, admin_password: str) -> str:
    lines = []
    for line in block.script.splitlines():
        if re.match(r"^\s*(make (run|test)|sudo apt-get install)\b", line):
            continue
        lines.append(line)
    script = "\n".join(lines)
    for original, stand_in in STAND_INS.items():
        script = script.replace(original, stand_in)
    return script.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("'PASSWORD'", f"'{admin_password}'")


def test_the_walkthrough_reaches_nothing_outside_this_machine() -> None:
    """Every URL the walkthrough runs is on loopback, and it writes nowhere under /etc
    or /usr: a README block that would is given a stand-in in STAND_INS first."""
    for block in shell_blocks():
        script = runnable(block, port=8080, admin_password="x")
        commands = "\n".join(line.split(" #")[0] for line in script.splitlines())  # comments may name anything
        urls = re.findall(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", commands)
        outside = [u for u in urls if not re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", u)
                   and not u.startswith(("sqlite:", "postgresql"))]
        assert outside == [], f"README block under '{block.heading}' would reach {outside}: add a stand-in"
        system = re.findall(r"(?<![\w.$])/(?:etc|usr|var|srv|opt)/[^\s'\"]*", commands)
        allowed = ("/usr/lib/softhsm/libsofthsm2.so", "/bin/true")
        assert [p for p in system if p not in allowed] == [], f"README block under '{block.heading}' touches {system}"


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)


def test_the_readme_walkthrough_runs_top_to_bottom(tmp_path: Path) -> None:
    from tests.support import softhsm

    blocks = shell_blocks()
    assert [b for b in blocks if "certpilot cert request shop1" in b.script], "the seed walkthrough is gone"
    if any(b.needs_softhsm for b in blocks) and softhsm.UNAVAILABLE is not None:
        missing(softhsm.UNAVAILABLE)

    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(REPO / ".venv")
    (clone / "examples").symlink_to(REPO / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTPILOT_") and k != "SOFTHSM2_CONF"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the README's own export puts .venv/bin first

    # `make run`, first run: init --demo in ./certpilot-data, then serve
    init = subprocess.run([certpilot_executable(), "--data-dir", "./certpilot-data", "init", "--demo"], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    admin_password = re.search(r"admin password \(shown once\): (\S+)", init.stdout).group(1)  # type: ignore[union-attr]
    port = free_port()
    server_env = {**env, "CERTPILOT_DATA_DIR": str(clone / "certpilot-data"), "CERTPILOT_RECONCILE_INTERVAL_S": "2"}
    server, server_log = start_server(clone, server_env, port)
    try:
        exports: list[str] = []
        for block in blocks:
            script = runnable(block, port=port, admin_password=admin_password)
            done = bash("\n".join([*exports, script]), clone, env)
            assert done.returncode == 0, (
                f"README block under '{block.heading}' failed (exit {done.returncode}):\n{script}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n--- server\n{server_log.read_text()[-3000:]}"
            )
            assert "Traceback" not in done.stderr, done.stderr
            exports += [line for line in script.splitlines() if line.startswith("export ")]

        shell_env = "\n".join(exports)

        def show(name: str) -> dict:
            shown = bash(f"{shell_env}\ncertpilot cert show {name} --json", clone, env)
            assert shown.returncode == 0, shown.stderr
            return json.loads(shown.stdout)["status"]

        assert show("web1")["phase"] == "issued"
        shop1 = show("shop1")
        assert shop1["phase"] == "issued" and shop1["revision"] == 2, shop1
        assert (clone / "shop1" / "fullchain.pem").exists()
        assert show("api1")["revision"] >= 1
        assert (clone / "api1-fullchain.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert (clone / "hsm1" / "key.pkcs11-uri").read_text().startswith("pkcs11:token=certpilot;")

        # the server `make run` started has no SOFTHSM2_CONF: its renewal loop renews hsm1 all the same
        renew = bash(f"{shell_env}\ncertpilot cert renew hsm1", clone, env)
        assert renew.returncode == 0, renew.stderr
        deadline = time.monotonic() + 60
        with App(Settings(data_dir=clone / "certpilot-data")) as app:  # polled from the database, not a process a poll
            while (hsm1 := get_certificate(app, "hsm1").status).revision < 2:
                assert hsm1.failures == 0, f"{hsm1}\n{server_log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the server did not renew hsm1: {hsm1}\n{server_log.read_text()[-5000:]}"
                time.sleep(0.2)
        assert show("hsm1")["revision"] >= 2  # and the command line says so
    finally:
        stop_server(server)
