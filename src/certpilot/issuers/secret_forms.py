"""The forms a secret takes when a script prints it encoded, so that scrubbing finds it
there too: base64 (standard and URL-safe, at any alignment inside a longer base64
text), percent-encoding, hex, JSON `\\u` escapes, reversed; and the pieces of a secret
printed apart (half on stdout, half on stderr).

Short forms are left out where they would mask ordinary text by chance: a base64
core cut out of a longer text must keep `MIN_FORM_CHARS` characters, a piece of a
split secret `MIN_PIECE_CHARS`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_FORM_CHARS = 8
MIN_PIECE_CHARS = 4


def _base64_cores(data: bytes) -> set[str]:
    """The characters of base64(data) that do not depend on what comes before or after
    it, for each of the three alignments `data` can have inside a longer text."""
    found: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first = -(-4 * offset // 3)  # characters touched by the bytes before
        last = (4 * (offset + len(data))) // 3  # characters complete without the bytes after
        core = encoded[first:last]
        if offset == 0:
            found.add(encoded)
            found.add(encoded.rstrip("="))
        if len(core) >= MIN_FORM_CHARS:
            found.add(core)
    return found | {f.replace("+", "-").replace("/", "_") for f in found}


def secret_forms(secret: str) -> frozenset[str]:
    """`secret` and the encoded forms it may be printed in. Computed afresh: nothing keyed by
    a secret's value is kept here (a cache would hold a profile's secrets after it is gone);
    `capture.Scrubber` computes them once for a set of secrets."""
    data = secret.encode("utf-8", "surrogatepass")
    forms = {secret, secret[::-1]}
    forms |= _base64_cores(data)
    forms |= {quote(secret, safe=""), quote_plus(secret), quote(secret, safe="").lower()}
    percent_all = "".join(f"%{b:02X}" for b in data)
    forms |= {percent_all, percent_all.lower()}
    forms |= {data.hex(), data.hex().upper()}
    forms |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1] for c in secret)
    forms |= {escaped, escaped.upper().replace("\\U", "\\u")}
    return frozenset(f for f in forms if f)


def all_forms(secrets: Iterable[str]) -> list[str]:
    """Every form of every non-empty secret, longest first (so the longest match wins)."""
    found: set[str] = set()
    for secret in secrets:
        if secret:
            found |= secret_forms(secret)
    return sorted(found, key=len, reverse=True)


def _longest(text: str, candidates: list[str]) -> str:
    """The longest of `candidates` (each a prefix of the next) found in `text`, or ''."""
    lo, hi = 0, len(candidates)  # binary search: if a piece is found, every shorter one is
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if candidates[mid - 1] in text:
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo - 1] if lo else ""


def split_pieces(texts: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Pieces of a secret printed apart: a beginning and an end of it, found anywhere in
    `texts` (stdout, stderr, logs…) that together cover it, or half of it or more."""
    joined = "\n\0\n".join(texts)
    pieces: list[str] = []
    for secret in secrets:
        for form in {secret, secret[::-1]}:
            if len(form) < 2 * MIN_PIECE_CHARS:
                continue
            prefixes = [form[:i] for i in range(MIN_PIECE_CHARS, len(form))]
            suffixes = [form[-i:] for i in range(MIN_PIECE_CHARS, len(form))]
            head, tail = _longest(joined, prefixes), _longest(joined, suffixes)
            half = max(MIN_FORM_CHARS, -(-len(form) // 2))
            if head and tail and len(head) + len(tail) >= len(form):
                pieces += [head, tail]
            pieces += [p for p in (head, tail) if len(p) >= half]
    return pieces
