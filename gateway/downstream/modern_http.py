"""HTTP plumbing of the 2026-07-28 endpoint: the request's headers and body, the response's framing.

A response is ``application/json`` until something has to reach the client before the answer
(a progress or log notification, or a keep-alive ping of a call still running after
``KEEPALIVE_SECONDS``): from then on it is an SSE stream whose last event is the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp_types import INTERNAL_ERROR

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from gateway.core.pipeline import RpcError

logger = logging.getLogger("gateway.modern")

KEEPALIVE_SECONDS = 15.0
WATCH_AFTER = 0.25
ROUTING_HEADERS = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")
_ACCEPTS: dict[str, tuple[bool, bool]] = {}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class Reply:
    """The response to one POST: JSON by default, an SSE stream once a notification must go first."""

    __slots__ = ("_lock", "_ping", "finished", "gone", "last_write", "request_id", "send", "streaming", "watcher")

    def __init__(self, send: Send, request_id: Any) -> None:
        self.send = send
        self.request_id = request_id
        self.streaming = False
        self.finished = False
        self.gone = False  # the client closed the connection
        self.last_write = 0.0
        self.watcher: asyncio.Future[Any] | None = None
        self._lock: asyncio.Lock | None = None  # made when the response turns into a stream
        self._ping: asyncio.Task[None] | None = None

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        data = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})
        await self._write(b"event: message\r\ndata: " + data + b"\r\n\r\n")

    def ping(self) -> None:
        """A comment line on the (then SSE) response, so that proxies keep a quiet request open."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._write(b": ping\r\n\r\n"))

    def _stream_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _write(self, chunk: bytes) -> None:
        async with self._stream_lock():
            if self.finished:
                return
            self.last_write = asyncio.get_running_loop().time()
            if not self.streaming:
                self.streaming = True  # set before awaiting: a concurrent _finish then ends the stream
                await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def result(self, result: dict[str, Any]) -> None:
        await self._finish({"jsonrpc": "2.0", "id": self.request_id, "result": result}, 200)

    async def error(self, error: RpcError, status: int | None = None) -> None:
        if status is None:
            status = ERROR_CODE_HTTP_STATUS.get(error.code, 200)
        await self._finish({"jsonrpc": "2.0", "id": self.request_id, "error": error.to_json()}, status)

    async def _finish(self, message: dict[str, Any], status: int) -> None:
        try:
            body = orjson.dumps(message)
        except (TypeError, orjson.JSONEncodeError):
            logger.exception("a result could not be encoded")
            error = {"code": INTERNAL_ERROR, "message": "Internal server error"}
            body = orjson.dumps({"jsonrpc": "2.0", "id": self.request_id, "error": error})
        if self.finished:
            return
        if not self.streaming:  # nothing was written, nothing is being written: no lock needed
            self.finished = True
            headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})
            return
        async with self._stream_lock():
            if self.finished:
                return
            self.finished = True
            event = b"event: message\r\ndata: " + body + b"\r\n\r\n"
            await self.send({"type": "http.response.body", "body": event, "more_body": False})


class Monitor:
    """Looks after the requests that go upstream, with one task for all of them (none when there are none).

    A request running longer than ``WATCH_AFTER`` gets a watcher for its client leaving (which
    cancels it: closing the response is how a 2026-07-28 client cancels); one whose response has
    been quiet for ``KEEPALIVE_SECONDS`` gets a ping. Quick requests cost a dict entry, no task.
    """

    def __init__(self) -> None:
        self.open: dict[Reply, tuple[float, Receive, asyncio.Task[Any]]] = {}
        self.task: asyncio.Task[None] | None = None

    def track(self, reply: Reply, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        reply.last_write = now = loop.time()
        self.open[reply] = (now, receive, task)
        if self.task is None:
            self.task = loop.create_task(self._run())

    def untrack(self, reply: Reply) -> None:
        self.open.pop(reply, None)
        if reply.watcher is not None:
            reply.watcher.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.open:
                await asyncio.sleep(WATCH_AFTER)
                now = loop.time()
                for reply, (since, receive, task) in list(self.open.items()):
                    if reply.finished:
                        continue
                    if reply.watcher is None and now - since >= WATCH_AFTER:
                        reply.watcher = _watch(reply, receive, task)
                    if now - reply.last_write >= KEEPALIVE_SECONDS:
                        reply.last_write = now
                        reply.ping()
        finally:
            self.task = None


def _watch(reply: Reply, receive: Receive, task: asyncio.Task[Any]) -> asyncio.Future[Any]:
    """Cancel ``task`` when the client closes the connection before its answer is written."""
    watcher = asyncio.ensure_future(receive())

    def gone(done: asyncio.Future[Any]) -> None:
        if done.cancelled() or reply.finished or done.exception() is not None:
            return
        if done.result().get("type") == "http.disconnect":
            reply.gone = True
            task.cancel()

    watcher.add_done_callback(gone)
    return watcher


async def plain_error(send: Send, status: int, code: int, message: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Request:
    """One POST's headers, read in one pass over the raw header list."""

    __slots__ = ("accept", "headers", "length", "param_headers", "repeated")

    def __init__(self, scope: Scope) -> None:
        self.headers: dict[str, str] = {}
        self.repeated: str | None = None
        self.accept = ""
        self.length: int | None = None
        self.param_headers = False  # any Mcp-Param-* header
        for key, value in scope["headers"]:
            if key == b"accept":
                self.accept += ("," if self.accept else "") + value.decode("latin-1")
            elif key == b"content-length":
                try:
                    self.length = int(value)
                except ValueError:
                    self.length = None
            elif key.startswith(b"mcp-"):
                name = key.decode("latin-1")
                if key.startswith(b"mcp-param-"):
                    self.param_headers = True
                if name in self.headers:
                    if key in ROUTING_HEADERS and self.repeated is None:
                        self.repeated = name
                    self.headers[name] += ", " + value.decode("latin-1")
                else:
                    self.headers[name] = value.decode("latin-1")

    def accepts(self) -> tuple[bool, bool]:
        """(JSON, SSE) acceptable, as the SDK reads ``Accept`` (RFC 7231 wildcards included)."""
        known = _ACCEPTS.get(self.accept)
        if known is not None:
            return known
        kinds = [part.split(";")[0].strip().lower() for part in self.accept.split(",")]
        anything = "*/*" in kinds
        json = anything or "application/json" in kinds or "application/*" in kinds
        sse = anything or "text/event-stream" in kinds or "text/*" in kinds
        if len(_ACCEPTS) < 64:  # clients send one of a few values
            _ACCEPTS[self.accept] = (json, sse)
        return json, sse


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
