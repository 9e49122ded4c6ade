"""scrub and BoundedCapture: a script's output is kept bounded and never shows a secret."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from certpilot.issuers.capture import MASK, BoundedCapture, scrub

# --- scrub ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("password=hunter2", ["hunter2"], "password=***"),
        ("hunter2 and hunter2", ["hunter2"], "*** and ***"),
        ("nothing here", ["hunter2"], "nothing here"),
        ("abc", [], "abc"),
        ("abc", [""], "abc"),
        ("token=abcdef", ["abc", "abcdef"], "token=***"),
        ("token=abcdef", ["abcdef", "abc"], "token=***"),
        ("a.b*c a+b", ["a.b*c", "a+b"], "*** ***"),
        ("user:pw pw", ["user:pw", "pw"], "*** ***"),
        ("pässwörd☃", ["wörd☃"], "päss***"),
        ("x\ny", ["x\ny"], "***"),
        ("key1 key2", ("key1", "key2"), "*** ***"),
    ],
    ids=[
        "one",
        "every-occurrence",
        "absent",
        "no-secrets",
        "empty-secret-ignored",
        "longest-first",
        "longest-first-whatever-the-order",
        "regex-characters-are-literal",
        "overlapping-secrets",
        "non-ascii",
        "multi-line-secret",
        "tuple-of-secrets",
    ],
)
def test_scrub(text, secrets, expected):
    assert scrub(text, secrets) == expected


def test_scrub_accepts_a_generator():
    assert scrub("a secret", (s for s in ["secret"])) == "a ***"


# --- BoundedCapture, examples --------------------------------------------------------


def _capture(data: bytes, head: int, tail: int, margin: int, chunk: int | None = None) -> BoundedCapture:
    capture = BoundedCapture(head, tail, margin)
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        capture.feed(data[i : i + step])
    return capture


def _marker(omitted: int) -> str:
    return f"\n[... {omitted} bytes omitted ...]\n"


@pytest.mark.parametrize(
    ("data", "head", "tail", "margin", "secrets", "expected"),
    [
        (b"", 10, 10, 0, [], ""),
        (b"short output", 10, 10, 0, [], "short output"),
        (b"0123456789abcdefghij", 10, 10, 0, [], "0123456789abcdefghij"),
        (b"0123456789" + b"x" * 100 + b"abcdefghij", 10, 10, 0, [], "0123456789" + _marker(100) + "abcdefghij"),
        (b"0123456789" + b"x" * 100 + b"abcdefghij", 10, 10, 4, [], "0123456789" + _marker(100) + "abcdefghij"),
        (b"token=SECRET done", 100, 100, 6, ["SECRET"], "token=*** done"),
        (b"01234567SECRET" + b"x" * 100 + b"y" * 10, 10, 10, 6, ["SECRET"], "01234567***" + _marker(104) + "y" * 10),
        (b"x" * 100 + b"yySECRETzz", 10, 10, 6, ["SECRET"], "x" * 10 + _marker(90) + "yy***zz"),
        (b"x" * 100 + b"SECRETzzzzzz", 10, 10, 6, ["SECRET"], "x" * 10 + _marker(92) + "***zzzzzz"),
        (b"0123456789" + b"x" * 50, 10, 10, 20, [], "0123456789" + "x" * 50),
    ],
    ids=[
        "nothing",
        "under-the-limits",
        "exactly-head-plus-tail",
        "head-and-tail-kept-middle-omitted",
        "margin-trimmed-when-dropping",
        "secret-in-short-output",
        "secret-across-head-cut",
        "secret-inside-tail",
        "secret-across-tail-cut",
        "nothing-dropped-within-margins",
    ],
)
def test_bounded_capture_examples(data, head, tail, margin, secrets, expected):
    """Shown: the first `head` and the last `tail` bytes of the raw output; a secret that
    reaches into either window is shown as one `***`, even where the window cuts it."""
    for chunk in (None, 1, 3, 7):
        capture = _capture(data, head, tail, margin, chunk)
        assert capture.total == len(data)
        assert capture.text(secrets) == expected, f"chunk={chunk}"


@pytest.mark.parametrize(
    ("data", "head", "tail", "secret"),
    [
        # head kept as 16 bytes = six 2-byte characters + "SECR"; shown as ten characters
        ("é" * 6 + "SECRET" + "x" * 100, 10, 10, "SECRET"),
        # three secrets in a row: scrubbing shortens the head and pulls the cut fragment into view
        ("ABCDEFGH" * 3 + "x" * 100, 10, 10, "ABCDEFGH"),
        # the same at the tail: the fragment "GH" at the start of the kept tail comes into view
        ("x" * 100 + "ABCDEFGH" * 3, 10, 10, "ABCDEFGH"),
        # multi-byte characters in the tail
        ("x" * 100 + "SECRET" + "é" * 6, 10, 10, "SECRET"),
    ],
    ids=["head-multibyte", "head-after-scrubbing", "tail-after-scrubbing", "tail-multibyte"],
)
def test_a_secret_cut_at_the_kept_boundary_shows_no_fragment(data, head, tail, secret):
    """The margin exists so that a secret cut where the buffer ends is never shown, not even in part
    (the worker sets margin to the longest secret's length in bytes)."""
    raw = data.encode()
    capture = _capture(raw, head, tail, margin=len(secret.encode()))
    text = capture.text([secret])
    assert secret not in text
    fragments = {secret[:n] for n in range(2, len(secret))} | {secret[-n:] for n in range(2, len(secret))}
    shown = [f for f in fragments if f in text]
    assert not shown, f"fragments of the secret shown: {shown} in {text!r}"


# --- BoundedCapture, properties ----------------------------------------------------

FILLER = "abcxyz 0189\n.-é☃"
SECRET_ALPHABET = "ABCDEFGHJKLMNPQRSTΩ"  # disjoint from FILLER, from "*" and from the omission marker

secrets_st = st.text(alphabet=SECRET_ALPHABET, min_size=3, max_size=24)
filler_parts_st = st.lists(st.text(alphabet=FILLER, max_size=80), min_size=1, max_size=8)
cuts_st = st.lists(st.integers(min_value=0, max_value=2000), max_size=12)
sizes_st = st.integers(min_value=0, max_value=64)
# distinct characters: a secret that cannot overlap itself, so every secret character
# in the output is a fragment of a cut occurrence, not a matching ambiguity
distinct_secrets_st = st.lists(st.sampled_from(SECRET_ALPHABET), min_size=3, max_size=16, unique=True).map("".join)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _text(parts: list[str], secret: str) -> bytes:
    return secret.join(parts).encode()


@settings(max_examples=400, deadline=None)
@given(parts=filler_parts_st, secret=secrets_st, cuts=cuts_st, head=sizes_st, tail=sizes_st,
       margin=st.integers(min_value=0, max_value=40))
@example(parts=["0123456", "x" * 60], secret="SECRET", cuts=[], head=10, tail=10, margin=6)
@example(parts=["x" * 60, "zzzz"], secret="SECRET", cuts=[], head=10, tail=10, margin=6)
def test_property_secret_never_shown_and_output_bounded(parts, secret, cuts, head, tail, margin):
    data = _text(parts, secret)
    capture = BoundedCapture(head, tail, margin)
    for chunk in _chunks(data, cuts):
        capture.feed(chunk)
    text = capture.text([secret])

    assert secret not in text
    assert capture.total == len(data)
    if len(data) <= head + tail + 2 * margin:
        assert len(text) <= len(data)  # nothing dropped; a secret of 3+ characters never grows
    else:
        # each window may end in a `***` that stands for a secret its edge cut, so it can
        # stick out by at most len(MASK) - 1 characters
        slack = 2 * (len(MASK) - 1)
        assert len(text) <= head + tail + len(_marker(len(data) - head - tail)) + slack


@settings(max_examples=300, deadline=None)
@given(parts=filler_parts_st, secret=secrets_st, cuts=cuts_st, head=sizes_st, tail=sizes_st,
       margin=st.integers(min_value=0, max_value=40))
def test_property_chunking_does_not_change_the_text(parts, secret, cuts, head, tail, margin):
    data = _text(parts, secret)
    whole = BoundedCapture(head, tail, margin)
    whole.feed(data)
    chunked = BoundedCapture(head, tail, margin)
    for chunk in _chunks(data, cuts):
        chunked.feed(chunk)
    assert chunked.text([secret]) == whole.text([secret])


@settings(max_examples=400, deadline=None)
@given(parts=filler_parts_st, secret=distinct_secrets_st, cuts=cuts_st, head=sizes_st, tail=sizes_st)
def test_property_with_the_workers_margin_no_secret_character_is_shown(parts, secret, cuts, head, tail):
    """With margin = the secret's length in bytes (as the worker sets it), not even a fragment
    of the secret is shown: every secret character in the output would be a leak."""
    data = _text(parts, secret)
    capture = BoundedCapture(head, tail, margin=len(secret.encode()))
    for chunk in _chunks(data, cuts):
        capture.feed(chunk)
    text = capture.text([secret])
    leaked = [ch for ch in text if ch in SECRET_ALPHABET]
    assert not leaked, f"{''.join(leaked)!r} of {secret!r} shown in {text!r}"
