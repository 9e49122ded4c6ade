"""What goes wrong with an HSM, and how certpilot says so: a module path that does not
load, a token label that is not there, a wrong PIN, a full token, a key type the token
or certpilot does not offer. Each is a `KeyBackendError` (or `InvalidInput` at request
time) with a message that says what to fix; during issuance each is a failed attempt
(outcome `failed`, the message in the attempt and in the certificate's last_error), and
nothing half-made is left in the token (its objects counted before and after).

Runs on SQLite and PostgreSQL.

"Token full" cannot be provoked truthfully with SoftHSM: on a full file system (tried
on a 40 KiB tmpfs) it answers CKR_FUNCTION_FAILED, never CKR_DEVICE_MEMORY. So the
mapping of `DeviceMemory` is tested on an instance, and issuance on a token session
that makes the public half of the pair and then raises `DeviceMemory`.
"""

from __future__ import annotations

from typing import Any

import pytest

from certpilot.domain.errors import InvalidInput, KeyBackendError, NotFound
from certpilot.domain.model import KeySpec, Outcome, make_subject
from certpilot.keys import pkcs11_backend
from certpilot.keys.pkcs11_backend import TokenRef
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import get_certificate, list_attempts, request_certificate
from certpilot.services.hsm import check_group
from certpilot.services.issuance import attempt
from certpilot.services.profiles import create_profile
from tests.integration.keys.hsm_support import (
    ACTOR,
    MODULE,
    PIN,
    SCRIPT,
    TOKEN,
    SoftHsm,
    add_hsm_group,
    keys_of,
    local_ca_params,
    object_count,
    request_hsm,
    token_objects,
)


def assert_failed_attempt(app: App, name: str, *message_parts: str) -> str:
    """One attempt of `name`, failed, whose error (and the certificate's last_error) says
    that the key could not be made, and names every one of `message_parts`."""
    report = attempt(app, name, actor=ACTOR)
    assert report.outcome is Outcome.FAILED, f"{name}: {report.outcome.value} {report.error}"
    assert report.revision is None
    (recorded,) = list_attempts(app, name)
    assert recorded.outcome is Outcome.FAILED and recorded.finished_at is not None
    status = get_certificate(app, name).status
    assert status.revision is None and status.failures == 1
    assert keys_of(app, name) == [], "a key row was stored for a key that was never made"
    for error in (report.error, recorded.error, status.last_error):
        assert error is not None and error.startswith("key generation failed: "), error
        for part in message_parts:
            assert part in error, f"{part!r} is not in {error!r}"
    return report.error or ""


def test_module_path_that_does_not_load(hsm_app: App, softhsm: SoftHsm) -> None:
    before = object_count(softhsm.ref)
    add_hsm_group(hsm_app, "nomodule", module="/nonexistent.so")
    with pytest.raises(KeyBackendError, match="cannot load the PKCS#11 module /nonexistent.so"):
        check_group(hsm_app, "nomodule")
    request_hsm(hsm_app, "web1", group="nomodule")
    assert_failed_attempt(hsm_app, "web1", "cannot load the PKCS#11 module /nonexistent.so")
    assert object_count(softhsm.ref) == before


def test_token_label_that_is_not_there(hsm_app: App, softhsm: SoftHsm) -> None:
    before = object_count(softhsm.ref)
    add_hsm_group(hsm_app, "nolabel", token="no-such-token")
    with pytest.raises(KeyBackendError) as caught:
        check_group(hsm_app, "nolabel")
    assert str(caught.value) == f"no token labelled 'no-such-token' in {MODULE}"
    request_hsm(hsm_app, "web1", group="nolabel")
    assert_failed_attempt(hsm_app, "web1", "no token labelled 'no-such-token'", MODULE)
    assert object_count(softhsm.ref) == before


def test_wrong_pin(hsm_app: App, softhsm: SoftHsm) -> None:
    before = object_count(softhsm.ref)
    pkcs11_backend.close_sessions()  # nobody logged in: the wrong PIN meets the token
    add_hsm_group(hsm_app, "wrongpin", pin="0000")
    with pytest.raises(KeyBackendError) as caught:
        check_group(hsm_app, "wrongpin")
    assert str(caught.value) == f"the PIN of token {TOKEN!r} is wrong"
    request_hsm(hsm_app, "web1", group="wrongpin")
    assert_failed_attempt(hsm_app, "web1", f"the PIN of token {TOKEN!r} is wrong")
    assert object_count(softhsm.ref) == before


