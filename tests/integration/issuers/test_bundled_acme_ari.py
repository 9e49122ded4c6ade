"""The bundled `acme` script against Pebble behind `tests.support.ari_proxy`, which adds
what Debian's Pebble 2.4 lacks: ACME Renewal Information (RFC 9773), certificate
profiles, and orders that stay `processing`.

- the CA's suggested window decides the renewal time (the renewal loop asks after each
  new revision and again at the CA's Retry-After); a window moved into the past renews
  at once with a new key, and the new order names the certificate it `replaces`;
- a server without `renewalInfo` leaves the profile's own renewal time;
- an order still `processing` when the call's wait runs out is `Pending` (polled after
  the CA's Retry-After), and a later poll completes the certificate;
- `acme_profile` reaches the server where it offers that profile, and is refused clearly
  where it does not."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from cryptography import x509

from certpilot.config import Settings
from certpilot.domain.model import Outcome
from certpilot.policy import renewal_time
from certpilot.reconciler.loop import Reconciler
from certpilot.services import issuance
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_attempts, list_revisions
from certpilot.services.profiles import get_profile
from certpilot.services.views import certificate_view
from certpilot.store.database import create_db_engine, upgrade
from tests.integration.issuers.test_bundled_acme import _profile, _request, named, pebble  # noqa: F401 (fixtures)
from tests.support.acme_servers import Pebble
from tests.support.ari_proxy import AriProxy

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def proxy_server(pebble: Pebble) -> Iterator[AriProxy]:  # noqa: F811 (the imported fixture)
    proxy = AriProxy.start(pebble)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(proxy_server: AriProxy) -> AriProxy:
    """The module's proxy with the test's defaults: renewalInfo offered, no window yet."""
    p = proxy_server
    p.offer_renewal_info, p.window, p.retry_after_s, p.explanation_url = True, None, 1, None
    p.profiles, p.hold_processing, p.held = {}, False, 0
    p.asked.clear()
    p.new_orders.clear()
    return p


@pytest.fixture
def fast_app(settings: Settings) -> Iterator[App]:
    """An app that asks the CA again after its 1-s Retry-After and polls after 1 s."""
    fast = settings.model_copy(update={"renewal_info_min_check_s": 1.0, "deferred_poll_min_s": 1.0})
    engine = create_db_engine(fast.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(fast) as application:
        yield application


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _leaf(app: App, name: str) -> x509.Certificate:
    current = get_certificate(app, name).status.revision
    (rev,) = [r for r in list_revisions(app, name) if r.revision == current]
    return x509.load_pem_x509_certificate(rev.leaf_pem.encode())


def _cert_id(cert: x509.Certificate) -> str:
    from acme.client import _renewal_info_path_component  # the library's own, as a second opinion

    return _renewal_info_path_component(cert)


def test_the_cas_window_decides_the_renewal_time_and_a_past_window_renews_with_a_new_key(
    fast_app: App, pebble: Pebble, proxy: AriProxy  # noqa: F811
) -> None:
    app = fast_app
    start, end = _now() + 10 * DAY, _now() + 11 * DAY
    proxy.window, proxy.explanation_url = (start, end), "https://ca.example.test/why"
    _profile(app, pebble, "ari", directory_url=proxy.directory_url, http_port=str(pebble.http_port))
    _request(app, "ari1", "ari", "ari1.example.test")
    loop = Reconciler(app)

    loop.run_once()  # the first revision
    loop.run_once()  # its renewal window asked for

    cert = get_certificate(app, "ari1")
    first = _leaf(app, "ari1")
    assert cert.status.revision == 1
    assert proxy.asked == [_cert_id(first)]
    assert cert.status.renew_at is not None and start - dt.timedelta(seconds=1) <= cert.status.renew_at <= end
    assert cert.status.not_before is not None and cert.status.not_after is not None
    profile_time = renewal_time(cert.status.not_before, cert.status.not_after, get_profile(app, "ari").renewal)
    assert not start <= profile_time <= end, "the profile's own rule would have given another time"
    info = certificate_view(cert)["status"]["renewal_info"]
    assert info["window_start"] and info["window_end"] and info["checked_at"] and info["error"] is None
    assert info["explanation_url"] == "https://ca.example.test/why"
    assert dt.datetime.fromisoformat(info["next_check_at"]) <= _now() + dt.timedelta(seconds=5), \
        "asked again after the CA's Retry-After (clamped to the test's 1 s)"

    proxy.window = (_now() - 2 * DAY, _now() - DAY)  # the CA wants it replaced now (e.g. to be revoked)
    time.sleep(1.2)
    loop.run_once()  # asks again, sees the past window, renews

    renewed = get_certificate(app, "ari1")
    assert renewed.status.revision == 2, renewed.status
    one, two = sorted(list_revisions(app, "ari1"), key=lambda r: r.revision)
    assert two.public_key_sha256 != one.public_key_sha256, "a new key"
    assert proxy.new_orders[-1].get("replaces") == _cert_id(first), proxy.new_orders[-1]
    assert list_attempts(app, "ari1")[0].kind == "renew"
    assert renewed.status.renewal_info is not None and renewed.status.renewal_info.window_start is None, \
        "the new revision's window is not known yet"


def test_a_server_without_renewal_info_leaves_the_profiles_renewal_time(
    fast_app: App, pebble: Pebble  # noqa: F811
) -> None:
    app = fast_app
    _profile(app, pebble, "plain", http_port=str(pebble.http_port))
    _request(app, "plain1", "plain", "plain1.example.test")
    loop = Reconciler(app)

    loop.run_once()
    loop.run_once()

    cert = get_certificate(app, "plain1")
    assert cert.status.revision == 1 and cert.status.not_before and cert.status.not_after
    assert cert.status.renew_at == renewal_time(cert.status.not_before, cert.status.not_after,
                                                get_profile(app, "plain").renewal)
    info = certificate_view(cert)["status"]["renewal_info"]
    assert info["checked_at"] and info["window_start"] is None and info["error"] is None
    assert dt.datetime.fromisoformat(info["next_check_at"]) >= _now() + dt.timedelta(hours=23), \
        "asked again in a day, in case the CA starts offering it"


def test_an_order_still_processing_is_pending_and_a_later_poll_completes_it(
    fast_app: App, pebble: Pebble, proxy: AriProxy  # noqa: F811
) -> None:
    app = fast_app
    proxy.hold_processing = True
    _profile(app, pebble, "slow", directory_url=proxy.directory_url, http_port=str(pebble.http_port), wait_s="5")
    _request(app, "slow1", "slow", "slow1.example.test")

    deferred = issuance.attempt(app, "slow1", actor="test:acme")

    assert deferred.outcome is Outcome.DEFERRED, deferred.error
    assert proxy.held >= 1
    assert deferred.next_poll_at is not None and deferred.next_poll_at <= _now() + dt.timedelta(seconds=5), \
        "polled after the order's Retry-After (1 s), not the script's 60-s default"
    assert get_certificate(app, "slow1").status.deferred_since is not None

    proxy.hold_processing = False
    time.sleep(1.1)
    polled = issuance.attempt(app, "slow1", actor="test:acme")

    assert issuance.is_success(polled), polled.error
    kinds = [a.kind for a in list_attempts(app, "slow1")]
    assert kinds == ["poll", "issue"], kinds
    assert len([o for o in proxy.new_orders if o.get("identifiers")]) == 1, "one submission"


def test_acme_profile_is_sent_where_offered_and_refused_clearly_where_not(
    app: App, pebble: Pebble, proxy: AriProxy  # noqa: F811
) -> None:
    proxy.profiles = {"shortlived": "https://ca.example.test/profiles#shortlived"}
    _profile(app, pebble, "short", directory_url=proxy.directory_url, http_port=str(pebble.http_port),
             acme_profile="shortlived")
    _profile(app, pebble, "unknown", directory_url=proxy.directory_url, http_port=str(pebble.http_port),
             acme_profile="tlsserver")
    _profile(app, pebble, "noprofiles", http_port=str(pebble.http_port), acme_profile="shortlived")
    for name, profile in (("p1", "short"), ("p2", "unknown"), ("p3", "noprofiles")):
        _request(app, name, profile, f"{name}.example.test")

    short = issuance.attempt(app, "p1", actor="test:acme")
    unknown = issuance.attempt(app, "p2", actor="test:acme")
    none = issuance.attempt(app, "p3", actor="test:acme")

    assert issuance.is_success(short), short.error
    assert [o.get("profile") for o in proxy.new_orders] == ["shortlived"], proxy.new_orders
    assert unknown.outcome is Outcome.FAILED
    assert unknown.error == ("the ACME server offers no certificate profile 'tlsserver' (profile parameter "
                             "'acme_profile'); it offers: shortlived"), unknown.error
    assert none.outcome is Outcome.FAILED
    assert (none.error or "").endswith("its directory lists no profiles"), none.error
