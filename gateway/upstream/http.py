"""MCP over HTTP, owned with httpx: streamable HTTP (one POST a message) and the legacy SSE transport.

Both only move bytes for a :class:`~gateway.upstream.peer.Peer`; they parse no JSON-RPC. Over
streamable HTTP everything on a POST's response belongs to that POST's request, so it is handed
on with that request's id (``Received.concerns``): a malformed answer fails that call, and a
server-to-client request on it reaches the client session whose call it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
import orjson

from gateway.upstream.transport import DEFAULT_MAX_MESSAGE_BYTES, Received, TransportClosed

logger = logging.getLogger("gateway.upstream")

SESSION_HEADER = "mcp-session-id"
PROTOCOL_HEADER = "mcp-protocol-version"
SEND_TIMEOUT = 30.0  # a POST that carries no request (a notification, an answer) or connects


class Oversized(Exception):
    pass


def describe(exc: BaseException) -> str:
    """One line for an exception from the HTTP stack; never a header value."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def sse_events(response: httpx.Response, limit: int) -> AsyncIterator[tuple[str, bytes]]:
    """The (event type, data) of each server-sent event; :class:`Oversized` past ``limit`` bytes."""
    buffer = bytearray()
    scan = 0  # buffer[:scan] holds no newline
    event, data, has_data = "message", bytearray(), False
    async for chunk in response.aiter_bytes():
        buffer += chunk
        start, pos = 0, scan
        while (newline := buffer.find(b"\n", pos)) >= 0:
            line = bytes(buffer[start:newline]).rstrip(b"\r")
            start = pos = newline + 1
            if not line:
                if has_data:
                    yield event, bytes(data)
                event, data, has_data = "message", bytearray(), False
            elif line.startswith(b"data:"):
                if has_data:
                    data += b"\n"
                data += line[6:] if line.startswith(b"data: ") else line[5:]
                has_data = True
                if len(data) > limit:
                    raise Oversized
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
        del buffer[:start]
        scan = len(buffer)
        if len(buffer) > limit:
            raise Oversized


