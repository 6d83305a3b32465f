"""A long-lived event stream (SSE) to one client: messages pushed to it go out in order, as they come.

Used for a handshake-era session's GET stream. Pushing never blocks the pusher (an upstream's
notification must not wait for a slow client): messages queue until the stream's own task
writes them. An idle stream gets a comment line every :data:`~gateway.downstream.wire.KEEPALIVE_SECONDS`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.downstream import wire

if TYPE_CHECKING:
    from starlette.types import Receive, Send

MAX_QUEUED = 1000  # messages a stalled client may fall behind before the stream is ended


class EventStream:
    __slots__ = ("ended", "pending", "send", "wake")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.ended = False

    def push(self, data: bytes) -> None:
        if self.ended:
            return
        if len(self.pending) >= MAX_QUEUED:
            self.end()  # the client stopped reading: better a closed stream than unbounded memory
            return
        self.pending.append(data)
        self.wake.set()

    def end(self) -> None:
        """Close the stream (the session ended, or the gateway is stopping)."""
        self.ended = True
        self.wake.set()

    async def run(self, receive: Receive) -> None:
        """Write what is pushed until the stream ends or the client goes away (the headers are sent)."""
        disconnected = asyncio.ensure_future(wire.wait_disconnect(receive))
        try:
            while True:
                self.wake.clear()  # before the flush: a push from here on wakes the wait below
                if self.pending:
                    pending, self.pending = self.pending, []
                    chunk = b"".join(wire.sse_event(data) for data in pending)
                    await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.ended or disconnected.done():
                    break
                waiter = asyncio.ensure_future(self.wake.wait())
                done, _ = await asyncio.wait(
                    (waiter, disconnected), timeout=wire.KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if not done:
                    await self.send({"type": "http.response.body", "body": wire.SSE_PING, "more_body": True})
            if not disconnected.done():
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.ended = True
            disconnected.cancel()
