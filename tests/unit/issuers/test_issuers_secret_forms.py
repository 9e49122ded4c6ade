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
