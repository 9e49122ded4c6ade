"""Bounded capture of a script's output, with sensitive values replaced by `***`."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret replaced by `***`, longest first."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


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

    def text(self, secrets: Iterable[str]) -> str:
        secrets = list(secrets)
        if self.total <= self._head_limit + self._tail_limit:  # nothing was dropped
            return scrub((self._head + self._tail).decode("utf-8", "replace"), secrets)
        head = scrub(self._head.decode("utf-8", "replace"), secrets)[: self._head_bytes]
        tail = scrub(self._tail.decode("utf-8", "replace"), secrets)
        tail = tail[len(tail) - self._tail_bytes :] if len(tail) > self._tail_bytes else tail
        omitted = self.total - self._head_bytes - self._tail_bytes
        return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}"
