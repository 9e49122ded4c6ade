"""Secrets at rest (DESIGN §4): after issuing with sensitive static and dynamic
parameters that the script prints, logs and raises, no column of any table, and
for SQLite no byte of the database files, holds a sensitive value, the private
key or the master key in clear.

Runs on SQLite and PostgreSQL (the `app` fixture).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import inspect, text

from certpilot.domain.model import KeySpec, Outcome, ProfileParam, make_subject
from certpilot.pki.certificate import public_key_sha256
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import (
    export_certificate,
    get_certificate,
    list_attempts,
    list_revisions,
    request_certificate,
    request_renewal,
)
from certpilot.services.issuance import attempt
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script, update_script
from certpilot.services.setup import bundled_local_ca_source

SCRIPT = "local-ca-chatty"
SENSITIVE = ("ca_key_password", "api_password", "token")
EXPECTED_TABLES = {
    "scripts", "profiles", "profile_params", "certificates", "certificate_params",
    "certificate_status", "keys", "revisions", "attempts", "events",
}

# The bundled script, wrapped so that it shows every sensitive value it is given
# in every way a script can: log, stdout, stderr (and, when failing, the error).
CHATTY = '''

import hashlib as _hashlib
import sys as _sys

_issue = certificate_request


def _show(args_dict, context):
    for name in {sensitive!r}:
        value = args_dict[name]
        context.log(f"log {{name}}={{value}}")
        print(f"stdout {{name}}={{value}}", flush=True)
        print(f"stderr {{name}}={{value}}", file=_sys.stderr, flush=True)
        # proves, without showing it, that the script got the value in clear
        context.log(f"{{name}}-sha256={{_hashlib.sha256(value.encode()).hexdigest()}}")


def certificate_request(csr, common_name, args_dict, context):
    _show(args_dict, context)
    {ending}
'''


def chatty_source(ending: str) -> str:
    return bundled_local_ca_source() + CHATTY.format(sensitive=SENSITIVE, ending=ending)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def dump_database(app: App) -> tuple[list[str], list[bytes], set[str]]:
    """Every text value and every binary value of every row of every table."""
    texts: list[str] = []
    blobs: list[bytes] = []
    engine = app.db.engine
    tables = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in sorted(tables):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        blobs.append(bytes(value))
                    elif isinstance(value, str):
                        texts.append(value)
                    else:  # JSON columns, numbers, datetimes
                        texts.append(json.dumps(value, default=str))
    return texts, blobs, tables


def sqlite_files(app: App) -> list[Path]:
    database = Path(app.db.engine.url.database)
    return [p for p in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")))
            if p.exists()]


def test_no_secret_is_stored_in_clear(app: App, test_ca: LocalCA, tmp_path: Path) -> None:
    api_password = "api-" + secrets.token_urlsafe(18)
    token = "tok-" + secrets.token_urlsafe(18)
    visible = "cc-" + secrets.token_hex(8)  # a non-sensitive dynamic value: must be found
    values = {"ca_key_password": test_ca.password, "api_password": api_password, "token": token}

    add_script(app, SCRIPT, chatty_source("return _issue(csr, common_name, args_dict)"), timeout_s=20, actor="t")
    create_profile(
        app, "corp", script=SCRIPT, actor="t",
        params=[
            ProfileParam("ca_cert", test_ca.cert_path.read_text()),
            ProfileParam("ca_key", test_ca.key_path.read_text(), sensitive=True),
            ProfileParam("ca_key_password", test_ca.password, sensitive=True),
            ProfileParam("validity_days", "90"),
            ProfileParam("api_password", api_password, sensitive=True),
            ProfileParam("token", None, sensitive=True, dynamic=True),
            ProfileParam("cost_center", None, dynamic=True),
        ],
    )
    request_certificate(
        app, "web1", profile="corp", subject=make_subject("web1.example.test"),
        subject_alt_names=["DNS:www.example.test"], key=KeySpec.parse("ec:p256"),
        dynamic_params={"token": token, "cost_center": visible}, actor="t",
    )
    issued = attempt(app, "web1")
    assert (issued.outcome, issued.revision) == (Outcome.ISSUED, 1), issued.error

    # a failing renewal as well: its error, output and event carry the secrets too
    update_script(
        app, SCRIPT,
        chatty_source('raise RuntimeError(f"CA rejected {args_dict[\'api_password\']} and {args_dict[\'token\']}")'),
        timeout_s=20, actor="t",
    )
    request_renewal(app, "web1", actor="t")
    failed = attempt(app, "web1")
    assert failed.outcome is Outcome.FAILED
    assert failed.error == "CA rejected *** and ***"

    # the script saw every value in clear, and every place it showed one got `***`
    for a in list_attempts(app, "web1"):
        for name, value in values.items():
            assert f"{name}-sha256={sha256_hex(value)}" in a.output, f"the script did not get {name} in clear"
            for where in ("log", "stdout", "stderr"):
                assert f"{where} {name}=***" in a.output
    assert get_certificate(app, "web1").spec.dynamic_params["token"] == "***"

    exported = export_certificate(app, "web1", tmp_path / "export", include_key=True, actor="t")
    assert exported.revision == 1
    key_pem = (tmp_path / "export" / "key.pem").read_text()
    body_lines = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    der = base64.b64decode("".join(body_lines))
    private_key = serialization.load_der_private_key(der, password=None)
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    scalar = private_key.private_numbers().private_value.to_bytes(32, "big")
    master_key = app.settings.effective_master_key_file.read_text().strip()
    (revision_1,) = list_revisions(app, "web1")
    assert public_key_sha256(private_key.public_key()) == revision_1.public_key_sha256

    text_needles = {**{f"sensitive {n}": v for n, v in values.items()},
                    "the private key (base64)": "".join(body_lines),
                    **{f"private key PEM line {i}": line for i, line in enumerate(body_lines) if len(line) >= 16},
                    "the master key": master_key}
    byte_needles = {**{name: value.encode() for name, value in text_needles.items()},
                    "the private key (DER)": der, "the private scalar": scalar,
                    "the master key (raw)": base64.b64decode(master_key)}

    texts, blobs, tables = dump_database(app)
    assert EXPECTED_TABLES <= tables, f"tables missing from the dump: {EXPECTED_TABLES - tables}"
    # the dump sees what it should: the visible value, the leaf, and sealed blobs
    assert any(visible in t for t in texts)
    assert any("BEGIN CERTIFICATE" in t for t in texts)
    assert any(b.startswith(b"v1") and len(b) > 28 for b in blobs)

    for what, needle in text_needles.items():
        assert not any(needle in t for t in texts), f"{what} is stored in clear in a text column"
    for what, needle in byte_needles.items():
        assert not any(needle in b for b in blobs), f"{what} is stored in clear in a binary column"
        assert not any(needle in t.encode() for t in texts), f"{what} is stored in clear in a text column"

    if app.db.engine.dialect.name == "sqlite":
        app.db.engine.dispose()  # close connections; the files are read as they are on disk
        files = sqlite_files(app)
        raw = b"".join(p.read_bytes() for p in files)
        assert visible.encode() in raw, f"the visible value is not in {[p.name for p in files]}"
        for what, needle in byte_needles.items():
            assert needle not in raw, f"{what} is in clear in the SQLite files"
