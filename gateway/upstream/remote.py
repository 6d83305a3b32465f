"""An upstream MCP server reached over HTTP (``remote:`` catalog entries) instead of spawned.

A :class:`~gateway.upstream.peer.Peer` over an HTTP transport (``gateway/upstream/http.py``)
does the JSON-RPC bookkeeping exactly as for a process. One upstream session per sandbox: it is
opened on first need, shared by every session and call of the sandbox, and opened again after
the remote ends it.

Credential injection on the wire: ``remote.headers`` values may name the entry's own secrets
(``Bearer $API_TOKEN``); they are filled from the sandbox's secrets here and go only to that
URL. The client's own bearer token never reaches any upstream: this module never sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry
from gateway.features.redaction import NO_REDACTION, Redactor
from gateway.upstream.errors import SERVER_UNAVAILABLE, UpstreamError
from gateway.upstream.http import SseTransport, StreamableHttpTransport
from gateway.upstream.launch import fill_secrets, secret_environment
from gateway.upstream.lists import ServerLists
from gateway.upstream.peer import Peer, ProgressHandler, RequestHandler
from gateway.upstream.server import ServerLimits

logger = logging.getLogger("gateway.upstream")


def remote_headers(entry: CatalogEntry, settings: ServerSettings) -> dict[str, str]:
    """The entry's headers with ``$NAME`` / ``${NAME}`` filled from its own secrets."""
    assert entry.remote is not None
    secrets = secret_environment(entry, settings)
    return {name: fill_secrets(value, secrets) for name, value in entry.remote.headers.items()}


class RemoteServer(ServerLists):
    """Presents the interface the router uses on ``UpstreamServer``, over HTTP."""

    pid = None  # no local process

    def __init__(
        self,
        name: str,
        sandbox: str,
        entry: CatalogEntry,
        settings: ServerSettings,
        limits: ServerLimits | None = None,
        redactor: Redactor = NO_REDACTION,
        on_list_changed: Callable[[Any, str], Awaitable[None]] | None = None,
        on_notification: Callable[[Any, str, dict[str, Any]], Awaitable[None]] | None = None,
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
        self._on_notification = on_notification
        self.state = "stopped"
        self.started_at: float | None = None
        self.restarts = 0
        self.starts = 0
        self.calls = 0
        self.last_error: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.tools: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.resource_templates: list[dict[str, Any]] = []
        self.connection: Peer | None = None
        self._lock = asyncio.Lock()
        self._stopping = False

    # -- status --------------------------------------------------------------------------

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

    def _usable(self) -> Peer | None:
        peer = self.connection
        return peer if peer is not None and not peer.closed and self.state == "running" else None

    async def ensure_running(self) -> Peer:
        if (peer := self._usable()) is not None:
            return peer
        async with self._lock:
            if (peer := self._usable()) is not None:
                return peer
            if self._stopping:
                raise UpstreamError(f"server {self.name!r} is shutting down", SERVER_UNAVAILABLE)
            await self._disconnect()
            if self.starts:
                self.restarts += 1
            self.starts += 1
            self.state = "starting"
            transport: StreamableHttpTransport | SseTransport
            if self.transport_type == "sse":
                transport = SseTransport(self.url, self._headers, self.limits.max_message_bytes)
            else:
                transport = StreamableHttpTransport(self.url, self._headers, self.limits.max_message_bytes)
            peer = Peer(self.name, transport, on_notification=self._handle_notification, on_closed=self._ended)
            self.connection = peer
            peer.start()
            try:
                await asyncio.wait_for(self._handshake(peer, transport), self.limits.start_timeout)
            except TimeoutError:
                await self._disconnect()
                self._failed(f"did not answer initialize within {self.limits.start_timeout:g} s")
            except UpstreamError as exc:
                await self._disconnect()
                self._failed(exc.message.removeprefix(f"server {self.name!r} "))
            self.state = "running"
            self.started_at = time.monotonic()
            self.last_error = None
            return peer

    async def _handshake(self, peer: Peer, transport: StreamableHttpTransport | SseTransport) -> None:
        result = await peer.initialize(timeout=None)
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        if isinstance(transport, StreamableHttpTransport):
            transport.listen()
        await self.refresh_lists()

    def _failed(self, reason: str) -> None:
        self.last_error = self.redactor.text(f"{reason} ({self.url})")
        self.state = "failed"
        logger.warning("remote server %s of sandbox %s failed: %s", self.name, self.sandbox, self.last_error)
        raise UpstreamError(f"server {self.name!r} {self.last_error}", SERVER_UNAVAILABLE)

    async def _ended(self) -> str:
        """The transport stopped delivering: why, and whether that was a crash."""
        peer = self.connection
        broken = peer.transport.broken if peer is not None else None
        if broken is None:
            return "the connection was closed"
        if not self._stopping and self.state == "running":
            self.state = "crashed"
            self.last_error = self.redactor.text(broken)
            logger.warning("remote server %s of sandbox %s: %s", self.name, self.sandbox, self.last_error)
        return broken

    async def _disconnect(self) -> None:
        peer, self.connection = self.connection, None
        if peer is not None:
            await peer.aclose()

    async def _list_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        peer = self.connection
        if peer is None:
            raise UpstreamError(f"server {self.name!r} is not connected", SERVER_UNAVAILABLE)
        return await peer.request(method, params, timeout=self.limits.start_timeout)

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float | None = None,
        on_progress: ProgressHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> dict[str, Any]:
        peer = await self.ensure_running()
        self.calls += 1
        return await peer.request(
            method, params, timeout or self.limits.call_timeout, on_progress=on_progress, on_request=on_request
        )

    # -- stop ----------------------------------------------------------------------------

    def abort_calls(self, reason: str) -> None:
        """Fail the calls in flight at once and start no more (the gateway's grace period is over)."""
        self._stopping = True
        if self.connection is not None:
            self.connection.abort(reason)

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        self.state = "stopping"
        async with self._lock:
            await self._disconnect()
        self.state = "stopped"

    async def idle_stop(self) -> None:
        async with self._lock:
            if self.connection is not None and self.connection.in_flight:
                return
            self.state = "stopping"
            await self._disconnect()
            self.state = "stopped"
