"""certpilot bundled script `acme`: an RFC 8555 client on the `acme` library.

One profile is one ACME account, ever: the account key (and the account's URL per
directory) live in `context.state`, made on the first call. Each call places an
order for the CSR's names, answers one challenge per authorization, finalizes with
the CSR and returns the full chain. A CA that is still `processing` the order
when the call's wait runs out answers `Pending`; `certificate_poll` then fetches
the order again. The CA's own error text is what a failure says.

Where the directory offers `renewalInfo` (ACME Renewal Information, RFC 9773),
`certificate_renewal_info` answers the CA's suggested renewal window for a certificate
(the controller renews in it), and a renewal's order names the certificate it
`replaces`. `acme_profile` is refused unless the directory's `meta.profiles` offers it.

Profile parameters (args_dict):
    directory_url   the ACME server's directory URL (required)
    email           contact address for the account
    challenge       http-01 (default) or dns-01
    http_port       http-01: serve the challenge on this port (all addresses) during the call
    http_webroot    http-01: or write it under DIR/.well-known/acme-challenge/ (grant DIR)
    dns_server      dns-01: host:port of the primary name server taking RFC 2136 updates
    dns_zone        dns-01: the zone to update (default: the nearest SOA the server answers for)
    tsig_key_name, tsig_secret (sensitive), tsig_algorithm (default hmac-sha256)
    ca_bundle       path, or PEM text, of the CA to trust for the ACME server's TLS
    eab_kid, eab_hmac_key (sensitive)   external account binding
    acme_profile    the certificate profile to ask for, where the server offers profiles
    wait_s          how long one call waits for validation and issuance (default 40: within the
                    script's default 60-s timeout; give the script a longer --timeout for more)
"""

import base64
import datetime
import email.utils
import hashlib
import http.server
import json
import os
import tempfile
import threading
import time

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certpilot.issuer import DEFAULT_RENEWAL_INFO_RETRY_AFTER_S, Pending, RenewalWindow

ACCOUNT_KEY = "acme_account_key"
USER_AGENT = "certpilot-acme"


# --- account -------------------------------------------------------------------------


def _account_key(state):
    if ACCOUNT_KEY not in state:
        key = ec.generate_private_key(ec.SECP256R1())
        state[ACCOUNT_KEY] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode()
    return jose.JWKEC(key=serialization.load_pem_private_key(state[ACCOUNT_KEY].encode(), password=None))


def _verify(args_dict):
    bundle = (args_dict.get("ca_bundle") or "").strip()
    if not bundle:
        return True
    if bundle.startswith("-----BEGIN"):
        # beside the calls' own directories, in the host's, which lives as long as the cached client
        host_dir = os.path.dirname(os.path.abspath(tempfile.gettempdir()))
        path = os.path.join(host_dir, "acme-ca-" + hashlib.sha256(bundle.encode()).hexdigest()[:16] + ".pem")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(bundle + "\n")
        return path
    return bundle


# One client per directory, account key and trust in this warm script host: the TLS
# connection, the directory and the nonces serve the next call of the profile too.
_CLIENTS = {}


def _client(args_dict, state):
    url = args_dict.get("directory_url") or ""
    if not url:
        raise ValueError("profile parameter 'directory_url' (the ACME server's directory) is missing")
    key = _account_key(state)
    account_slot = "acme_account_url " + url
    cache_key = (url, state[ACCOUNT_KEY], args_dict.get("ca_bundle") or "", state.get(account_slot))
    if cache_key in _CLIENTS:
        return _CLIENTS[cache_key]
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=_verify(args_dict), user_agent=USER_AGENT)
    directory = client.ClientV2.get_directory(url, net)
    acme = client.ClientV2(directory, net)
    if account_slot in state:
        net.account = messages.RegistrationResource(uri=state[account_slot], body=messages.Registration())
        _CLIENTS.clear()  # one profile per host: keep only the latest
        _CLIENTS[cache_key] = (acme, key)
        return acme, key
    email = args_dict.get("email") or None
    eab = None
    if args_dict.get("eab_kid"):
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=args_dict["eab_kid"],
            hmac_key=args_dict.get("eab_hmac_key") or "", directory=directory)
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True,
                                                      external_account_binding=eab)
    try:
        regr = acme.new_account(registration)
    except errors.ConflictError as exc:  # the key has an account already: use it
        regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    net.account = regr
    state[account_slot] = regr.uri
    print("ACME account", regr.uri)
    return acme, key


# --- challenges ----------------------------------------------------------------------


class _Tokens(http.server.BaseHTTPRequestHandler):
    tokens = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.tokens.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        print("http-01:", self.address_string(), format % args)


