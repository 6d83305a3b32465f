"""The fast path: a plain ``tools/call`` POST on an established session, answered without the SDK's machinery.

Most of what a gateway serves is one kind of request: a handshake-era client (2025-xx) POSTs one
JSON-RPC ``tools/call`` on a session it opened earlier. The SDK's streamable-HTTP stack answers it
through memory streams, a per-request task group, pydantic models at every hop and an SSE response;
that costs several times the rest of the gateway. :class:`FastPath` sits where the SDK's ASGI app
sat (behind :class:`gateway.web.app.McpGuard`, so Origin/Host, the token, the sandbox and the 429 limit
are already checked), answers that one case itself with an ``application/json`` response, and hands
everything else to the SDK unchanged (a body it has read is replayed).

It takes a request only when it is sure the SDK would serve it the same way:

- POST with ``Content-Type: application/json``, an ``Accept`` the SDK accepts, a ``Content-Length``
  within the body limit, at most one of each header that matters;
- an ``Mcp-Session-Id`` the SDK's manager knows, owned by the same credential (a session of another
  sandbox is the SDK's to refuse: 404, as if unknown), not terminated, not expiring;
- no ``MCP-Protocol-Version`` header, or a handshake-era one (2026-07-28 requests go to the SDK:
  their per-request envelope, header/body cross-checks and ``Mcp-Param-*`` validation are its job);
- a session whose connection reached a handler already (so its negotiated version, its
  initialization and its capabilities are known), that finished initializing, speaks a handshake
  version and declared none of sampling, elicitation, roots (an upstream could ask the client back:
  that needs the SDK's request channel);
- one JSON object ``{"jsonrpc": "2.0", "id", "method": "tools/call", "params": {"name", "arguments"?,
  "_meta"?}}`` (a ``progressToken`` a string or an int), nothing else.

What it does is what the SDK path does, in the same order with the same code: the session's idle
timer is held while the call runs (as ``StreamableHTTPServerTransport.handle_request`` does), the
call goes through :meth:`Gateway.call_tool` (discovery tools, route lookup, token claims, tool
integrity, redaction, observers), errors become the same JSON-RPC errors, the result is shaped by
the SDK's own result serializer unless it has the plain shape whose wire form is known (text
content), and a ``notifications/cancelled`` from the client cancels the call as the SDK's dispatcher
would (answered ``-32800``). An upstream log message or progress notification during the call turns
the answer into an SSE stream (as the SDK's would be), so they still reach the client before the result.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError, JSONRPCNotification, JSONRPCResponse
from mcp_types import methods as _methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.downstream import sessions
from gateway.downstream.light import LightPath, plain_request, sse_start
from gateway.downstream.mcp_server import PRINCIPAL_SCOPE_KEY, _Active
from gateway.downstream.relay import LOG_LEVELS, RELAYED_REQUESTS, log_message, progress_message
from gateway.downstream.sessions import LightSession, LightSessions
from gateway.features.redaction import Redactor
from gateway.upstream.errors import METHOD_NOT_FOUND, UpstreamError
from gateway.upstream.peer import CallOrigin, call_origin

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from gateway.core.auth import Principal
    from gateway.core.gateway import Gateway
    from gateway.downstream.mcp_server import GatewayServer

logger = logging.getLogger("gateway.fastpath")

# The SDK's answer to a request the client cancelled (mcp.server.streamable_http.REQUEST_CANCELLED).
REQUEST_CANCELLED = -32800
ALL_LOG_LEVELS = frozenset(LOG_LEVELS)
META_RESERVED_PREFIX = "io.modelcontextprotocol/"
ENV_SWITCH = "MCP_GATEWAY_FASTPATH"  # "0"/"off": every request takes the SDK path (benchmarks, diagnosis)
LIGHT_SWITCH = "MCP_GATEWAY_LIGHT_SESSIONS"  # "0"/"off": every session is the SDK's from its initialize

_HEADERS = {
    b"content-type": "content_type",
    b"accept": "accept",
    b"content-length": "content_length",
    b"mcp-session-id": "session_id",
    b"mcp-protocol-version": "protocol_version",
}
_STREAM_HEADERS = {
    b"accept": "accept",
    b"mcp-session-id": "session_id",
    b"mcp-protocol-version": "protocol_version",
    b"last-event-id": "last_event_id",
}


def _collect(scope: Scope, wanted: dict[bytes, str]) -> dict[str, str] | None:
    """The ``wanted`` headers of the request (by their names there); None if one of them is repeated.

    A repeated header is the SDK's to judge: whichever copy it reads, it is not ours to guess. A
    protocol version other than a handshake-era one (2026-07-28, or one the SDK rejects) is the
    SDK's too.
    """
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = wanted.get(key)
        if name is not None:
            if name in found:
                return None
            found[name] = value.decode("latin-1")
    version = found.get("protocol_version")
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    return found


def enabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def _accepts(accept: str, json_only: bool, sse_only: bool = False) -> bool:
    """The SDK's Accept check (``check_accept_headers`` and ``_validate_accept_header``; GET: SSE only)."""
    types_ = [media.strip().split(";")[0].strip().lower() for media in accept.split(",")]
    wildcard = "*/*" in types_
    has_json = wildcard or any(t in ("application/json", "application/*") for t in types_)
    has_sse = wildcard or any(t in ("text/event-stream", "text/*") for t in types_)
    if sse_only:
        return has_sse
    return has_json if json_only else has_json and has_sse


