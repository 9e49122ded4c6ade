"""Each form a script may print a secret in is masked, and ordinary text is not."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from certpilot.issuers.capture import scrub, scrub_all

SECRET = "p@ss/w0rd+Sécret=42!"

FORMS = {
    "plain": SECRET,
    "base64": base64.b64encode(SECRET.encode()).decode(),
    "base64 without padding": base64.b64encode(SECRET.encode()).decode().rstrip("="),
    "urlsafe base64": base64.urlsafe_b64encode(SECRET.encode()).decode(),
    "base64 at offset 1": base64.b64encode(b"u:" + SECRET.encode()).decode(),
    "base64 at offset 2": base64.b64encode(b"usr:" + SECRET.encode()).decode(),
    "base64 at offset 0 inside": base64.b64encode(b"abc" + SECRET.encode() + b"tail").decode(),
    "percent-encoded": urllib.parse.quote(SECRET, safe=""),
    "form-encoded": urllib.parse.quote_plus(SECRET),
    "every byte percent-encoded": "".join(f"%{b:02x}" for b in SECRET.encode()),
    "hex": SECRET.encode().hex(),
    "HEX": SECRET.encode().hex().upper(),
    "json string": json.dumps(SECRET),
    "json \\u escapes": "".join(f"\\u{ord(c):04x}" for c in SECRET),
    "reversed": SECRET[::-1],
}


def core(form: str) -> str:
    """The part of an encoded text that can only come from the secret (base64 in a longer text
    has a character or two at each end shared with its neighbours)."""
    return form[4:-4] if form.startswith(("dTo", "dXNyO", "YWJj")) else form


@pytest.mark.parametrize("form", list(FORMS.values()), ids=list(FORMS))
def test_each_form_is_masked(form: str) -> None:
    text = f"connecting with {form} now"
    out = scrub(text, [SECRET])
    assert core(form) not in out and "***" in out, out
    assert out.startswith("connecting with ") and out.endswith(" now")


def test_halves_on_two_streams_are_masked() -> None:
    half = len(SECRET) // 2
    stdout, stderr = scrub_all([f"part one: {SECRET[:half]}\n", f"part two: {SECRET[half:]}\n"], [SECRET])
    assert SECRET[:half] not in stdout and SECRET[half:] not in stderr
    assert stdout == "part one: ***\n" and stderr == "part two: ***\n"


def test_ordinary_text_is_left_alone() -> None:
    text = "issued CN=web1.example.test serial 4f3a9c, 3 SANs, hex 0a1b2c, base64 aGVsbG8="
    assert scrub(text, [SECRET, "short"]) == text
    assert scrub(text, ["web1"]) == text.replace("web1", "***")


def test_a_secret_is_not_kept_once_its_scrubbing_is_done() -> None:
    """No cache keyed by secret values: a profile's secrets do not outlive their use in
    the controller's memory through the scrubber."""
    import gc
    import secrets as random_secrets

    secret = "gone-" + random_secrets.token_hex(16)
    assert scrub(f"say {secret}", [secret]) == "say ***"
    probe = secret.encode()
    del secret
    gc.collect()
    wanted = probe.decode()
    holders = [o for o in gc.get_objects() if isinstance(o, (dict, set, frozenset)) and wanted in o]
    assert holders == [], "a container still holds the secret after scrubbing"


def test_the_forms_are_computed_once_per_set_of_secrets_not_per_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from certpilot.issuers import capture

    calls: list[tuple[str, ...]] = []
    real = capture.all_forms

    def counted(secrets):  # type: ignore[no-untyped-def]
        secrets = tuple(secrets)
        calls.append(secrets)
        return real(secrets)

    monkeypatch.setattr(capture, "all_forms", counted)
    texts = [f"line {n}: {FORMS['hex']}" for n in range(10)]
    assert scrub_all(texts, [SECRET]) == [f"line {n}: ***" for n in range(10)]
    assert calls == [(SECRET,)], calls

    calls.clear()
    kept = capture.BoundedCapture(head_bytes=8, tail_bytes=8, margin=64)
    kept.feed(b"x" * 100 + SECRET.encode() + b"y" * 100)
    kept.text([SECRET])
    assert calls == [(SECRET,)], "the head and the tail of a capture share one computation"
