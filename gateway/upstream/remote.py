"""An upstream MCP server reached over HTTP (``remote:`` catalog entries) instead of spawned.

The SDK's client transports (streamable HTTP, or the legacy SSE transport) carry the messages;
this module owns the JSON-RPC bookkeeping the same way ``StdioConnection`` does for a process:
the gateway's own request ids, deadlines, cancellation, progress routing and server-to-client
requests. One upstream session per sandbox: it is opened on first need, shared by every session
and call of the sandbox, and opened again after the remote ends it.

Credential injection on the wire: ``remote.headers`` values may name the entry's own secrets
(``Bearer $API_TOKEN``); they are filled from the sandbox's secrets here and go only to that
URL. The client's own bearer token never reaches any upstream: this module never sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import jsonrpc_message_adapter

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry
from gateway.features.redaction import NO_REDACTION, Redactor
from gateway.upstream.errors import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    SERVER_UNAVAILABLE,
    ErrorReply,
    UpstreamError,
)
from gateway.upstream.launch import fill_secrets, secret_environment
from gateway.upstream.lists import ServerLists
from gateway.upstream.peer import ProgressHandler, RequestHandler
from gateway.upstream.server import CLIENT_PROTOCOL_VERSION, ServerLimits

logger = logging.getLogger("gateway.upstream")

PROTOCOL_HEADER = "mcp-protocol-version"
SESSION_GONE = "Session terminated"


def remote_headers(entry: CatalogEntry, settings: ServerSettings) -> dict[str, str]:
    """The entry's headers with ``$NAME`` / ``${NAME}`` filled from its own secrets."""
    assert entry.remote is not None
    secrets = secret_environment(entry, settings)
    return {name: fill_secrets(value, secrets) for name, value in entry.remote.headers.items()}


class _Pending:
    __slots__ = ("future", "method", "on_progress", "on_request")

    def __init__(self, future: asyncio.Future[dict[str, Any]], method: str, on_progress: Any, on_request: Any) -> None:
        self.future = future
        self.method = method
        self.on_progress: ProgressHandler | None = on_progress
        self.on_request: RequestHandler | None = on_request


