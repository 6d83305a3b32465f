"""Newline-delimited JSON over a server process's stdin and stdout (the stdio transport, no SDK)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.upstream.transport import DEFAULT_MAX_MESSAGE_BYTES, Received, TransportClosed

logger = logging.getLogger("gateway.upstream")

READ_CHUNK = 256 * 1024


class StdioTransport:
    """One message a line, each way. Lines of any size up to the limit; a longer one breaks it.

    A server that writes a line over the limit (or one that never ends) cannot be resynchronised
    cheaply or safely, so reading stops at once (``broken`` says why) and the server is treated
    as crashed: memory stays bounded by the limit.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_message_bytes
        self.broken: str | None = None
        self.protocol_version: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        try:
            self._writer.write(orjson.dumps(message) + b"\n")
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise TransportClosed(f"it closed its input: {exc}") from None

    def finished(self, request_id: int) -> None:
        pass

    async def receive(self) -> AsyncIterator[Received]:
        limit = f"it sent a message over the {self._max / (1024 * 1024):g} MiB limit"
        buffer = bytearray()
        try:
            while True:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    return
                start = 0
                while True:
                    newline = chunk.find(b"\n", start)
                    if newline < 0:
                        buffer += chunk[start:]
                        if len(buffer) > self._max:
                            self.broken = limit + " (an endless or oversized line); the connection was closed"
                            return
                        break
                    if len(buffer) + newline - start > self._max:
                        self.broken = limit
                        return
                    buffer += chunk[start:newline]
                    if buffer.strip():
                        yield Received(bytes(buffer))
                    buffer.clear()
                    start = newline + 1
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("reading a server's output failed: %s", exc)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
