"""Framing between the controller and a worker process: 4-byte length, then JSON."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ChannelClosed(Exception):
    """The other side closed the pipe or sent garbage."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return struct.pack(">I", len(body)) + body


def write_message(fd: int, message: dict[str, Any]) -> None:
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_exact(fd: int, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = os.read(fd, count - len(chunks))
        if not chunk:
            raise ChannelClosed("pipe closed")
        chunks += chunk
    return bytes(chunks)


def read_message(fd: int) -> dict[str, Any]:
    (length,) = struct.unpack(">I", read_exact(fd, 4))
    if length > MAX_MESSAGE_BYTES:
        raise ChannelClosed(f"message of {length} bytes is too large")
    try:
        message = json.loads(read_exact(fd, length))
    except ValueError as exc:
        raise ChannelClosed(f"message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ChannelClosed("message is not an object")
    return message
