"""Limits on a request's header block: how long it may take to arrive, and how large it may be.

uvicorn has neither: its keep-alive timeout only runs between requests, and the httptools
parser it uses accepts headers of any size. A client sending its headers a byte at a time
would hold a connection forever; one sending 25 MB of headers would have them all parsed
into memory. This protocol (uvicorn's httptools protocol, handed to ``uvicorn.Config(http=...)``)
adds both limits:

- the header block of every request (from the connection's start, or from the request's first
  byte on a kept-alive connection) must be complete within ``header_timeout`` seconds, else the
  client gets ``408`` and the connection is closed;
- a header block larger than ``max_header_bytes`` gets ``431`` and the connection is closed at
  once (the rest is never read, the application never sees the request).

While a block is incomplete its size is counted per chunk received, so a flood passes the limit
by at most one read (256 KiB at most) before the connection is closed; a block that arrives
whole in one read is measured as parsed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


def _reply(status: bytes, message: str) -> bytes:
    body = message.encode("ascii")
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


TOO_LARGE = _reply(b"431 Request Header Fields Too Large", "Request header fields too large.")
TIMED_OUT = _reply(b"408 Request Timeout", "Request headers not received in time.")


def limited_protocol(header_timeout: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these header limits (a class, as ``Config(http=...)`` wants)."""

    class HeaderLimitedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.in_headers = True  # waiting for (the rest of) a header block
            self.header_bytes = 0
            self.header_timer: asyncio.TimerHandle | None = None
            self.parsed_bytes = 0  # the current header block's URL and headers, as parsed
            self.refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if not self.in_headers:
                self.header_bytes = 0
            super().data_received(data)
            if self.in_headers and not self.transport.is_closing():
                self.header_bytes += len(data)
                if self.header_bytes > max_header_bytes:
                    self.refuse(TOO_LARGE, "request headers larger than %d bytes", max_header_bytes)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.in_headers = True
            self.parsed_bytes = 0
            self.start_header_timer()

        def on_url(self, url: bytes) -> None:
            self.parsed_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self.in_headers = False
            self.header_bytes = 0
            self.stop_header_timer()
            if self.parsed_bytes > max_header_bytes:  # a whole block arrived in one read: the app never sees it
                self.refuse(TOO_LARGE, "request headers larger than %d bytes", max_header_bytes)
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self.refused:
                super().on_message_complete()

        def start_header_timer(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(header_timeout, self.header_time_over)

        def stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def header_time_over(self) -> None:
            self.header_timer = None
            if self.in_headers:
                self.refuse(TIMED_OUT, "request headers not complete after %ss", header_timeout)

        def refuse(self, reply: bytes, reason: str, limit: float) -> None:
            self.refused = True
            self.stop_header_timer()
            if self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.warning(client + reason + "; connection closed", limit)
            self.transport.write(reply)
            self.transport.close()

    return HeaderLimitedProtocol
