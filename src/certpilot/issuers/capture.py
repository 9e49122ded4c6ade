"""Bounded capture of a script's output, with sensitive values replaced by `***`, in
every form `secret_forms` knows (base64, hex, percent-encoding, `\\u` escapes,
reversed, split between streams)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from certpilot.issuers.secret_forms import all_forms, split_pieces

MASK = "***"


def _secret_spans(data: bytes, secrets: list[bytes]) -> list[tuple[int, int]]:
    """Where secrets occur in `data`, overlapping occurrences merged, in order."""
    spans = []
    for secret in secrets:
        start = data.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = data.find(secret, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _encoded(forms: Iterable[str]) -> list[bytes]:
    """Forms as UTF-8 bytes, longest first (so the longest match wins)."""
    return sorted({f.encode("utf-8", "surrogatepass") for f in forms}, key=len, reverse=True)


def _masked_window(data: bytes, encoded: list[bytes], lo: int, hi: int) -> str:
    """`data[lo:hi]` as text, with every form in `encoded` (from `_encoded`) that reaches
    into the window shown as `***`, also one cut by the window's edge. Offsets are bytes,
    so a cut through a multi-byte character cannot shift a secret out of view."""
    out, pos = [], lo
    for start, end in _secret_spans(data, encoded):
        if end <= lo or start >= hi:
            continue
        out.append(data[pos:max(start, lo)].decode("utf-8", "replace"))
        out.append(MASK)
        pos = min(end, hi)
    out.append(data[pos:hi].decode("utf-8", "replace"))
    return "".join(out)


class Scrubber:
    """Masks a set of secrets, in every form, in any number of texts. The forms are computed
    once, when it is made, and live as long as it does (one call's output, one error):
    nothing is kept by secret value beyond that."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in dict.fromkeys(secrets) if s]
        self._forms = _encoded(all_forms(self.secrets))

    def scrub(self, text: str) -> str:
        """`text` with every secret, in any of its forms, replaced by `***`."""
        return self.scrub_all([text])[0]

    def scrub_all(self, texts: Sequence[str]) -> list[str]:
        """Each of `texts` scrubbed, pieces of a secret printed apart across them included
        (half of it on stdout, the rest on stderr)."""
        pieces = split_pieces(texts, self.secrets)
        forms = self._forms
        if pieces:  # what these texts hold only: their forms for this call alone
            forms = sorted({*forms, *_encoded(all_forms(pieces))}, key=len, reverse=True)
        out = []
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            out.append(_masked_window(data, forms, 0, len(data)))
        return out

    def window(self, data: bytes, lo: int, hi: int) -> str:
        """`data[lo:hi]` as text, secrets masked, also one cut by the window's edge."""
        return _masked_window(data, self._forms, lo, hi)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret, in any of its forms, replaced by `***`."""
    return Scrubber(secrets).scrub(text)


def scrub_all(texts: Sequence[str], secrets: Iterable[str]) -> list[str]:
    """Each of `texts` scrubbed, pieces of a secret printed apart across them included
    (half of it on stdout, the rest on stderr)."""
    return Scrubber(secrets).scrub_all(texts)


class BoundedCapture:
    """Keeps the first `head_bytes` and the last `tail_bytes` of a stream.

    Each side keeps `margin` bytes more than it will show, so that a secret cut by
    the boundary is still whole when `text()` scrubs it; the margin is then trimmed.
    """

    def __init__(self, head_bytes: int, tail_bytes: int, margin: int) -> None:
        self._head_limit = head_bytes + margin
        self._tail_limit = tail_bytes + margin
        self._head_bytes, self._tail_bytes, self._margin = head_bytes, tail_bytes, margin
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    def text(self, secrets: Iterable[str] | Scrubber) -> str:
        """The kept output, secrets masked. Cuts are made on the raw bytes, and a
        secret the cut runs through is masked whole, so no piece of it shows."""
        scrubber = secrets if isinstance(secrets, Scrubber) else Scrubber(secrets)
        if self.total <= self._head_limit + self._tail_limit:  # nothing was dropped
            data = bytes(self._head + self._tail)
            return scrubber.window(data, 0, len(data))
        head = scrubber.window(bytes(self._head), 0, min(self._head_bytes, len(self._head)))
        tail = scrubber.window(bytes(self._tail), max(0, len(self._tail) - self._tail_bytes), len(self._tail))
        omitted = self.total - self._head_bytes - self._tail_bytes
        return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}"