def _owner(scope: Scope) -> Any:
    """The credential a session is bound to, as the SDK's manager computes it."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


def light_sessions_by_env() -> bool:
    return os.environ.get(LIGHT_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def _json_content_type(value: str) -> bool:
    """Both of the SDK's Content-Type checks: the transport-security one and the POST handler's."""
    if not value.lower().startswith("application/json"):
        return False
    return any(part.strip() == "application/json" for part in value.split(";")[0].split(","))


def plain_result(result: Any) -> dict[str, Any] | None:
    """The SDK's wire form of a result made only of text content (and ``isError``), or None.

    For this shape the SDK's serializer (``CallToolResult`` then the protocol-version surface, both
    dumped with ``exclude_none``) yields exactly ``{"content": [{"text", "type"}...], "isError"}``
    with keys in that order; anything else goes through the serializer itself.
    """
    if type(result) is not dict:
        return None
    content = result.get("content")
    is_error = result.get("isError", False)
    if type(content) is not list or type(is_error) is not bool:
        return None
    for key in result:
        if key != "content" and key != "isError":
            return None
    items = []
    for item in content:
        if type(item) is not dict or len(item) != 2 or item.get("type") != "text":
            return None
        text = item.get("text")
        if type(text) is not str:
            return None
        items.append({"text": text, "type": "text"})
    return {"content": items, "isError": is_error}


def sdk_result(result: Any, version: str) -> dict[str, Any]:
    """What the SDK path does to a handler's result (``mcp_server.call_tool`` then ``ServerRunner._serialize``).

    Raises what it raises: :class:`ValidationError` from ``CallToolResult`` (the SDK answers
    INVALID_PARAMS), :class:`MCPError` when the version surface rejects it (INTERNAL_ERROR).
    """
    dumped = types.CallToolResult.model_validate(result).model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        return _methods.serialize_server_result("tools/call", version, dumped)
    except ValidationError:
        logger.exception("handler for 'tools/call' returned an invalid result")
        raise MCPError(code=INTERNAL_ERROR, message="Handler returned an invalid result") from None


def _error_bytes(request_id: Any, error: ErrorData) -> bytes:
    message = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode()


class _Call:
    """One fast-path call: its client-facing side (the router's ``Downstream``) and its response."""

    __slots__ = (
        "connection",
        "encoded",
        "finished",
        "peer_cancelled",
        "progress_token",
        "redactor",
        "request_id",
        "running",
        "send",
        "session_id",
        "streaming",
        "task",
        "version",
    )

    def __init__(
        self, send: Send, session_id: str, request_id: Any, version: str, connection: Any, progress_token: Any = None
    ) -> None:
        self.send = send
        self.progress_token = progress_token
        self.session_id = session_id
        self.request_id = request_id
        self.version = version
        self.connection = connection
        self.redactor: Redactor | None = None
        self.task: asyncio.Task[Any] | None = None
        self.running = False
        self.peer_cancelled = False
        self.streaming = False
        self.finished = False
        self.encoded: bytes | None = None

    # -- Downstream ---------------------------------------------------------------------

    async def progress(self, params: dict[str, Any]) -> None:
        """Upstream progress, relayed as :meth:`ClientCall.progress` does: the client's token, this POST's stream."""
        if self.progress_token is None or self.finished or self.redactor is None:
            return
        forwarded = progress_message(params, self.progress_token, self.redactor)
        note = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params=forwarded)
        await self._event(note.model_dump_json(by_alias=True, exclude_unset=True).encode(), more=True)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """As :meth:`ClientCall.request` for a client that declared none of the relayed capabilities."""
        needed = RELAYED_REQUESTS.get(method)
        if needed is None:
            raise UpstreamError(f"{method} is not relayed to clients", METHOD_NOT_FOUND)
        raise UpstreamError(f"the client did not declare the {needed} capability", METHOD_NOT_FOUND)

    async def log(self, params: dict[str, Any]) -> None:
        """An upstream log message during the call: to the client on this POST's (now SSE) response."""
        if self.finished or self.redactor is None:
            return
        forwarded = log_message(params, self.connection, ALL_LOG_LEVELS, self.redactor)
        if forwarded is None:
            return
        note = JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params=forwarded)
        await self._event(note.model_dump_json(by_alias=True, exclude_unset=True).encode(), more=True)

    # -- the result ---------------------------------------------------------------------

    def encode(self, result: dict[str, Any]) -> bytes | None:
        """The JSON-RPC response for ``result``, as the SDK would write it; None if the SDK would fail it."""
        if self.encoded is not None:
            return self.encoded
        plain = plain_result(result)
        try:
            if plain is not None:
                body = orjson.dumps({"jsonrpc": "2.0", "id": self.request_id, "result": plain})
            else:
                shaped = sdk_result(result, self.version)
                response = JSONRPCResponse(jsonrpc="2.0", id=self.request_id, result=shaped)
                body = response.model_dump_json(by_alias=True, exclude_unset=True).encode()
        except (ValidationError, MCPError, orjson.JSONEncodeError, TypeError, ValueError):
            return None
        self.encoded = body
        return body

    async def answer(self, body: bytes) -> None:
        if self.streaming:
            await self._event(body, more=False)
            return
        self.finished = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"mcp-session-id", self.session_id.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def _event(self, data: bytes, more: bool) -> None:
        if self.finished:
            return
        if not self.streaming:
            self.streaming = True
            await self.send(sse_start(self.session_id))
        if not more:
            self.finished = True
        event = b"event: message\r\ndata: " + data + b"\r\n\r\n"
        await self.send({"type": "http.response.body", "body": event, "more_body": more})