class RemoteServer(ServerLists):
    """Presents the interface the router uses on ``UpstreamServer``, over HTTP."""

    def __init__(
        self,
        name: str,
        sandbox: str,
        entry: CatalogEntry,
        settings: ServerSettings,
        limits: ServerLimits | None = None,
        redactor: Redactor = NO_REDACTION,
        on_list_changed: Callable[[Any, str], Awaitable[None]] | None = None,
    ) -> None:
        if entry.remote is None:
            raise ValueError(f"catalog entry {entry.name!r} has no remote")
        self.name = name
        self.sandbox = sandbox
        self.entry = entry
        self.url = entry.remote.url
        self.transport_type = entry.remote.transport_type
        self._headers = remote_headers(entry, settings)
        self.limits = limits or ServerLimits()
        self.redactor = redactor
        self._on_list_changed = on_list_changed
        self.state = "stopped"
        self.started_at: float | None = None
        self.restarts = 0
        self.starts = 0
        self.calls = 0
        self.last_error: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.protocol_version: str | None = None
        self.tools: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.resource_templates: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._close = asyncio.Event()
        self._write: Any = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    # -- status --------------------------------------------------------------------------

    pid = None  # no local process

    @property
    def uptime(self) -> float | None:
        return time.monotonic() - self.started_at if self.started_at and self.state == "running" else None

    def status(self) -> dict[str, Any]:
        uptime = self.uptime
        return {
            "name": self.name,
            "state": self.state,
            "pid": None,
            "uptime_s": round(uptime, 1) if uptime is not None else None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "calls": self.calls,
        }

    def stderr_tail(self) -> str:
        return ""

    # -- session -------------------------------------------------------------------------

    @property
    def _open(self) -> bool:
        return self.state == "running" and self._task is not None and not self._task.done()

    async def ensure_running(self) -> RemoteServer:
        if self._open:
            return self
        async with self._lock:
            if self._open:
                return self
            if self._stopping:
                raise UpstreamError(f"server {self.name!r} is shutting down", SERVER_UNAVAILABLE)
            await self._end_session()
            if self.starts:
                self.restarts += 1
            self.starts += 1
            self.state = "starting"
            self._close = asyncio.Event()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._session(ready), name=f"remote-{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.limits.start_timeout)
            except TimeoutError:
                await self._end_session()
                self._failed(f"did not answer initialize within {self.limits.start_timeout:g} s")
            except UpstreamError as exc:
                await self._end_session()
                self._failed(exc.message.removeprefix(f"server {self.name!r} "))
            self.state = "running"
            self.started_at = time.monotonic()
            self.last_error = None
            return self

    def _failed(self, reason: str) -> None:
        self.last_error = self.redactor.text(f"{reason} ({self.url})")
        self.state = "failed"
        logger.warning("remote server %s of sandbox %s failed: %s", self.name, self.sandbox, self.last_error)
        raise UpstreamError(f"server {self.name!r} {self.last_error}", SERVER_UNAVAILABLE)

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        timeout = httpx2.Timeout(30.0, read=self.limits.call_timeout + 30.0)
        if self.transport_type == "sse":
            async with sse_client(self.url, headers=self._headers, sse_read_timeout=self.limits.call_timeout + 30) as (
                read,
                write,
            ):
                yield read, write
            return
        async with httpx2.AsyncClient(headers=self._headers, timeout=timeout) as http:
            async with streamable_http_client(self.url, http_client=http) as (read, write):
                yield read, write

    async def _session(self, ready: asyncio.Future[None]) -> None:
        """Owns the transport for the whole session (its task group lives in this one task)."""
        reason = "the session ended"
        try:
            async with self._transport() as (read, write):
                self._write = write
                reader = asyncio.create_task(self._read_loop(read))
                try:
                    await self._initialize()
                    if not ready.done():
                        ready.set_result(None)
                    closing = asyncio.create_task(self._close.wait())
                    await asyncio.wait({closing, reader}, return_when=asyncio.FIRST_COMPLETED)
                    closing.cancel()
                    if reader.done() and not self._close.is_set():
                        reason = "the remote closed the connection"
                finally:
                    reader.cancel()
                    self._write = None
        except Exception as exc:  # the transport failed: connection refused, 401, TLS, ...
            reason = _describe(exc)
        finally:
            self._fail_pending(f"server {self.name!r} stopped: {reason}")
            if not ready.done():
                ready.set_exception(UpstreamError(f"server {self.name!r} could not connect: {reason}"))
            elif not self._stopping and not self._close.is_set() and self.state == "running":
                self.state = "crashed"
                self.last_error = self.redactor.text(reason)
                logger.warning("remote server %s of sandbox %s: %s", self.name, self.sandbox, self.last_error)

    async def _initialize(self) -> None:
        result = await self._request(
            "initialize",
            {
                "protocolVersion": CLIENT_PROTOCOL_VERSION,
                "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": False}},
                "clientInfo": {"name": "mcp-sandbox-gateway", "version": "0.1.0"},
            },
            timeout=self.limits.start_timeout,
        )
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        self.protocol_version = str(result.get("protocolVersion") or CLIENT_PROTOCOL_VERSION)
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await self.refresh_lists()

    async def _end_session(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._close.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- lists ---------------------------------------------------------------------------

    async def _list_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._request(method, params, timeout=self.limits.start_timeout)

    # -- messages ------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        write = self._write
        if write is None:
            raise UpstreamError(f"server {self.name!r} is not connected", SERVER_UNAVAILABLE)
        metadata = None
        if self.protocol_version and message.get("method") != "initialize":
            metadata = ClientMessageMetadata(headers={PROTOCOL_HEADER: self.protocol_version})
        parsed = jsonrpc_message_adapter.validate_python(message)
        try:
            await write.send(SessionMessage(parsed, metadata=metadata))
        except Exception as exc:  # the stream closed under us
            raise UpstreamError(
                f"server {self.name!r} is not connected ({_describe(exc)})", SERVER_UNAVAILABLE
            ) from None

    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float | None,
        on_progress: ProgressHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        if on_progress is not None:
            params = {**params, "_meta": {**(params.get("_meta") or {}), "progressToken": request_id}}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(future, method, on_progress, on_request)
        try:
            await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            await self._cancel(request_id, "timeout")
            raise UpstreamError(
                f"server {self.name!r} did not answer {method} within {timeout:g} s", REQUEST_TIMEOUT
            ) from None
        except asyncio.CancelledError:
            await self._cancel(request_id, "cancelled by the client")
            raise
        finally:
            self._pending.pop(request_id, None)

    async def _cancel(self, request_id: int, reason: str) -> None:
        with contextlib.suppress(UpstreamError):
            await self._send(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": request_id, "reason": reason},
                }
            )

    async def _read_loop(self, read: Any) -> None:
        async for item in read:
            if isinstance(item, Exception):
                logger.debug("remote %s: transport error: %s", self.name, item)
                continue
            message = item.message.model_dump(by_alias=True, mode="json", exclude_none=True)
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if method is not None:
            if message.get("id") is not None:
                self._spawn(self._answer(message["id"], method, params))
            else:
                self._spawn(self._notification(method, params))
            return
        pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if pending is None or pending.future.done():
            return
        if "error" in message:
            reply = ErrorReply.of(message["error"])
            if reply.message == SESSION_GONE:
                self._close.set()  # the remote ended our session: the next call opens a new one
            pending.future.set_exception(reply)
        else:
            result = message.get("result")
            pending.future.set_result(result if isinstance(result, dict) else {})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/progress":
            token = params.get("progressToken")
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is not None and pending.on_progress is not None:
                with contextlib.suppress(Exception):
                    await pending.on_progress(params)
            return
        await self.refresh_on_list_changed(method)

    async def _answer(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if method == "ping":
            reply["result"] = {}
        else:
            handler = next((p.on_request for p in reversed(self._pending.values()) if p.on_request), None)
            try:
                if handler is None:
                    raise UpstreamError(f"no client can answer {method} right now", METHOD_NOT_FOUND)
                reply["result"] = await handler(method, params)
            except UpstreamError as exc:
                reply["error"] = {"code": exc.code, "message": exc.message}
            except Exception:
                reply["error"] = {"code": INTERNAL_ERROR, "message": f"the client could not answer {method}"}
        with contextlib.suppress(UpstreamError):
            await self._send(reply)

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(UpstreamError(reason, SERVER_UNAVAILABLE))

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float | None = None,
        on_progress: ProgressHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> dict[str, Any]:
        await self.ensure_running()
        self.calls += 1
        return await self._request(method, params, timeout or self.limits.call_timeout, on_progress, on_request)

    # -- stop ----------------------------------------------------------------------------

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        self.state = "stopping"
        async with self._lock:
            await self._end_session()
        self.state = "stopped"

    async def idle_stop(self) -> None:
        async with self._lock:
            if self._pending:
                return
            self.state = "stopping"
            await self._end_session()
            self.state = "stopped"


def _describe(exc: BaseException) -> str:
    """One line for an exception from the HTTP stack (groups unwrapped); never a header value."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from the remote"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
