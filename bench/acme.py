"""Issuance through the bundled `acme` script against Pebble, next to the plain `acme`
library client in the same run.

Starts BIND 9 (`named`, the zone example.test with every name at 127.0.0.1) and Pebble
(real http-01 validation, PEBBLE_VA_NOSLEEP=1, no nonce rejection) on loopback, then
issues N certificates, one at a time, three ways:

- `library`: the `acme` library used as its documentation shows (one account, then per
  certificate new_order, answer http-01 from a local server, poll_and_finalize: the
  library's stock polling, which sleeps a second before each look);
- `certpilot`: `issuance.attempt` through the sandboxed runner and the bundled script
  (one warm script host; every attempt also stores the key, revision and events in SQLite);
- `certpilot-loop` (with --loop): the same certificates requested at once and left to
  one renewal loop with up to --in-flight calls of the profile in flight.

Usage: python -m bench acme [--count N] [--loop] [--in-flight K] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.acme_servers import Named, Pebble, tools_missing  # noqa: E402


def plain_library(pebble: Pebble, count: int, workdir: Path) -> float:
    """Certificates per second with the acme library's own polling."""
    import josepy as jose
    from acme import challenges, client, messages
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    bundle = workdir / "tls-ca.pem"
    bundle.write_text(pebble.tls_ca_pem)
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(bundle))
    acme = client.ClientV2(client.ClientV2.get_directory(pebble.directory_url, net), net)
    net.account = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    tokens: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = tokens.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.perf_counter()
        for i in range(count):
            cert_key = ec.generate_private_key(ec.SECP256R1())
            name = f"lib{i}.example.test"
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(cert_key, hashes.SHA256()))
            orderr = acme.new_order(csr.public_bytes(serialization.Encoding.PEM))
            for authzr in orderr.authorizations:
                challb = next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01))
                response, validation = challb.chall.response_and_validation(key)
                tokens[challb.chall.path] = validation
                acme.answer_challenge(challb, response)
            orderr = acme.poll_and_finalize(orderr, dt.datetime.now() + dt.timedelta(seconds=60))
            assert "BEGIN CERTIFICATE" in orderr.fullchain_pem
        return count / (time.perf_counter() - started)
    finally:
        server.shutdown()
        server.server_close()


def through_certpilot(pebble: Pebble, count: int, workdir: Path, loop: bool, in_flight: int) -> dict[str, float]:
    from certpilot.config import Settings
    from certpilot.domain.model import ProfileParam, make_subject
    from certpilot.issuers.bundled import bundled_source
    from certpilot.keys.sealing import create_master_key_file
    from certpilot.reconciler.loop import Reconciler
    from certpilot.services import issuance
    from certpilot.services.app import App
    from certpilot.services.certificates import list_revisions, request_certificate
    from certpilot.services.profiles import create_profile
    from certpilot.services.scripts import add_script
    from certpilot.store.database import create_db_engine, upgrade

    data = workdir / "data"
    data.mkdir()
    create_master_key_file(data / "master.key")
    settings = Settings(data_dir=data, reconcile_interval_s=1, insecure_test_password_hashing=True,
                        max_in_flight=max(in_flight, 1))
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    figures: dict[str, float] = {}
    with App(settings) as app:
        add_script(app, "acme", bundled_source("acme"), timeout_s=120, actor="bench")
        create_profile(app, "pebble", script="acme", actor="bench", concurrency=in_flight, params=[
            ProfileParam("directory_url", pebble.directory_url), ProfileParam("ca_bundle", pebble.tls_ca_pem),
            ProfileParam("http_port", str(pebble.http_port))])
        request_certificate(app, "warm", profile="pebble", subject=make_subject("warm.example.test"), actor="bench")
        assert issuance.is_success(issuance.attempt(app, "warm", actor="bench"))  # account made, host warm
        started = time.perf_counter()
        for i in range(count):
            name = f"cp{i}"
            request_certificate(app, name, profile="pebble", subject=make_subject(f"{name}.example.test"),
                                actor="bench")
            report = issuance.attempt(app, name, actor="bench")
            assert issuance.is_success(report), report.error
        figures["certpilot_per_s"] = count / (time.perf_counter() - started)
        if loop:
            # http-01 on one port: one call at a time can serve it, so the loop runs them in turn
            names = [f"loop{i}" for i in range(count)]
            started = time.perf_counter()
            for name in names:
                request_certificate(app, name, profile="pebble", subject=make_subject(f"{name}.example.test"),
                                    actor="bench")
            reconciler = Reconciler(app)
            thread = threading.Thread(target=reconciler.run_forever, daemon=True)
            thread.start()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not all(list_revisions(app, n) for n in names):
                time.sleep(0.05)
            figures["certpilot_loop_per_s"] = count / (time.perf_counter() - started)
            reconciler.stop()
            thread.join(timeout=30)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--loop", action="store_true", help="also through one renewal loop")
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--postgres-url")  # common to the scenarios; this one runs on SQLite
    args = parser.parse_args()
    reason = tools_missing()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    count = 3 if args.quick else args.count
    with tempfile.TemporaryDirectory(prefix="bench-acme-") as tmp:
        work = Path(tmp)
        named = Named.start(work / "named")
        pebble = Pebble.start(work / "pebble", named)
        try:
            library = plain_library(pebble, count, work)
            ours = through_certpilot(pebble, count, work, args.loop, args.in_flight)
        finally:
            pebble.stop()
            named.stop()
    figures = {"count": count, "library_stock_polling_per_s": library, **ours}
    for name, value in figures.items():
        print(f"{name:32} {value:.2f}" if isinstance(value, float) else f"{name:32} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
