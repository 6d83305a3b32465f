"""The ``/mcp`` endpoint behind :class:`~gateway.web.app.McpGuard`: which protocol era serves a request.

An ``MCP-Protocol-Version`` header naming a version outside the handshake era (2026-07-28, or
one the modern entry must refuse) makes the request a modern one; everything else (no header,
or 2025-03-26 / 2025-06-18 / 2025-11-25) is the handshake era's, served by
:class:`~gateway.downstream.handshake.HandshakeEndpoint`. One path per era, no fallbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from gateway.downstream.handshake import HandshakeEndpoint
from gateway.downstream.store import MemorySessionStore, SessionStore

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from gateway.core.gateway import Gateway
    from gateway.core.pipeline import Pipeline

PROTOCOL_HEADER = b"mcp-protocol-version"
_HANDSHAKE = frozenset(version.encode() for version in HANDSHAKE_PROTOCOL_VERSIONS)


def is_modern(scope: Scope) -> bool:
    """Whether the request belongs to the 2026-07-28 era (by its protocol-version header)."""
    for key, value in scope["headers"]:
        if key == PROTOCOL_HEADER:
            return value not in _HANDSHAKE
    return False


class McpEndpoint:
    """POST/GET/DELETE ``/mcp``: modern-era requests to ``modern``, the rest to the handshake endpoint."""

    def __init__(
        self, gateway: Gateway, pipeline: Pipeline, modern: ASGIApp, store: SessionStore | None = None
    ) -> None:
        # Sessions idle for twice the sandbox idle timeout expire (a sandbox outlives its sessions' pauses).
        self.store = store or MemorySessionStore(gateway.settings.idle_timeout * 2)
        self.handshake = HandshakeEndpoint(gateway, pipeline, self.store)
        self.modern = modern
        gateway.session_counts = self.store.counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_modern(scope):
            await self.modern(scope, receive, send)
        else:
            await self.handshake(scope, receive, send)

    def active_requests(self) -> int:
        """Handshake-era requests in progress that went upstream (a graceful shutdown waits for them)."""
        return self.handshake.active

    def end_streams(self) -> None:
        self.handshake.end_streams()
