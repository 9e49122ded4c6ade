"""`context.state` through the console script: three issuances in three separate
processes see 1, 2, 3; a call that fails still saves what it changed; the state's text is
not in the database; `profile state` shows key names only. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from certpilot.services.setup import bundled_local_ca_source
from tests.support.cli import Cli
from tests.support.script_access import scripts_directory

pytestmark = pytest.mark.slow

# The bundled local-CA script's signing function, under a CA the script makes on its first
# call and keeps in context.state (so the state holds a private key: a real secret).
COUNTER = bundled_local_ca_source().replace("def certificate_request(", "def _sign(") + '''

import os as _os
import secrets as _secrets

from cryptography.hazmat.primitives.asymmetric import ec as _ec
from cryptography.x509.oid import NameOID as _NameOID


def _ca(state):
    if "ca_key" not in state:
        key = _ec.generate_private_key(_ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(_NameOID.COMMON_NAME, "state-kept test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        state["ca_key"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
        state["ca_cert"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    return {"ca_cert": state["ca_cert"], "ca_key": state["ca_key"], "validity_days": "30"}


def certificate_request(csr, common_name, args_dict, context):
    count = int(context.state.get("count", "0")) + 1
    context.state["count"] = str(count)
    note = context.state.setdefault("note", "state-note-" + _secrets.token_hex(16))
    out = args_dict["out_dir"]
    with open(_os.path.join(out, "seen-%d-%s" % (count, common_name)), "w") as f:
        f.write("%d %s" % (_os.getpid(), note))
    if common_name.startswith("fail"):
        raise RuntimeError("failing on purpose after count %d" % count)
    return _sign(csr, common_name, _ca(context.state))
'''


@pytest.fixture
def out_dir() -> Iterator[Path]:
    with scripts_directory() as shared:
        directory = shared / "out"  # granted through its parent
        directory.mkdir()
        directory.chmod(0o1777)
        yield directory


def _seen(out_dir: Path) -> list[tuple[int, str, int, str]]:
    seen = []
    for f in out_dir.glob("seen-*"):
        _, count, cn = f.name.split("-", 2)
        pid, note = f.read_text().split()
        seen.append((int(count), cn, int(pid), note))
    return sorted(seen)


def _stored_text(cli: Cli) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or PostgreSQL's rows."""
    url = cli.database_url or f"sqlite:///{cli.data_dir / 'certpilot.db'}"
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"))]
            return "".join(repr(list(conn.execute(text(f'SELECT * FROM "{t}"')))) for t in tables).encode()
    finally:
        engine.dispose()


def test_three_processes_see_1_2_3_and_the_state_is_sealed(cli: Cli, tmp_path: Path, out_dir: Path) -> None:
    cli.ok("init")
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    cli.ok("script", "add", "counter", "--file", script)
    cli.ok("profile", "create", "counting", "--script", "counter", "--param", f"out_dir={out_dir}/",
           "--allow-write", str(out_dir.parent))

    # each `cert request` is a `certpilot` process of its own (the set-up ran in the test process)
    processes = dataclasses.replace(cli, in_process=False, history=cli.history)
    for name in ("c1", "c2", "c3"):
        processes.ok("cert", "request", name, "--profile", "counting", "--cn", f"{name}.example.test", "--wait")

    seen = _seen(out_dir)
    assert [(count, cn) for count, cn, _, _ in seen] == [(1, "c1.example.test"), (2, "c2.example.test"),
                                                        (3, "c3.example.test")]
    assert len({pid for _, _, pid, _ in seen}) == 3, "three separate script processes"
    (note,) = {note for _, _, _, note in seen}  # the same state every time

    failed = cli.run("cert", "request", "fail4", "--profile", "counting", "--cn", "fail4.example.test", "--wait")
    assert failed.returncode != 0 and "failing on purpose after count 4" in failed.stdout + failed.stderr
    cli.ok("cert", "request", "c5", "--profile", "counting", "--cn", "c5.example.test", "--wait")
    assert [count for count, _, _, _ in _seen(out_dir)] == [1, 2, 3, 4, 5], "the failed call's write was kept"

    assert cli.json("profile", "state", "counting", "--json") == {
        "profile": "counting", "keys": ["ca_cert", "ca_key", "count", "note"]}
    listing = cli.ok("profile", "state", "counting").stdout
    assert "ca_key" in listing and "BEGIN" not in listing and note not in listing

    stored = _stored_text(cli)
    assert note.encode() not in stored, "a state value is in the database in clear"
    assert b"PRIVATE KEY" not in stored
    assert note not in cli.all_output()
