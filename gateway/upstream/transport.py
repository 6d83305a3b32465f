"""What carries an upstream's messages: the interface the stdio and HTTP transports share."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """What a transport got: one message's bytes, or the end of what answered one request.

    ``concerns`` is the id of the request this came in answer to, when the transport knows it
    (over streamable HTTP, everything on a POST's response belongs to that POST's request).
    ``data`` None means that answer ended: with ``problem`` saying why it could not be read,
    or without, when it simply ended (a request still unanswered then fails).
    """

    data: bytes | None
    concerns: int | None = None
    problem: str | None = None


class TransportClosed(Exception):
    """The transport cannot send any more (its text says why, without naming the server)."""


class Transport(Protocol):
    """Moves JSON-RPC messages to and from one server; knows nothing of their meaning."""

    broken: str | None  # why ``receive`` ended early, if it did not just end
    protocol_version: str | None  # the version the handshake settled on (HTTP sends it as a header)

    async def send(self, message: dict[str, Any]) -> None: ...

    def receive(self) -> AsyncIterator[Received]: ...

    def finished(self, request_id: int) -> None:
        """The request is settled (answered, timed out, cancelled): stop reading its answer."""

    async def close(self) -> None: ...


# The id of a response that could not be parsed (truncated, not JSON), read from its first or
# last bytes: the first keys of the outermost object, or its very last key. Nothing nested can
# match either; a server request (``"method"`` first: its id is the server's own) does not match.
_HEAD_ID = re.compile(rb'\A\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(\d{1,18})\s*,\s*"(?:result|error)"')
_REQUEST_HEAD = re.compile(rb'\A\s*\{\s*"method"')
_TAIL_ID = re.compile(rb'[{,]\s*"id"\s*:\s*(\d{1,18})\s*\}\s*\Z')


def sniff_response_id(data: bytes) -> int | None:
    """The request id an unparsable response answers, if its first or last bytes say so."""
    match = _HEAD_ID.match(data[:512])
    if match is None and not _REQUEST_HEAD.match(data[:64]):
        match = _TAIL_ID.search(data[-512:])
    return int(match.group(1)) if match else None


def preview(data: bytes) -> str:
    return data[:80].decode("utf-8", "replace")