class FastPath:
    """The ASGI app behind :class:`McpGuard`: the fast path, else the SDK's session manager."""

    def __init__(
        self,
        manager: StreamableHTTPSessionManager,
        server: GatewayServer,
        gateway: Gateway,
        enabled: bool | None = None,
    ) -> None:
        self.manager = manager
        self.sdk: ASGIApp = manager.asgi_app
        self.server = server
        self.gateway = gateway
        self.enabled = enabled_by_env() if enabled is None else enabled
        # (session id, request id) -> the call in flight, for the client's notifications/cancelled.
        self.calls: dict[tuple[str, Any], _Call] = {}
        self.served = 0  # calls answered here (tests and diagnosis)
        # Light sessions (gateway/downstream/sessions.py): sessions opened here, handed to the SDK on demand.
        light = self.enabled and sessions.supported(manager) and light_sessions_by_env()
        self.sessions: LightSessions | None = LightSessions(manager) if light else None
        if self.sessions is not None:
            self.sessions.on_close = gateway.untrack_connection
        self.light = LightPath(self.sessions, server, gateway) if self.sessions is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled:
            await self.sdk(scope, receive, send)
            return
        if scope["method"] != "POST":
            if self.sessions is None or not await self._light_stream(scope, receive, send):
                await self.sdk(scope, receive, send)
            return
        headers = self._headers(scope)
        if headers is None or not self._postable(headers):
            await self.sdk(scope, receive, send)
            return
        session_id = headers.get("session_id")
        if session_id is None:
            if self.sessions is None:
                await self.sdk(scope, receive, send)
            else:
                await self._open(scope, receive, send, headers)
            return
        light = self._light_session(scope, session_id)
        if light is not None:
            await self._light_post(scope, receive, send, headers, light)
            return
        session = self._session(scope, session_id)
        if session is None:
            await self.sdk(scope, receive, send)
            return
        transport, connection = session
        body = await self._read_body(receive, int(headers["content_length"]))
        if body is None:  # the client went away, or sent more than it declared
            return
        message = self._parse(body)
        if message is not None and message.get("method") == "notifications/cancelled" and "id" not in message:
            self._peer_cancel(session_id, message.get("params"))
            message = None
        call = self._call_request(message) if message is not None else None
        if call is None:
            await self.sdk(scope, _replay(body, receive), send)
            return
        request_id, name, arguments, meta = call
        await self._serve(scope, send, transport, connection, session_id, request_id, name, arguments, meta)

    # -- light sessions ------------------------------------------------------------------

    async def _open(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """A POST without a session: a plain ``initialize`` opens a light session, anything else is the SDK's."""
        assert self.light is not None
        body = await self._read_body(receive, int(headers["content_length"]))
        if body is None:
            return
        message = self._parse(body)
        if message is None or not await self.light.initialize(scope, message, _owner(scope), send):
            await self.sdk(scope, _replay(body, receive), send)

    def _light_session(self, scope: Scope, session_id: str) -> LightSession | None:
        """The light session with this id, if the request's credential opened it (else the SDK answers 404)."""
        if self.sessions is None:
            return None
        light = self.sessions.get(session_id)
        if light is None or light.owner != _owner(scope):
            return None
        return light

    async def _light_post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], light: LightSession
    ) -> None:
        assert self.sessions is not None and self.light is not None
        self.sessions.touch(light)
        body = await self._read_body(receive, int(headers["content_length"]))
        if body is None:
            return
        # Closed or being handed over while its body arrived: the SDK's (a 404, or its session now).
        message = self._parse(body) if not light.retired and light.materializing is None else None
        if message is not None:
            if message.get("method") == "notifications/cancelled" and "id" not in message:
                self._peer_cancel(light.session_id, message.get("params"))
            call = self._call_request(message)
            if call is not None and not light.relays and not call[1].startswith("gateway__"):
                request_id, name, arguments, meta = call
                await self._serve(scope, send, light, light, light.session_id, request_id, name, arguments, meta)
                return
            if call is None and await self.light.post(scope, light, message, send):
                return
        # Not the light path's to serve: the session becomes the SDK's, then the SDK answers this request.
        await self.sessions.materialize(light, scope)
        await self.sdk(scope, _replay(body, receive), send)

    async def _light_stream(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """GET (the event stream) and DELETE of a light session; False if the request is the SDK's."""
        assert self.sessions is not None and self.light is not None
        found = _collect(scope, _STREAM_HEADERS)
        if found is None or "session_id" not in found:
            return False
        light = self._light_session(scope, found["session_id"])
        if light is None:
            return False
        if light.materializing is not None:
            await self.sessions.materialize(light, scope)  # wait for it: the SDK has the session then
            return False
        if scope["method"] == "DELETE":
            await self.light.delete(light, send)
            return True
        if scope["method"] != "GET" or "last_event_id" in found or not _accepts(found.get("accept", ""), False, True):
            await self.sessions.materialize(light, scope)  # resumption, a 406 or a 405: the SDK's
            return False
        await self.light.get(scope, light, receive, send)
        return True

    # -- eligibility ---------------------------------------------------------------------

    @staticmethod
    def _headers(scope: Scope) -> dict[str, str] | None:
        found = _collect(scope, _HEADERS)
        if found is None or "content_length" not in found:
            return None
        if not _json_content_type(found.get("content_type", "")):
            return None
        return found

    def _postable(self, headers: dict[str, str]) -> bool:
        """The manager-wide conditions of a POST the fast path may take (the SDK's own checks, passed)."""
        manager = self.manager
        if manager.stateless or manager.security_settings is not None or "tools/call" in self.server.cache_hints:
            return False
        if not _accepts(headers.get("accept", ""), manager.json_response):
            return False
        length = headers["content_length"]
        return length.isdigit() and int(length) <= manager.max_request_body_size

    def _session(self, scope: Scope, session_id: str) -> tuple[Any, Any] | None:
        manager = self.manager
        transport = manager._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return None
        if _owner(scope) != manager._session_owners.get(session_id):
            return None  # another credential's session: the SDK answers 404, as for an unknown one
        idle_scope = transport.idle_scope
        if idle_scope is not None and idle_scope.cancel_called:
            return None
        connection = self.server.session_connections.get(session_id)
        if connection is None or not connection.initialize_accepted:
            return None
        if connection.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
        declared = connection.client_capabilities
        if declared is not None and any(getattr(declared, c, None) is not None for c in RELAYED_REQUESTS.values()):
            return None  # the upstream might ask this client something: the SDK's request channel
        return transport, connection

    @staticmethod
    async def _read_body(receive: Receive, length: int) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > length:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any] | None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return message if type(message) is dict else None

    @staticmethod
    def _call_request(message: dict[str, Any]) -> tuple[Any, str, dict[str, Any] | None, dict[str, Any] | None] | None:
        """(id, name, arguments, forwarded _meta) of a plain tools/call, else None (the SDK decides)."""
        if message.get("method") != "tools/call" or not plain_request(message):
            return None
        request_id = message["id"]
        params = message.get("params")
        if params is None:
            return None
        for key in params:
            if key not in ("name", "arguments", "_meta"):
                return None  # task, requestState, inputResponses, ...: the SDK's
        name = params.get("name")
        arguments = params.get("arguments")
        meta = params.get("_meta")
        if type(name) is not str or (arguments is not None and type(arguments) is not dict):
            return None
        if meta is not None:
            if type(meta) is not dict or type(meta.get("progressToken", "")) not in (str, int):
                return None  # a token the SDK would refuse (or a null one): the SDK's to answer
            if any(key.startswith(META_RESERVED_PREFIX) for key in meta):
                return None
            # As mcp_server._meta: the SDK's dump (exclude_none) drops top-level nulls.
            meta = {k: v for k, v in meta.items() if v is not None} or None
        return request_id, name, arguments, meta

    # -- cancellation --------------------------------------------------------------------

    def _peer_cancel(self, session_id: str, params: Any) -> None:
        """The client cancelled a request: if it is one of ours, stop it (the SDK still gets the notification)."""
        if type(params) is not dict:
            return
        request_id = params.get("requestId")
        if type(request_id) not in (int, str):
            return
        call = self.calls.get((session_id, coerce_request_id(request_id)))
        if call is not None and call.running and not call.peer_cancelled and call.task is not None:
            call.peer_cancelled = True
            call.task.cancel()

    # -- serving -------------------------------------------------------------------------

    async def _serve(
        self,
        scope: Scope,
        send: Send,
        transport: Any,
        connection: Any,
        session_id: str,
        request_id: Any,
        name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None,
    ) -> None:
        token = meta.get("progressToken") if meta else None
        call = _Call(send, session_id, request_id, connection.protocol_version, connection, token)
        key = (session_id, coerce_request_id(request_id))
        self.calls[key] = call
        # As StreamableHTTPServerTransport.handle_request: a request in flight holds the session open.
        light = transport if type(transport) is LightSession else None
        idle_scope = transport.idle_scope if light is None and transport._idle_timeout is not None else None
        if light is not None:
            assert self.sessions is not None
            self.sessions.hold(light)
        elif idle_scope is not None:
            transport._requests_in_flight += 1
            idle_scope.deadline = math.inf
        try:
            body = await self._run(scope, call, name, arguments, meta)
            await call.answer(body)
            self.served += 1
        finally:
            if self.calls.get(key) is call:
                del self.calls[key]
            if light is not None:
                assert self.sessions is not None
                self.sessions.release(light)
            elif idle_scope is not None:
                transport._requests_in_flight -= 1
                if not transport._requests_in_flight:
                    idle_scope.deadline = anyio.current_time() + transport._idle_timeout

    async def _run(
        self,
        scope: Scope,
        call: _Call,
        name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None,
    ) -> bytes:
        """The handler (``mcp_server.call_tool``) and the dispatcher's error boundary, for one call."""
        gateway = self.gateway
        principal: Principal = scope[PRINCIPAL_SCOPE_KEY]
        try:
            with _Active(gateway):
                router = gateway.router(principal.sandbox)
                gateway.track_connection(principal.sandbox, call.connection)
                call.redactor = router.redactor
                call.task = asyncio.current_task()
                relay = call_origin.set(CallOrigin(("session", call.session_id), call.log))
                call.running = True
                try:
                    result = await gateway.call_tool(
                        principal, router, name, arguments, meta, call, call.session_id, call.encode
                    )
                except UpstreamError as exc:
                    raise MCPError(exc.code, exc.message, exc.data) from None
                finally:
                    call.running = False
                    call_origin.reset(relay)
            if call.peer_cancelled:  # cancelled, though the call got to finish: the SDK answers the cancel
                raise asyncio.CancelledError
            body = call.encode(result)
            if body is None:  # the SDK's serializer refuses it: raise what it raises
                shaped = sdk_result(result, call.version)
                body = (
                    JSONRPCResponse(jsonrpc="2.0", id=call.request_id, result=shaped)
                    .model_dump_json(by_alias=True, exclude_unset=True)
                    .encode()
                )
            return body
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not call.peer_cancelled or task is None:
                raise
            if task.cancelling():
                task.uncancel()  # the client's cancel, not ours: answer it as the SDK does
            return _error_bytes(call.request_id, ErrorData(code=REQUEST_CANCELLED, message="Request cancelled"))
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:
                logger.exception("handler for 'tools/call' raised")
                error = ErrorData(code=0, message=str(exc))
            return _error_bytes(call.request_id, error)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read once, then whatever comes next (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
