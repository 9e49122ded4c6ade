"""Real notification receivers on loopback: a webhook (http.server in a thread) that can
be stopped and started again on the same port, and an SMTP server (aiosmtpd) plain,
with STARTTLS, or with TLS from the first byte, optionally requiring a login."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port


@dataclass
class Webhook:
    """Records every POST body; answers `status` (200 unless told otherwise)."""

    path: str = "/hooks/T0KEN-s3cr3t-path"
    status: int = 200
    bodies: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(b) for b in self.bodies]

    def start(self) -> Webhook:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == receiver.path and receiver.status < 300:
                    with receiver._lock:
                        receiver.bodies.append(body)
                self.send_response(receiver.status if self.path == receiver.path else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def webhook() -> Iterator[Webhook]:
    receiver = Webhook().start()
    try:
        yield receiver
    finally:
        receiver.stop()


# --- SMTP ---------------------------------------------------------------------------


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate and key for `host` (an IP SAN), self-signed: (cert, key) paths."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certpilot test smtp")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None


class SmtpSink:
    """An aiosmtpd server keeping every message it accepts (and whether TLS and a login were used)."""

    def __init__(self, *, mode: str, tls_dir: Path | None = None, users: dict[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[Mail] = []
        self.cafile: Path | None = None
        context = None
        if mode in ("starttls", "smtps"):
            assert tls_dir is not None
            cert, key = self_signed(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.cafile = cert
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                login = session.auth_data if session.authenticated else None
                tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or smtps
                sink.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, login))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
            ok = (isinstance(auth_data, LoginPassword) and users is not None
                  and users.get(auth_data.login.decode()) == auth_data.password.decode())
            return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": free_port()}
        server_kwargs: dict[str, Any] = {}
        if users is not None:
            server_kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=mode == "starttls")  # smtps: TLS from the first byte
        if mode == "starttls":
            server_kwargs.update(tls_context=context, require_starttls=True)
        elif mode == "smtps":
            kwargs["ssl_context"] = context
        self.mode = mode
        self.controller = Controller(Handler(), **kwargs, **server_kwargs)
        self.port = kwargs["port"]

    def url(self, user: str | None = None, password: str | None = None, sender: str = "certpilot@example.test") -> str:
        scheme = "smtps" if self.mode == "smtps" else "smtp"
        auth = f"{user}:{password}@" if user is not None else ""
        query = f"?from={sender}" + (f"&cafile={self.cafile}" if self.cafile else "")
        return f"{scheme}://{auth}127.0.0.1:{self.port}{query}"

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
