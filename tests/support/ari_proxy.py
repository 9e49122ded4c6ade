"""A small HTTPS proxy on loopback in front of Pebble, adding what Debian's Pebble 2.4
lacks, under the test's control:

- ACME Renewal Information (RFC 9773): the directory gains `renewalInfo`, and
  `GET {renewalInfo}/{certID}` answers `window` (start, end) with `Retry-After:
  retry_after_s`; the certIDs asked for are kept in `asked`;
- certificate profiles: with `profiles` set, the directory's `meta.profiles` lists them;
- every newOrder request's payload (decoded from its JWS, not verified) is kept in
  `new_orders`, so a test sees the `profile` and `replaces` the client sent;
- with `hold_processing` set, an order Pebble reports `valid` (or `processing`) is
  answered as `processing`, without its certificate URL, with `Retry-After: 1`.

Everything else is forwarded unchanged with the client's own `Host` header: Pebble
builds its URLs from it, so the client keeps talking to the proxy, and the JWS `url`
the client signed is the one Pebble checks. The proxy serves Pebble's own TLS
certificate (for 127.0.0.1), so the same `ca_bundle` trusts both.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.acme_servers import Pebble, free_port

RENEWAL_INFO_PATH = "/renewal-info"
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


def rfc3339(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class AriProxy:
    pebble: Pebble
    port: int
    offer_renewal_info: bool = True
    window: tuple[dt.datetime, dt.datetime] | None = None
    retry_after_s: int = 1
    explanation_url: str | None = None
    profiles: dict[str, str] = field(default_factory=dict)
    hold_processing: bool = False
    asked: list[str] = field(default_factory=list)
    new_orders: list[dict[str, Any]] = field(default_factory=list)
    held: int = 0  # order answers rewritten to processing
    _server: http.server.ThreadingHTTPServer | None = None
    _upstream: httpx.Client | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def renewal_info_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{RENEWAL_INFO_PATH}"

    @classmethod
    def start(cls, pebble: Pebble, **options: Any) -> AriProxy:
        proxy = cls(pebble, free_port(), **options)
        proxy._upstream = httpx.Client(
            base_url=f"https://127.0.0.1:{pebble.port}", timeout=30,
            verify=ssl.create_default_context(cadata=pebble.tls_ca_pem))
        handler = type("Handler", (_Handler,), {"proxy": proxy})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", proxy.port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pebble.directory / "tls-cert.pem", pebble.directory / "tls-key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        proxy._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return proxy

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._upstream is not None:
            self._upstream.close()

    # --- what the handler asks ----------------------------------------------------

    def directory(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.offer_renewal_info:
            body["renewalInfo"] = self.renewal_info_url
        if self.profiles:
            body.setdefault("meta", {})["profiles"] = dict(self.profiles)
        return body

    def renewal_info(self, cert_id: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.asked.append(cert_id)
        if self.window is None:
            return 404, {}, {"type": "urn:ietf:params:acme:error:malformed", "detail": "no such certificate"}
        start, end = self.window
        body: dict[str, Any] = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
        if self.explanation_url:
            body["explanationURL"] = self.explanation_url
        return 200, {"Retry-After": str(self.retry_after_s)}, body

    def order(self, body: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        if self.hold_processing and body.get("status") in ("valid", "processing"):
            with self._lock:
                self.held += 1
            body = {k: v for k, v in body.items() if k != "certificate"} | {"status": "processing"}
            return {"Retry-After": "1"}, body
        return {}, body

    def note_new_order(self, jws: dict[str, Any]) -> None:
        payload = jws.get("payload", "")
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) or b"{}")
        with self._lock:
            self.new_orders.append(decoded)


class _Handler(http.server.BaseHTTPRequestHandler):
    proxy: AriProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        if self.path.startswith(RENEWAL_INFO_PATH + "/"):
            status, headers, body = self.proxy.renewal_info(self.path[len(RENEWAL_INFO_PATH) + 1:])
            content_type = "application/json" if status == 200 else "application/problem+json"
            self._answer(status, {"Content-Type": content_type, **headers}, json.dumps(body).encode())
            return
        self._forward()

    def do_HEAD(self) -> None:  # noqa: N802
        self._forward()

    def do_POST(self) -> None:  # noqa: N802
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS | {"accept-encoding"}}
        if self.command == "POST" and self.path.startswith("/order-plz"):
            self.proxy.note_new_order(json.loads(data))
        assert self.proxy._upstream is not None
        upstream = self.proxy._upstream.request(self.command, self.path, content=data, headers=headers)
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        body = upstream.content
        if upstream.headers.get("content-type", "").startswith("application/json") and body:
            parsed = json.loads(body)
            if self.path == "/dir":
                parsed = self.proxy.directory(parsed)
            elif isinstance(parsed, dict) and "finalize" in parsed and "status" in parsed:
                extra, parsed = self.proxy.order(parsed)
                out_headers.update(extra)
            body = json.dumps(parsed).encode()
        self._answer(upstream.status_code, out_headers, body)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
