"""Framing between controller and worker: 4-byte big-endian length, then a JSON object."""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Iterator

import pytest

from certpilot.issuers.protocol import (
    MAX_MESSAGE_BYTES,
    ChannelClosed,
    encode,
    read_exact,
    read_message,
    write_message,
)


class Pipe:
    """Both ends of an os.pipe; each end is closed exactly once (a second close could hit a reused fd)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self._open = {self.r, self.w}

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close_all()


def _write_in_background(p: Pipe, data: bytes, close: bool = True) -> threading.Thread:
    """Write from another thread so a message larger than the pipe buffer cannot deadlock."""

    def run():
        view = memoryview(data)
        while view:
            view = view[os.write(p.w, view):]
        if close:
            p.close(p.w)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"op": "call", "timeout_s": 60},
        {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"},
        {"args": {"password": "pässwörd ☃", "empty": "", "none": None}, "list": [1, 2.5, True, None]},
        {"nested": {"a": {"b": {"c": [{"d": "e"}]}}}},
        {"big": "x" * (1024 * 1024)},
    ],
    ids=["empty", "simple", "pem-text", "unicode-and-types", "nested", "one-MiB-larger-than-pipe-buffer"],
)
def test_round_trip(pipe, message):
    writer = threading.Thread(target=write_message, args=(pipe.w, message), daemon=True)
    writer.start()
    assert read_message(pipe.r) == message
    writer.join(timeout=10)
    assert not writer.is_alive()


def test_messages_arrive_in_order_on_one_pipe(pipe):
    messages = [{"n": i, "pad": "y" * (i * 1000)} for i in range(20)]

    def run():
        for m in messages:
            write_message(pipe.w, m)

    writer = threading.Thread(target=run, daemon=True)
    writer.start()
    assert [read_message(pipe.r) for _ in messages] == messages
    writer.join(timeout=10)


def test_encode_is_length_prefixed_compact_json():
    data = encode({"a": 1, "b": "é"})
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert data[4:] == json.dumps({"a": 1, "b": "é"}, separators=(",", ":")).encode()
    assert json.loads(data[4:]) == {"a": 1, "b": "é"}


def test_read_exact_gathers_partial_writes(pipe):
    _write_in_background(pipe, b"abc", close=False).join()
    _write_in_background(pipe, b"defg", close=True).join()
    assert read_exact(pipe.r, 5) == b"abcde"
    assert read_exact(pipe.r, 2) == b"fg"
    with pytest.raises(ChannelClosed):
        read_exact(pipe.r, 1)


def _frame(body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">I", len(body) if length is None else length) + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "closed"),
        (b"\x00\x00", "closed"),
        (_frame(b'{"a": 1}', length=100), "closed"),
        (_frame(b"not json"), "JSON"),
        (_frame(b'{"a": '), "JSON"),
        (_frame(b"\xff\xfe\xfd"), "JSON"),
        (_frame(b""), "JSON"),
        (_frame(b"[1, 2]"), "not an object"),
        (_frame(b'"text"'), "not an object"),
        (_frame(b"null"), "not an object"),
        (_frame(b"", length=MAX_MESSAGE_BYTES + 1), "too large"),
        (_frame(b"", length=0xFFFFFFFF), "too large"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "too large"),
    ],
    ids=[
        "closed-before-header",
        "closed-inside-header",
        "closed-inside-body",
        "body-not-json",
        "body-truncated-json",
        "body-not-utf8",
        "empty-body",
        "json-array",
        "json-string",
        "json-null",
        "one-byte-over-limit",
        "maximum-length-field",
        "text-where-a-header-belongs",
    ],
)
def test_garbage_and_closed_pipes_raise_channel_closed(pipe, data, reason):
    _write_in_background(pipe, data, close=True).join(timeout=10)
    with pytest.raises(ChannelClosed) as info:
        read_message(pipe.r)
    assert reason in str(info.value)


def test_a_message_of_exactly_the_limit_is_accepted(pipe):
    skeleton = b'{"pad":""}'
    body = b'{"pad":"' + b"z" * (MAX_MESSAGE_BYTES - len(skeleton)) + b'"}'
    assert len(body) == MAX_MESSAGE_BYTES
    writer = _write_in_background(pipe, _frame(body), close=True)
    message = read_message(pipe.r)
    writer.join(timeout=10)
    assert len(message["pad"]) == MAX_MESSAGE_BYTES - len(skeleton)
