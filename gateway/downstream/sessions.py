"""Light sessions: a handshake-era MCP session kept as a small record until it needs the SDK.

The SDK's session manager gives every session a transport, a server task, a dispatcher and a set
of memory streams as soon as ``initialize`` arrives: about 35 KB per session before it has done
anything. Most sessions of a gateway only ever list and call tools, which the fast path
(``gateway/downstream/fastpath.py``) answers without any of that. So the gateway answers ``initialize``
itself (``gateway/downstream/light.py``) and keeps the session as a :class:`LightSession` (the id, the
credential that opened it, the negotiated version and the client's ``initialize`` params).

The first request the light path does not serve *materializes* the session: an SDK transport is
created under the same session id, registered with the SDK's manager exactly as its own would be,
and the client's original ``initialize`` (and ``notifications/initialized``, and its log level)
are replayed into it; then the request goes to the SDK. The client sees one session throughout.

This module touches the SDK manager's internals (``_server_instances``, ``_session_owners``,
``_task_group``, ``_lifespan_state``, ``_discard_session``); :func:`supported` checks they are
there, and without them every session is the SDK's from the start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import TaskStatus
from mcp.server.runner import serve_loop
from mcp.server.streamable_http import StreamableHTTPServerTransport
from starlette.types import Message, Scope

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

logger = logging.getLogger("gateway.sessions")

# Capabilities that let an upstream ask the client something back: such a client's calls need the
# SDK's request channel (gateway/downstream/fastpath.py), so its session materializes on its first call.
RELAYED_CAPABILITIES = ("sampling", "elicitation", "roots")
_MANAGER_INTERNALS = ("_server_instances", "_session_owners", "_task_group", "_lifespan_state", "_discard_session")


def supported(manager: StreamableHTTPSessionManager) -> bool:
    """Whether light sessions can be materialized into this SDK manager (its internals are as expected)."""
    return (
        not manager.stateless
        and manager.security_settings is None
        and manager.event_store is None
        and all(hasattr(manager, name) for name in _MANAGER_INTERNALS)
    )


class LightSession:
    """One session opened by the light path; the stand-in for the SDK's ``Connection`` until materialized.

    It has the attributes the fast path and the hub read from a connection (``session_id``,
    ``protocol_version``, ``client_capabilities``, ``initialize_accepted``) and the
    ``send_*_list_changed`` methods :meth:`Gateway.notify_list_changed` calls, which go to the
    session's GET stream when one is open.
    """

    __slots__ = (
        "__weakref__",
        "busy",
        "deadline",
        "initialize_params",
        "initialized",
        "log_level",
        "materializing",
        "owner",
        "protocol_version",
        "relays",
        "retired",
        "session_id",
        "stream",
    )

    initialize_accepted = True  # a light session exists only once its initialize was answered
    client_capabilities = None  # read by the fast path through ``relays`` instead

    def __init__(self, session_id: str, owner: Any, protocol_version: str, initialize_params: dict[str, Any]) -> None:
        self.session_id = session_id
        self.owner = owner
        self.protocol_version = protocol_version
        self.initialize_params = initialize_params
        capabilities = initialize_params.get("capabilities")
        declared = capabilities if isinstance(capabilities, dict) else {}
        self.relays = any(declared.get(name) is not None for name in RELAYED_CAPABILITIES)
        self.initialized = False
        self.log_level: str | None = None  # logging/setLevel, replayed at the handover
        self.busy = 0  # requests in flight (a GET stream included): the session does not expire meanwhile
        self.deadline = math.inf
        self.materializing: asyncio.Task[bool] | None = None
        self.stream: Any = None  # the open GET stream (gateway/downstream/light.py), if any
        self.retired = False  # closed, or handed to the SDK: not to be handed over (again)

    async def send_tool_list_changed(self) -> None:
        await self._notify("notifications/tools/list_changed")

    async def send_prompt_list_changed(self) -> None:
        await self._notify("notifications/prompts/list_changed")

    async def send_resource_list_changed(self) -> None:
        await self._notify("notifications/resources/list_changed")

    async def _notify(self, method: str) -> None:
        if self.stream is not None:
            self.stream.push(orjson.dumps({"jsonrpc": "2.0", "method": method}))


class LightSessions:
    """The table of light sessions, their expiry, and their materialization into the SDK's manager."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager
        self.sessions: dict[str, LightSession] = {}
        self.idle_timeout = manager.session_idle_timeout
        self.materialized = 0  # sessions handed to the SDK (tests and diagnosis)
        self.on_close: Callable[[LightSession], None] | None = None  # e.g. forget it as a tracked connection
        self._next_sweep = 0.0

    # -- the table ----------------------------------------------------------------------

    def full(self) -> bool:
        """The SDK's session limit, counting light sessions and the SDK's own together."""
        limit = self.manager.max_sessions
        self.sweep()
        return limit is not None and len(self.sessions) + len(self.manager._server_instances) >= limit

    def open(self, owner: Any, protocol_version: str, initialize_params: dict[str, Any]) -> LightSession:
        self.sweep()
        session = LightSession(uuid.uuid4().hex, owner, protocol_version, initialize_params)
        self.touch(session)
        self.sessions[session.session_id] = session
        logger.info("Opened light session %s", session.session_id)
        return session

    def get(self, session_id: str) -> LightSession | None:
        session = self.sessions.get(session_id)
        if session is not None and session.deadline <= time.monotonic():
            self.close(session)
            return None
        return session

    def close(self, session: LightSession) -> None:
        """Forget the session (DELETE, expiry, handed to the SDK): its id is not the light path's any more."""
        session.retired = True
        if self.on_close is not None:
            self.on_close(session)
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        if session.stream is not None:
            session.stream.end()

    def touch(self, session: LightSession) -> None:
        if self.idle_timeout is not None and not session.busy:
            session.deadline = time.monotonic() + self.idle_timeout

    def hold(self, session: LightSession) -> None:
        session.busy += 1
        session.deadline = math.inf

    def release(self, session: LightSession) -> None:
        session.busy -= 1
        self.touch(session)

    def sweep(self) -> None:
        """Drop expired sessions (at most every few seconds, when a session is opened)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 5.0
        for session in [s for s in self.sessions.values() if s.deadline <= now]:
            self.close(session)

    # -- materializing ------------------------------------------------------------------

    async def materialize(self, session: LightSession, scope: Scope) -> bool:
        """Make ``session`` an SDK session under the same id; False if that failed (it is then gone).

        The work runs as its own task, shielded: a client that goes away meanwhile does not leave
        the session half handed over, and concurrent requests of the session all wait for it.
        """
        if session.materializing is None:
            if session.retired:
                return False  # deleted or expired meanwhile: the SDK answers 404 for its id
            session.materializing = asyncio.ensure_future(self._hand_over(session, scope))
        return await asyncio.shield(session.materializing)

    async def _hand_over(self, session: LightSession, scope: Scope) -> bool:
        ok = False
        try:
            ok = await self._materialize(session, scope)
        except Exception:
            logger.exception("could not hand session %s to the SDK", session.session_id)
        finally:
            self.close(session)
            self.materialized += ok
        return ok

    async def _materialize(self, session: LightSession, scope: Scope) -> bool:
        manager = self.manager
        session_id = session.session_id
        transport = StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=manager.json_response,
            event_store=None,
            security_settings=None,
            retry_interval=manager.retry_interval,
            idle_timeout=manager.session_idle_timeout,
        )
        if session.owner is not None:
            manager._session_owners[session_id] = session.owner
        manager._server_instances[session_id] = transport

        async def run_server(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            # As the SDK manager's own ``_serve_opening_request.run_server``.
            async with transport.connect() as (read_stream, write_stream):
                task_status.started()
                try:
                    idle_scope = transport.idle_scope or anyio.CancelScope()
                    with idle_scope:
                        await serve_loop(
                            manager.app,
                            read_stream,
                            write_stream,
                            lifespan_state=manager._lifespan_state,
                            session_id=session_id,
                        )
                except Exception:
                    logger.exception("Session %s crashed", session_id)
                finally:
                    await manager._discard_session(session_id, transport)

        try:
            assert manager._task_group is not None
            await manager._task_group.start(run_server)
            initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": session.initialize_params}
            if await _replay(transport, scope, initialize, None, session.protocol_version) != 200:
                raise RuntimeError("the SDK refused the replayed initialize")
            if session.initialized:
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                if await _replay(transport, scope, note, session_id, session.protocol_version) != 202:
                    raise RuntimeError("the SDK refused the replayed notifications/initialized")
            if session.log_level is not None:
                params = {"level": session.log_level}
                level = {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": params}
                if await _replay(transport, scope, level, session_id, session.protocol_version) != 200:
                    raise RuntimeError("the SDK refused the replayed logging/setLevel")
            stream, session.stream = session.stream, None
            if stream is not None:  # the open event stream goes on, served by the SDK from now on
                await stream.hand_over(transport)
        except BaseException:
            await manager._discard_session(session_id, transport)
            raise
        logger.info("Session %s handed to the SDK", session_id)
        return True


async def _replay(
    transport: StreamableHTTPServerTransport,
    scope: Scope,
    message: dict[str, Any],
    session_id: str | None,
    protocol_version: str,
) -> int | None:
    """POST ``message`` into ``transport`` as the client once did; the HTTP status it answered (body dropped)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", protocol_version.encode()),
    ]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode()))
    replay_scope = {**scope, "method": "POST", "headers": headers, "query_string": b""}
    body = orjson.dumps(message)
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status: int | None = None

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(sent: Message) -> None:
        nonlocal status
        if sent["type"] == "http.response.start":
            status = sent["status"]

    await transport.handle_request(replay_scope, receive, send)
    return status