def test_wrong_pin_while_another_group_on_the_token_is_logged_in(hsm_app: App, softhsm: SoftHsm) -> None:
    """A worker that already uses the token through one group (right PIN) must still say
    that another group's PIN is wrong, not answer with a bare PKCS#11 return code."""
    before = object_count(softhsm.ref)  # this process is now logged in through group hsm1
    add_hsm_group(hsm_app, "wrongpin", pin="0000")
    with pytest.raises(KeyBackendError) as caught:
        check_group(hsm_app, "wrongpin")
    message = str(caught.value)
    assert "PIN" in message and TOKEN in message and "UserAlreadyLoggedIn" not in message, message
    request_hsm(hsm_app, "web1", group="wrongpin")
    error = assert_failed_attempt(hsm_app, "web1", "PIN", TOKEN)
    assert "UserAlreadyLoggedIn" not in error
    assert object_count(softhsm.ref) == before


def test_token_full_message() -> None:
    from pkcs11.exceptions import DeviceMemory, HostMemory

    ref = TokenRef(MODULE, TOKEN, PIN)
    for exc in (DeviceMemory(), HostMemory()):
        explained = pkcs11_backend._explain(exc, ref)
        assert isinstance(explained, KeyBackendError)
        assert str(explained) == f"token {TOKEN!r} is full: no room for another key"


class _FullTokenSession:
    """The real session, except that generating a key pair stores the public half and then
    fails with CKR_DEVICE_MEMORY, as a token that runs out of room half-way would."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def generate_keypair(self, *args: Any, **kwargs: Any) -> Any:
        from pkcs11.exceptions import DeviceMemory

        self.calls += 1
        _public, private = self._real.generate_keypair(*args, **kwargs)
        private.destroy()
        raise DeviceMemory()


def test_token_full_during_issuance(hsm_app: App, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    before = object_count(softhsm.ref)
    token = pkcs11_backend._token(softhsm.ref)  # the session issuance will use (same module, label, PIN)
    full = _FullTokenSession(token.session)
    monkeypatch.setattr(token, "session", full)
    request_hsm(hsm_app, "web1", "rsa:2048")
    assert_failed_attempt(hsm_app, "web1", f"token {TOKEN!r} is full: no room for another key")
    assert full.calls == 1
    monkeypatch.undo()
    assert object_count(softhsm.ref) == before, token_objects(softhsm.ref)


def test_ec_p521_is_refused_at_request_time(hsm_app: App, softhsm: SoftHsm) -> None:
    before = object_count(softhsm.ref)
    with pytest.raises(InvalidInput) as caught:
        request_hsm(hsm_app, "web1", "ec:p521")
    assert "ec:p521" in str(caught.value) and caught.value.field == "key"
    with pytest.raises(NotFound):
        get_certificate(hsm_app, "web1")
    assert object_count(softhsm.ref) == before


def test_ec_p521_from_the_profile_default_is_refused_at_request_time(
    hsm_app: App, softhsm: SoftHsm, test_ca: LocalCA
) -> None:
    """No --key given: the profile's default key (ec:p521) is what would be made in the HSM."""
    create_profile(hsm_app, "p521", script=SCRIPT, params=local_ca_params(test_ca),
                   default_key=KeySpec.parse("ec:p521"), actor=ACTOR)
    before = object_count(softhsm.ref)
    with pytest.raises(InvalidInput) as caught:
        request_certificate(hsm_app, "web1", profile="p521", subject=make_subject("web1.example.test"),
                            hsm_group="hsm1", actor=ACTOR)
    assert "ec:p521" in str(caught.value)
    assert object_count(softhsm.ref) == before


UNKNOWN_CURVE_OID = "1.3.6.1.4.1.99999.1"  # EC parameters that name no curve SoftHSM knows


def test_key_type_the_token_refuses_at_generation(
    hsm_app: App, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SoftHSM supports every spec certpilot offers; it refuses EC parameters naming an
    unknown curve and RSA sizes outside 512..16384. Both fail cleanly, in the token's words."""
    before = object_count(softhsm.ref)
    with pytest.raises(KeyBackendError, match=f"token {TOKEN!r}"):
        pkcs11_backend.generate_key(softhsm.ref, KeySpec("rsa", size=20000), label="too-big", key_id=b"\xbb" * 16)
    assert object_count(softhsm.ref) == before

    # as if the token did not know P-384: the curve's parameters are an OID it does not have
    monkeypatch.setitem(pkcs11_backend._CURVE_NAMES, "p384", UNKNOWN_CURVE_OID)
    request_hsm(hsm_app, "web1", "ec:p384")
    assert_failed_attempt(hsm_app, "web1", f"token {TOKEN!r}")
    assert object_count(softhsm.ref) == before
