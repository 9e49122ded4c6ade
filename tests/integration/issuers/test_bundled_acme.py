"""The bundled `acme` script against real servers on loopback: Debian's Pebble (real
validation) with BIND 9 as its resolver. http-01 served by the script itself, dns-01 with
a wildcard through RFC 2136 updates signed with TSIG (and cleaned up), a renewal with a
new key on the same account, one account across certificates, EAB, and failures reported
in the CA's (or the DNS server's) own words with no TSIG secret anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.domain.model import EventKind, Outcome, ProfileParam, make_subject
from certpilot.issuers.bundled import bundled_source
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import (
    certificate_events,
    get_certificate,
    list_attempts,
    list_revisions,
    request_certificate,
    request_renewal,
)
from certpilot.services.profiles import create_profile, script_state_keys
from certpilot.services.scripts import add_script, list_scripts
from certpilot.store import script_state
from tests.conftest import missing
from tests.support.acme_servers import TSIG_NAME, Named, Pebble, tools_missing
from tests.support.script_access import scripts_directory

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ACTOR = "test:acme"


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    reason = tools_missing()
    if reason:
        missing(reason)
    server = Named.start(tmp_path_factory.mktemp("named"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, named: Named) -> Iterator[Pebble]:
    server = Pebble.start(tmp_path_factory.mktemp("pebble"), named)
    yield server
    server.stop()


def _profile(app: App, pebble: Pebble, name: str, allow_write: str | None = None, **params: str) -> None:
    if "acme" not in {s.name for s in list_scripts(app)}:
        add_script(app, "acme", bundled_source("acme"), timeout_s=120, actor=ACTOR)
    sensitive = {"tsig_secret", "eab_hmac_key"}
    base = {"directory_url": pebble.directory_url, "ca_bundle": pebble.tls_ca_pem, "email": "ops@example.test"}
    create_profile(app, name, script="acme", actor=ACTOR, allow_write=[allow_write] if allow_write else [],
                   params=[ProfileParam(k, v, sensitive=k in sensitive) for k, v in {**base, **params}.items()])


def _request(app: App, name: str, profile: str, cn: str, *sans: str) -> None:
    request_certificate(app, name, profile=profile, subject=make_subject(cn), subject_alt_names=list(sans),
                        actor=ACTOR)


def _state(app: App, profile: str) -> dict[str, str]:
    with app.db.read() as session:
        return script_state.load(session, profile, app.sealer)


def test_http01_issues_renews_with_a_new_key_and_keeps_one_account(app: App, pebble: Pebble) -> None:
    _profile(app, pebble, "public", http_port=str(pebble.http_port))
    _request(app, "web1", "public", "web1.example.test", "DNS:www.web1.example.test")

    report = issuance.attempt(app, "web1", actor=ACTOR)

    assert issuance.is_success(report), report.error
    state = _state(app, "public")
    account_key, account_url = state["acme_account_key"], state[f"acme_account_url {pebble.directory_url}"]
    assert script_state_keys(app, "public") == sorted(state)

    _request(app, "web2", "public", "web2.example.test")
    assert issuance.is_success(issuance.attempt(app, "web2", actor=ACTOR))
    request_renewal(app, "web1", actor=ACTOR)
    assert issuance.is_success(issuance.attempt(app, "web1", actor=ACTOR))

    first, second = sorted(list_revisions(app, "web1"), key=lambda r: r.revision)
    assert second.public_key_sha256 != first.public_key_sha256, "the renewal has a new key"
    assert second.chain_pem.count("BEGIN CERTIFICATE") >= 1, "Pebble's chain is kept"
    later = _state(app, "public")
    assert (later["acme_account_key"], later[f"acme_account_url {pebble.directory_url}"]) == (account_key,
                                                                                              account_url)
    assert "acme_account_key" not in (list_attempts(app, "web1")[0].output or "")


def test_dns01_wildcard_through_rfc2136_with_tsig_and_the_records_are_removed(
    app: App, pebble: Pebble, named: Named
) -> None:
    _profile(app, pebble, "dns", challenge="dns-01", dns_server=f"127.0.0.1:{named.port}",
             tsig_key_name=TSIG_NAME, tsig_secret=named.tsig_secret)
    _request(app, "wild", "dns", "wild.example.test", "DNS:*.wild.example.test")

    report = issuance.attempt(app, "wild", actor=ACTOR)

    assert issuance.is_success(report), report.error
    (revision,) = list_revisions(app, "wild")
    assert "*.wild.example.test" in str(get_certificate(app, "wild").spec.subject_alt_names)
    assert revision.leaf_pem
    assert named.txt("_acme-challenge.wild.example.test") == [], "the TXT records were cleaned up"
    output = list_attempts(app, "wild")[0].output or ""
    assert "dns-01: added _acme-challenge.wild.example.test" in output and "dns-01: removed" in output
    assert named.tsig_secret not in output


def test_failures_carry_the_servers_words_and_never_the_tsig_secret(app: App, pebble: Pebble, named: Named) -> None:
    wrong_secret = "d3JvbmcgdHNpZyBzZWNyZXQgd3JvbmcgdHNpZyBzZWNyZXQ="
    with scripts_directory() as webroot:
        # http-01 through a webroot that no web server serves: Pebble's validation fails
        _profile(app, pebble, "deaf", http_webroot=str(webroot), wait_s="30", allow_write=str(webroot))
        _profile(app, pebble, "badkey", challenge="dns-01", dns_server=f"127.0.0.1:{named.port}",
                 tsig_key_name=TSIG_NAME, tsig_secret=wrong_secret)
        _request(app, "deaf1", "deaf", "deaf1.example.test")
        _request(app, "bad1", "badkey", "bad1.example.test")

        deaf = issuance.attempt(app, "deaf1", actor=ACTOR)
        bad = issuance.attempt(app, "bad1", actor=ACTOR)
        assert list(webroot.rglob("*")) == [webroot / ".well-known", webroot / ".well-known" / "acme-challenge"], \
            "the token file was removed"

    assert deaf.outcome is Outcome.FAILED
    assert (deaf.error or "").startswith("ACME validation failed: deaf1.example.test:"), deaf.error
    assert "connection refused" in (deaf.error or "").lower()
    assert get_certificate(app, "deaf1").status.last_error == deaf.error
    assert bad.outcome is Outcome.FAILED
    assert (bad.error or "").startswith("the DNS update (add _acme-challenge.bad1.example.test. TXT)"), bad.error
    assert "signature" in (bad.error or "")
    everything = " ".join([str(a.error) + str(a.output) for n in ("bad1", "deaf1") for a in list_attempts(app, n)]
                          + [str(e.details) for n in ("bad1", "deaf1") for e in certificate_events(app, n)])
    assert wrong_secret not in everything and named.tsig_secret not in everything
    assert any(e.kind == EventKind.CERT_ISSUE_FAILED.value for e in certificate_events(app, "bad1"))


@pytest.fixture(scope="module")
def pebble_eab(tmp_path_factory: pytest.TempPathFactory, named: Named) -> Iterator[Pebble]:
    server = Pebble.start(tmp_path_factory.mktemp("pebble-eab"), named, eab=True)
    yield server
    server.stop()


def test_external_account_binding(app: App, pebble_eab: Pebble) -> None:
    ((kid, hmac_key),) = pebble_eab.eab_keys.items()
    _profile(app, pebble_eab, "bound", http_port=str(pebble_eab.http_port), eab_kid=kid, eab_hmac_key=hmac_key)
    _profile(app, pebble_eab, "unbound", http_port=str(pebble_eab.http_port))
    _request(app, "eab1", "bound", "eab1.example.test")
    _request(app, "eab2", "unbound", "eab2.example.test")

    bound = issuance.attempt(app, "eab1", actor=ACTOR)
    unbound = issuance.attempt(app, "eab2", actor=ACTOR)

    assert issuance.is_success(bound), bound.error
    assert unbound.outcome is Outcome.FAILED
    assert "externalAccountRequired" in (unbound.error or ""), unbound.error
    everything = " ".join(str(a.output) + str(a.error) for n in ("eab1", "eab2") for a in list_attempts(app, n))
    assert hmac_key not in everything