class _Http01:
    def __init__(self, args_dict):
        self.port = int(args_dict["http_port"]) if args_dict.get("http_port") else None
        self.webroot = args_dict.get("http_webroot") or None
        if self.port is None and self.webroot is None:
            raise ValueError("http-01 needs profile parameter 'http_port' or 'http_webroot'")
        self.server = None
        self.written = []
        self.tokens = {}

    def add(self, name, chall, key):
        response, validation = chall.response_and_validation(key)
        path = chall.path  # /.well-known/acme-challenge/TOKEN
        if self.webroot:
            target = os.path.join(self.webroot, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(validation)
            self.written.append(target)
        else:
            self.tokens[path] = validation
        return response

    def start(self):
        if self.port is not None and self.tokens:
            handler = type("Tokens", (_Tokens,), {"tokens": dict(self.tokens)})
            http.server.ThreadingHTTPServer.allow_reuse_address = True
            self.server = http.server.ThreadingHTTPServer(("", self.port), handler)
            # a short poll interval: shutdown() waits for it, once per call
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def clean_up(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for path in self.written:
            try:
                os.unlink(path)
            except OSError:
                pass


class _Dns01:
    def __init__(self, args_dict):
        import dns.name
        import dns.tsigkeyring

        server = args_dict.get("dns_server") or ""
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("dns-01 needs profile parameter 'dns_server' as host:port")
        self.host, self.port = host.strip("[]"), int(port)
        self.keyring, self.algorithm = None, None
        if args_dict.get("tsig_key_name"):
            self.keyring = dns.tsigkeyring.from_text({args_dict["tsig_key_name"]: args_dict.get("tsig_secret") or ""})
            self.algorithm = dns.name.from_text(args_dict.get("tsig_algorithm") or "hmac-sha256")
        self.zone = args_dict.get("dns_zone") or None
        self.added = []

    def _zone_of(self, name):
        import dns.message
        import dns.name
        import dns.query
        import dns.rdatatype

        if self.zone:
            return dns.name.from_text(self.zone)
        candidate = dns.name.from_text(name)
        while len(candidate) > 1:
            answer = dns.query.udp(dns.message.make_query(candidate, dns.rdatatype.SOA), self.host, port=self.port,
                                   timeout=5)
            if any(r.rdtype == dns.rdatatype.SOA and r.name == candidate for r in answer.answer):
                return candidate
            candidate = candidate.parent()
        raise ValueError(f"no zone for {name} on {self.host}:{self.port}: set profile parameter 'dns_zone'")

    def _update(self, zone, action, record, value):
        import dns.query
        import dns.rcode
        import dns.update

        update = dns.update.UpdateMessage(zone, keyring=self.keyring, keyalgorithm=self.algorithm)
        getattr(update, action)(record, *((60, "TXT", f'"{value}"') if action == "add" else ("TXT", f'"{value}"')))
        try:
            response = dns.query.tcp(update, self.host, port=self.port, timeout=10)
        except Exception as exc:  # BADSIG, BADKEY, a timeout: the server's answer, said plainly
            raise RuntimeError(f"the DNS update ({action} {record} TXT) to {self.host}:{self.port} failed: "
                               f"{exc or type(exc).__name__}") from None
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"the DNS update ({action} {record} TXT) was refused by {self.host}:{self.port}: "
                               f"{dns.rcode.to_text(response.rcode())}")

    def add(self, name, chall, key):
        import dns.name

        response, validation = chall.response_and_validation(key)
        record = dns.name.from_text(chall.validation_domain_name(name.removeprefix("*.")))
        zone = self._zone_of(name.removeprefix("*."))
        self._update(zone, "add", record, validation)
        self.added.append((zone, record, validation))
        print("dns-01: added", record.to_text(), "TXT")
        return response

    def start(self):
        pass

    def clean_up(self):
        for zone, record, validation in self.added:
            try:
                self._update(zone, "delete", record, validation)
                print("dns-01: removed", record.to_text(), "TXT")
            except Exception as exc:  # a record left behind is said, not fatal
                print("dns-01: could not remove", record.to_text(), "TXT:", exc)


# --- orders --------------------------------------------------------------------------


def _problem(exc):
    """The CA's own words for a failed order."""
    if isinstance(exc, errors.ValidationError):
        words = []
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    words.append(f"{authzr.body.identifier.value}: {chall.error.detail or chall.error.typ}")
        return "ACME validation failed: " + "; ".join(words)
    if isinstance(exc, messages.Error):
        return f"ACME server error: {exc.detail or exc.typ} ({exc.typ})"
    if isinstance(exc, errors.IssuanceError):
        return f"ACME order failed: {exc.error.detail or exc.error.typ}"
    return f"ACME: {exc}"


def _deadline(args_dict):
    return datetime.datetime.now() + datetime.timedelta(seconds=int(args_dict.get("wait_s") or 40))


FIRST_POLL_S = 0.01  # the library's polls sleep a whole second first: a fast CA answers in milliseconds
LONGEST_POLL_S = 2.0


def _sleep(delay, deadline):
    if datetime.datetime.now() + datetime.timedelta(seconds=delay) > deadline:
        raise errors.TimeoutError()
    time.sleep(delay)
    return min(delay * 2, LONGEST_POLL_S)


def _poll_authorizations(acme, orderr, deadline):
    """Wait for each authorization to leave `pending`, polling soon and then less often;
    raises `errors.ValidationError` with the failed ones (they carry the CA's words)."""
    done = []
    for url in orderr.body.authorizations:
        delay = FIRST_POLL_S
        while True:
            authzr = acme._authzr_from_response(acme._post_as_get(url), uri=url)
            if authzr.body.status != messages.STATUS_PENDING:
                done.append(authzr)
                break
            delay = _sleep(delay, deadline)
    failed = [a for a in done if a.body.status != messages.STATUS_VALID]
    if failed:
        raise errors.ValidationError(failed)
    return orderr.update(authorizations=done)


def _finish(acme, orderr, deadline, finalize):
    """Finalize (when asked) and wait for the certificate; the full chain as PEM."""
    if finalize:
        try:
            orderr = acme.begin_finalization(orderr)
        except messages.Error as exc:
            if exc.code != "orderNotReady":
                raise
    delay = FIRST_POLL_S
    response = None
    while True:
        body = orderr.body
        if body.status == messages.STATUS_INVALID:
            if body.error is not None:
                raise errors.IssuanceError(body.error)
            raise errors.Error("the order is invalid; the server gave no reason")
        if body.status == messages.STATUS_VALID and body.certificate is not None:
            return acme._post_as_get(body.certificate).text
        if body.status == messages.STATUS_READY:  # validated meanwhile (orderNotReady before)
            orderr = acme.begin_finalization(orderr)
        try:
            delay = _sleep(delay, deadline)
        except errors.TimeoutError:
            raise _StillProcessing(orderr, _retry_after_s(response) if response is not None else None) from None
        response = acme._post_as_get(orderr.uri)
        orderr = orderr.update(body=messages.Order.from_json(response.json()))


class _StillProcessing(errors.TimeoutError):
    """The call's wait ran out while the CA processes the order; `retry_after_s` its wish."""

    def __init__(self, orderr, retry_after_s):
        super().__init__()
        self.orderr, self.retry_after_s = orderr, retry_after_s


DEFAULT_PENDING_S = 60  # a processing order without Retry-After is fetched again after this


def _pending(orderr, retry_after_s=None):
    print("the ACME server is still processing order", orderr.uri)
    raise Pending(retry_after_s=retry_after_s or DEFAULT_PENDING_S,
                  cookie=json.dumps({"order": orderr.uri, "csr": orderr.csr_pem.decode()}))


def _retry_after_s(response):
    """The response's Retry-After in seconds (delay or HTTP date), or None."""
    value = (response.headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, int((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()))


def _check_profile(acme, wanted):
    """`acme_profile` only where the directory's meta.profiles offers it."""
    if not wanted:
        return
    offered = sorted(acme.directory.meta.profiles or {})
    if wanted not in offered:
        raise RuntimeError(f"the ACME server offers no certificate profile {wanted!r} (profile parameter "
                           f"'acme_profile'); " + (f"it offers: {', '.join(offered)}" if offered
                                                   else "its directory lists no profiles"))


# --- renewal information (RFC 9773) --------------------------------------------------


def _b64url(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def renewal_certificate_id(cert):
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial's DER content octets)."""
    aki = cert.extensions.get_extension_for_oid(x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    if not aki.key_identifier:
        raise ValueError("the certificate's Authority Key Identifier has no keyIdentifier")
    serial = cert.serial_number
    # a DER INTEGER: big-endian two's complement, a leading zero byte when the high bit is set
    serial_der = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return _b64url(aki.key_identifier) + "." + _b64url(serial_der)


def _renewal_info_url(acme):
    try:
        return acme.directory["renewalInfo"]
    except KeyError:
        return None


class _NewOrder(messages.NewOrder):
    replaces: str | None = jose.field("replaces", omitempty=True)  # RFC 9773 §5


def _new_order(acme, csr_pem, profile, replaces):
    """The library's new_order, with `replaces` (RFC 9773 §5) when given."""
    if not replaces:
        return acme.new_order(csr_pem, profile=profile)
    csr = x509.load_pem_x509_csr(csr_pem)
    dns_names, ip_addrs = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in dns_names]
    identifiers += [messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip)) for ip in ip_addrs]
    order = _NewOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
    response = acme._post(acme.directory["newOrder"], order)
    body = messages.Order.from_json(response.json())
    authorizations = [acme._authzr_from_response(acme._post_as_get(url), uri=url) for url in body.authorizations]
    return messages.OrderResource(body=body, uri=response.headers.get("Location"), authorizations=authorizations,
                                  csr_pem=csr_pem)


def _replaces(acme, previous_pem):
    """The certificate this order replaces, where the server offers ARI; else None."""
    if not previous_pem or _renewal_info_url(acme) is None:
        return None
    try:
        return renewal_certificate_id(x509.load_pem_x509_certificate(previous_pem.encode()))
    except ValueError:
        return None


def certificate_renewal_info(cert_pem, args_dict, context):
    """The CA's suggested renewal window for `cert_pem` (RFC 9773), or None where the
    directory offers no `renewalInfo`."""
    acme, _ = _client(args_dict, context.state)
    base = _renewal_info_url(acme)
    if base is None:
        return None
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    url = base.rstrip("/") + "/" + renewal_certificate_id(cert)
    try:
        response = acme.net.get(url, content_type="application/json")
        info = messages.RenewalInfo.from_json(response.json())
        explanation = response.json().get("explanationURL")
    except (errors.Error, messages.Error, ValueError, jose.DeserializationError) as exc:
        raise RuntimeError(f"ACME renewal information from {url}: {exc}") from None
    window = info.suggested_window
    print("ACME renewal window", window.start.isoformat(), "to", window.end.isoformat(), "from", url)
    return RenewalWindow(start=window.start, end=window.end,
                         retry_after_s=_retry_after_s(response) or DEFAULT_RENEWAL_INFO_RETRY_AFTER_S,
                         explanation_url=explanation if isinstance(explanation, str) else None)


def _new_order_once(acme, csr_pem, profile, replaces):
    """A new order; one the server refuses to let replace the old certificate (replaced
    already) is placed again without `replaces`."""
    try:
        return _new_order(acme, csr_pem, profile, replaces)
    except messages.Error as exc:
        if not replaces or exc.code != "alreadyReplaced":
            raise
        print("ACME: the previous certificate was replaced already; ordering without 'replaces'")
        return _new_order(acme, csr_pem, profile, None)


def certificate_request(csr, common_name, args_dict, context):
    acme, key = _client(args_dict, context.state)
    kind = (args_dict.get("challenge") or "http-01").strip()
    if kind not in ("http-01", "dns-01"):
        raise ValueError(f"challenge {kind!r} is not supported: use http-01 or dns-01")
    solver = _Http01(args_dict) if kind == "http-01" else _Dns01(args_dict)
    wanted = challenges.HTTP01 if kind == "http-01" else challenges.DNS01
    _check_profile(acme, args_dict.get("acme_profile"))
    try:
        orderr = _new_order_once(acme, csr.encode(), args_dict.get("acme_profile") or None,
                                 _replaces(acme, context.previous_certificate))
        answers = []
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # reused: validated before
            name = ("*." if authzr.body.wildcard else "") + authzr.body.identifier.value
            challb = next((c for c in authzr.body.challenges if isinstance(c.chall, wanted)), None)
            if challb is None:
                raise RuntimeError(f"the ACME server offers no {kind} challenge for {name}")
            answers.append((challb, solver.add(authzr.body.identifier.value if kind == "http-01" else name,
                                               challb.chall, key)))
        solver.start()
        for challb, response in answers:
            acme.answer_challenge(challb, response)
        deadline = _deadline(args_dict)
        orderr = _poll_authorizations(acme, orderr, deadline)
        try:
            return _finish(acme, orderr, deadline, finalize=True)
        except _StillProcessing as still:
            _pending(still.orderr, still.retry_after_s)  # validated and finalized: the CA is still processing
    except (errors.Error, messages.Error) as exc:
        raise RuntimeError(_problem(exc)) from None
    finally:
        solver.clean_up()


def certificate_poll(cookie, args_dict, context):
    acme, _ = _client(args_dict, context.state)
    held = json.loads(cookie)
    orderr = messages.OrderResource(uri=held["order"], csr_pem=held["csr"].encode(),
                                    body=messages.Order.from_json(acme._post_as_get(held["order"]).json()))
    try:
        return _finish(acme, orderr, _deadline(args_dict), finalize=False)
    except _StillProcessing as still:
        _pending(still.orderr, still.retry_after_s)
    except (errors.Error, messages.Error) as exc:
        raise RuntimeError(_problem(exc)) from None