async def read_body(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise Oversized
    return bytes(body)


class _HttpBase:
    """What both HTTP transports share: the client, the queue of what arrived, the limit."""

    def __init__(self, url: str, headers: Mapping[str, str], max_message_bytes: int) -> None:
        self.url = url
        self._max = max_message_bytes
        self._client = httpx.AsyncClient(headers=dict(headers), timeout=httpx.Timeout(SEND_TIMEOUT, read=None))
        self._queue: asyncio.Queue[Received | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.broken: str | None = None
        self.protocol_version: str | None = None

    @property
    def over_limit(self) -> str:
        return f"sent a message over the {self._max / (1024 * 1024):g} MiB limit"

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _end(self, reason: str | None) -> None:
        """No more messages: ``receive`` ends (``broken`` says why, None when the gateway closed it)."""
        if self.broken is None and not self._closed:
            self.broken = reason
        self._queue.put_nowait(None)

    async def receive(self) -> AsyncIterator[Received]:
        while (item := await self._queue.get()) is not None:
            yield item

    def finished(self, request_id: int) -> None:
        pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self._goodbye()
        with contextlib.suppress(Exception):
            await self._client.aclose()
        self._queue.put_nowait(None)

    async def _goodbye(self) -> None:
        pass


class StreamableHttpTransport(_HttpBase):
    """One POST a message; a request's answer (and what the server sends meanwhile) on its response."""

    def __init__(
        self, url: str, headers: Mapping[str, str], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__(url, headers, max_message_bytes)
        self.session_id: str | None = None
        self._posts: dict[int, asyncio.Task[None]] = {}

    def _headers(self, accept: str = "application/json, text/event-stream") -> dict[str, str]:
        headers = {"accept": accept}
        if self.session_id is not None:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version is not None:
            headers[PROTOCOL_HEADER] = self.protocol_version
        return headers

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed or self.broken is not None:
            raise TransportClosed(self.broken or "the connection is closed")
        request_id = message.get("id")
        if "method" in message and type(request_id) is int:
            task = self._spawn(self._post_request(request_id, message))
            self._posts[request_id] = task
            task.add_done_callback(lambda _: self._posts.pop(request_id, None))
            return
        try:
            response = await self._client.post(
                self.url, content=orjson.dumps(message), headers=self._headers(), timeout=SEND_TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise TransportClosed(f"could not be reached: {describe(exc)}") from None
        if self._session_gone(response):
            raise TransportClosed(self.broken or "the session ended")
        if response.status_code >= 400:
            method, status = message.get("method") or "reply", response.status_code
            logger.warning("remote %s answered a %s with HTTP %s", self.url, method, status)

    def _session_gone(self, response: httpx.Response) -> bool:
        if response.status_code == 404 and self.session_id is not None:
            self._end("ended the session (HTTP 404); the next call opens a new one")
            return True
        return False

    async def _post_request(self, request_id: int, message: dict[str, Any]) -> None:
        put = self._queue.put_nowait
        try:
            async with self._client.stream(
                "POST", self.url, content=orjson.dumps(message), headers=self._headers()
            ) as response:
                if message.get("method") == "initialize" and response.headers.get(SESSION_HEADER):
                    self.session_id = response.headers[SESSION_HEADER]
                if self._session_gone(response):
                    return
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if response.status_code >= 400:
                    body = await read_body(response, 64 * 1024) if kind == "application/json" else None
                    if body:  # maybe a JSON-RPC error for this request
                        put(Received(body, request_id))
                    put(Received(None, request_id, f"answered with HTTP {response.status_code}"))
                elif kind == "text/event-stream":
                    async for _event, data in sse_events(response, self._max):
                        put(Received(data, request_id))
                elif kind == "application/json":
                    put(Received(await read_body(response, self._max), request_id))
                elif response.status_code not in (202, 204):
                    put(Received(None, request_id, f"answered with content type {kind or 'none'!r}"))
        except Oversized:
            put(Received(None, request_id, self.over_limit))
        except httpx.HTTPError as exc:
            put(Received(None, request_id, f"could not be reached: {describe(exc)}"))
        finally:
            put(Received(None, request_id))  # the answer ended: a call still waiting fails

    def finished(self, request_id: int) -> None:
        task = self._posts.pop(request_id, None)
        if task is not None and not task.done():
            task.cancel()

    def listen(self) -> None:
        """Open the stream for messages the server sends outside any request (list changes)."""
        self._spawn(self._listen())

    async def _listen(self) -> None:
        while not self._closed and self.broken is None:
            try:
                async with self._client.stream("GET", self.url, headers=self._headers("text/event-stream")) as response:
                    if self._session_gone(response):
                        return
                    if response.status_code != 200:
                        return  # 405: the server offers no such stream
                    async for _event, data in sse_events(response, self._max):
                        self._queue.put_nowait(Received(data))
            except Oversized:
                logger.warning("remote %s %s on its event stream; the stream was closed", self.url, self.over_limit)
                return
            except httpx.HTTPError as exc:
                logger.debug("event stream of %s ended: %s", self.url, describe(exc))
            await asyncio.sleep(1.0)

    async def _goodbye(self) -> None:
        if self.session_id is not None and self.broken is None:
            with contextlib.suppress(httpx.HTTPError):
                await self._client.delete(self.url, headers=self._headers(), timeout=5.0)


class SseTransport(_HttpBase):
    """The legacy HTTP+SSE transport: one event stream for everything, POSTs to the endpoint it names."""

    def __init__(
        self, url: str, headers: Mapping[str, str], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        super().__init__(url, headers, max_message_bytes)
        self._endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._spawn(self._stream())

    async def _stream(self) -> None:
        reason = "closed the event stream"
        try:
            async with self._client.stream("GET", self.url, headers={"accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    reason = f"answered with HTTP {response.status_code}"
                    return
                async for event, data in sse_events(response, self._max):
                    if event == "endpoint" and not self._endpoint.done():
                        self._set_endpoint(data.decode("utf-8", "replace").strip())
                    elif event == "message":
                        self._queue.put_nowait(Received(data))
        except Oversized:
            reason = f"{self.over_limit}; the connection was closed"
        except httpx.HTTPError as exc:
            reason = f"could not be reached: {describe(exc)}"
        finally:
            if not self._endpoint.done():
                self._endpoint.set_exception(TransportClosed(reason))
            self._end(reason)

    def _set_endpoint(self, path: str) -> None:
        endpoint = urljoin(self.url, path)
        ours, theirs = urlparse(self.url), urlparse(endpoint)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            self._endpoint.set_exception(TransportClosed("named a message endpoint on another origin"))
        else:
            self._endpoint.set_result(endpoint)

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed or self.broken is not None:
            raise TransportClosed(self.broken or "the connection is closed")
        endpoint = await asyncio.shield(self._endpoint)
        request_id = message.get("id") if "method" in message else None
        try:
            response = await self._client.post(endpoint, content=orjson.dumps(message), timeout=SEND_TIMEOUT)
        except httpx.HTTPError as exc:
            raise TransportClosed(f"could not be reached: {describe(exc)}") from None
        if response.status_code >= 400:
            problem = f"answered with HTTP {response.status_code}"
            if type(request_id) is int:
                self._queue.put_nowait(Received(None, request_id, problem))
            else:
                logger.warning("remote %s %s to a %s", self.url, problem, message.get("method"))
