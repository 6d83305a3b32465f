"""The handshake era of streamable HTTP (protocol 2025-03-26, 2025-06-18, 2025-11-25), served by the gateway.

A client opens a session with ``initialize`` (answered with an ``Mcp-Session-Id``), then POSTs
requests, notifications and its answers to server requests on it, may hold one event stream
open with GET (list changes, resource updates), and ends it with DELETE. The session record
lives in a :class:`~gateway.downstream.store.SessionStore`; requests go through
:meth:`Pipeline.handle <gateway.core.pipeline.Pipeline.handle>` like those of every other entry.

Errors keep the shapes clients of the ``mcp`` SDK know: 400 ``Missing session ID``, 404
``Session not found`` (also for a session of another sandbox: it is not told apart from an
unknown one), 406 for an ``Accept`` without JSON and SSE, 409 for a second event stream, 503
``Too many open sessions`` with ``Retry-After``, ``-32601`` for an unknown method, ``-32602`` for
bad params, ``-32800`` for a request the client cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from gateway import __version__
from gateway.core.pipeline import ROUTED_METHODS, Call, Caller, RpcError, SessionState
from gateway.downstream import wire
from gateway.downstream.events import EventStream
from gateway.downstream.relay import LOG_LEVELS
from gateway.downstream.response import LiveSession, PostResponse
from gateway.features import toolcache
from gateway.features.redaction import NO_REDACTION
from gateway.upstream.errors import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, UpstreamError

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from gateway.core.auth import Principal
    from gateway.core.gateway import Gateway
    from gateway.core.pipeline import Pipeline
    from gateway.downstream.store import SessionStore

logger = logging.getLogger("gateway.sessions")

PRINCIPAL_SCOPE_KEY = "gateway.principal"
REQUEST_CANCELLED = -32800  # the answer to a request the client cancelled
SWEEP_SECONDS = 5.0
SERVER_INFO = {"name": "mcp-sandbox-gateway", "version": __version__}
INSTRUCTIONS = "Tools of several MCP servers, named <server>__<tool>."
CAPABILITIES = {
    "completions": {},
    "logging": {},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "tools": {"listChanged": True},
}
# Methods a session serves itself; everything in ROUTED_METHODS goes through the pipeline.
SESSION_METHODS = ("initialize", "ping", "logging/setLevel")


def initialize_result(version: str) -> dict[str, Any]:
    return {
        "capabilities": CAPABILITIES,
        "instructions": INSTRUCTIONS,
        "protocolVersion": version,
        "serverInfo": SERVER_INFO,
    }


class HandshakeEndpoint:
    """POST, GET and DELETE of ``/mcp`` for handshake-era clients (McpGuard has authenticated them)."""

    def __init__(self, gateway: Gateway, pipeline: Pipeline, store: SessionStore) -> None:
        self.gateway = gateway
        self.pipeline = pipeline
        self.store = store
        self.max_sessions = gateway.settings.max_sessions
        self.max_per_sandbox = gateway.settings.max_sessions_per_sandbox
        self.max_body = gateway.settings.max_body_bytes
        self.live: dict[str, LiveSession] = {}
        self.active = 0  # requests that went upstream, in flight (a graceful shutdown waits for them)
        self._next_sweep = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "POST":
            await self.post(scope, receive, send)
        elif method == "GET":
            await self.get(scope, receive, send)
        else:
            await self.delete(scope, send)

    # -- sessions --------------------------------------------------------------------------

    async def session(self, session_id: str, principal: Principal) -> LiveSession | None:
        """The session with this id if the caller's sandbox opened it (else None: a 404 for the caller)."""
        live = self.live.get(session_id)
        state = live.state if live is not None and live.busy else await self.store.get(session_id)
        if state is None or state.sandbox != principal.sandbox:
            if live is not None and state is None:
                await self.end(live)  # expired, not swept yet
            return None
        if live is None:  # known to the store, new to this process
            live = self._attach(state)
        return live

    def _attach(self, state: SessionState) -> LiveSession:
        live = self.live[state.id] = LiveSession(state)
        live.stop_listening = self.gateway.listen_session(state.id, live.notify)
        return live

    async def _open(self, principal: Principal, version: str, params: dict[str, Any]) -> LiveSession | None:
        await self.sweep()
        if self.max_sessions and await self.store.count() >= self.max_sessions:
            logger.warning("Refusing to open a new session: %d sessions are already open", self.max_sessions)
            return None
        if self.max_per_sandbox and await self.store.count(principal.sandbox) >= self.max_per_sandbox:
            logger.warning(
                "Refusing to open a new session of sandbox %s: it has %d open", principal.sandbox, self.max_per_sandbox
            )
            return None
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        state = SessionState(
            id=uuid.uuid4().hex,
            sandbox=principal.sandbox,
            token_id=principal.token_id,
            protocol_version=version,
            capabilities=capabilities if isinstance(capabilities, dict) else {},
            client_info=client_info if isinstance(client_info, dict) else {},
        )
        await self.store.put(state)
        live = self._attach(state)
        logger.info("Opened session %s", state.id)
        return live

    async def end(self, live: LiveSession) -> None:
        """DELETE or expiry: forget the record and end what this process holds for it."""
        await self.store.delete(live.state.id)
        self._forget(live)

    def _forget(self, live: LiveSession) -> None:
        if self.live.get(live.state.id) is live:
            del self.live[live.state.id]
        live.stop_listening()
        live.close()

    async def sweep(self) -> None:
        """Expire idle sessions (at most every few seconds; sessions in use are kept)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        busy = [sid for sid, live in self.live.items() if live.busy]
        for state in await self.store.expire(busy):
            live = self.live.get(state.id)
            if live is not None:
                self._forget(live)
            logger.info("Session %s expired", state.id)

    def end_streams(self) -> None:
        """The gateway is stopping: end every open event stream."""
        for live in list(self.live.values()):
            if live.stream is not None:
                live.stream.end()

    # -- POST ------------------------------------------------------------------------------

    async def post(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = wire.collect(scope)
        if headers is None:
            await wire.respond_error(send, 400, wire.INVALID_REQUEST, "Bad Request: a header is repeated")
            return
        has_json, has_sse = wire.accepts(headers.get("accept", ""))
        if not (has_json and has_sse):
            message = "Not Acceptable: Client must accept both application/json and text/event-stream"
            await wire.respond_error(send, 406, wire.INVALID_REQUEST, message)
            return
        if not wire.json_content_type(headers.get("content_type", "")):
            message = "Unsupported Media Type: Content-Type must be application/json"
            await wire.respond_error(send, 415, wire.INVALID_REQUEST, message)
            return
        try:
            body = await wire.read_body(receive, self.max_body)
        except wire.TooLarge:
            await wire.respond_error(send, 413, wire.INVALID_REQUEST, "Request body too large")
            return
        if body is None:
            return  # the client went away
        try:
            message = wire.orjson.loads(body)
        except wire.orjson.JSONDecodeError as exc:
            await wire.respond_error(send, 400, wire.PARSE_ERROR, f"Parse error: {exc}")
            return
        problem = _malformed(message)
        if problem is not None:
            await wire.respond_error(send, 400, wire.INVALID_REQUEST, f"Invalid Request: {problem}")
            return
        principal: Principal = scope[PRINCIPAL_SCOPE_KEY]
        session_id = headers.get("session_id")
        if session_id is None:
            if message.get("method") == "initialize" and "id" in message:
                await self._initialize(principal, message, send)
            else:
                await wire.respond_error(send, 400, wire.INVALID_REQUEST, "Bad Request: Missing session ID")
            return
        live = await self.session(session_id, principal)
        if live is None:
            await wire.respond_error(send, 404, wire.INVALID_REQUEST, "Session not found")
            return
        await self.store.touch(session_id)
        if "method" not in message:  # the client's answer to one of our requests
            live.resolve(message)
            await wire.respond(send, 202, b"", session_id)
        elif "id" not in message:
            self._notification(live, message)
            await wire.respond(send, 202, b"", session_id)
        else:
            await self._request(principal, live, message, send)

    async def _initialize(self, principal: Principal, message: dict[str, Any], send: Send) -> None:
        params = message.get("params")
        if not wire.valid_params("initialize", LATEST_HANDSHAKE_VERSION, params):
            body = wire.error_body(INVALID_PARAMS, "Invalid request parameters", message["id"], "")
            await wire.respond(send, 200, body)
            return
        assert isinstance(params, dict)
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        live = await self._open(principal, version, params)
        if live is None:
            await wire.respond_error(send, 503, INTERNAL_ERROR, "Too many open sessions", retry_after="5")
            return
        toolcache.warm(self.gateway, principal)  # its first tools/list comes next
        await wire.respond(send, 200, wire.result_body(message["id"], initialize_result(version)), live.state.id)

    def _notification(self, live: LiveSession, message: dict[str, Any]) -> None:
        if message["method"] != "notifications/cancelled":
            return  # initialized, roots/list_changed, progress: nothing to do
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        task = live.calls.get(request_id) if wire.valid_id(request_id) else None
        if task is not None and not task.done() and request_id not in live.cancelled:
            live.cancelled.add(request_id)
            task.cancel()

    async def _request(self, principal: Principal, live: LiveSession, message: dict[str, Any], send: Send) -> None:
        request_id = message["id"]
        method = message["method"]
        params = message.get("params") or {}
        state = live.state
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        response = PostResponse(send, live, request_id, token if wire.valid_id(token) else None, NO_REDACTION)
        live.busy += 1
        task = asyncio.current_task()
        if task is not None:
            live.calls[request_id] = task
        changed = state.version
        try:
            try:
                result = await self._serve(principal, live, method, params, response)
                body = wire.result_body(request_id, result)
            except RpcError as exc:
                body = wire.error_body(exc.code, exc.message, request_id, exc.data)
            except UpstreamError as exc:
                body = wire.error_body(exc.code, exc.message, request_id, exc.data)
            except asyncio.CancelledError:
                if task is None or request_id not in live.cancelled or task.cancelling() != 1:
                    raise  # not (only) the client's notifications/cancelled: a shutdown, a lost client
                task.uncancel()
                body = wire.error_body(REQUEST_CANCELLED, "Request cancelled", request_id)
            except Exception:
                logger.exception("serving %s failed", method)
                body = wire.error_body(INTERNAL_ERROR, f"the gateway could not serve {method}", request_id)
            await response.answer(body)
        finally:
            if live.calls.get(request_id) is task:
                del live.calls[request_id]
            live.cancelled.discard(request_id)
            live.busy -= 1
            if state.version != changed:
                await self.store.put(state)
            else:
                await self.store.touch(state.id)

    async def _serve(
        self, principal: Principal, live: LiveSession, method: str, params: dict[str, Any], response: PostResponse
    ) -> dict[str, Any]:
        state = live.state
        if method == "tools/call":
            if not _call_params(params):
                raise RpcError(INVALID_PARAMS, "Invalid request parameters", "")
        elif method in ROUTED_METHODS or method in SESSION_METHODS:
            if not wire.valid_params(method, state.protocol_version, params or None):
                raise RpcError(INVALID_PARAMS, "Invalid request parameters", "")
        else:
            raise RpcError(METHOD_NOT_FOUND, "Method not found", method)
        if method == "ping":
            return {}
        if method == "initialize":  # again on an open session: the same answer, nothing changes
            requested = params.get("protocolVersion")
            return initialize_result(requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else state.protocol_version)
        if method == "logging/setLevel":
            level = params["level"]
            if level not in LOG_LEVELS:
                raise RpcError(INVALID_PARAMS, "Invalid request parameters", "")
            state.log_level = level
            state.version += 1
            return {}
        response.redactor = self.gateway.router(principal.sandbox).redactor
        caller = Caller(principal, state.protocol_version, state.capabilities, state.client_info, state)
        call = Call(caller, method, params, response)
        upstream = method in ("tools/call", "prompts/get", "resources/read")
        self.active += upstream
        try:
            result = await self.pipeline.handle(call)
        finally:
            self.active -= upstream
        return wire.shaped(method, state.protocol_version, result)

    # -- GET: the session's event stream -----------------------------------------------------

    async def get(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = wire.collect(scope) or {}
        if not wire.accepts(headers.get("accept", ""))[1]:
            message = "Not Acceptable: Client must accept text/event-stream"
            await wire.respond_error(send, 406, wire.INVALID_REQUEST, message)
            return
        session_id = headers.get("session_id")
        if session_id is None:
            await wire.respond_error(send, 400, wire.INVALID_REQUEST, "Bad Request: Missing session ID")
            return
        principal: Principal = scope[PRINCIPAL_SCOPE_KEY]
        live = await self.session(session_id, principal)
        if live is None:
            await wire.respond_error(send, 404, wire.INVALID_REQUEST, "Session not found")
            return
        if live.stream is not None:
            message = "Conflict: Only one SSE stream is allowed per session"
            await wire.respond_error(send, 409, wire.INVALID_REQUEST, message, session_id)
            return
        stream = live.stream = EventStream(send)
        live.busy += 1

        async def listener(method: str, params: dict[str, Any]) -> None:
            live.push(method, params)

        stop_listening = self.gateway.listen(principal.sandbox, listener)
        try:
            await send(wire.sse_start(session_id))
            await stream.run(receive)
        finally:
            stop_listening()
            if live.stream is stream:
                live.stream = None
            live.busy -= 1
            await self.store.touch(session_id)

    # -- DELETE ------------------------------------------------------------------------------

    async def delete(self, scope: Scope, send: Send) -> None:
        headers = wire.collect(scope) or {}
        session_id = headers.get("session_id")
        if session_id is None:
            await wire.respond_error(send, 400, wire.INVALID_REQUEST, "Bad Request: Missing session ID")
            return
        live = await self.session(session_id, scope[PRINCIPAL_SCOPE_KEY])
        if live is None:
            await wire.respond_error(send, 404, wire.INVALID_REQUEST, "Session not found")
            return
        await self.end(live)
        logger.info("Session %s ended by the client", session_id)
        await wire.respond(send, 200, b"", session_id)


def _malformed(message: Any) -> str | None:
    """Why ``message`` is not one JSON-RPC 2.0 request, notification or response (None: it is one)."""
    if isinstance(message, list):
        return "JSON-RPC batches are not supported; send one message per POST"
    if not isinstance(message, dict):
        return "the body must be a JSON-RPC message (an object)"
    if message.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if "method" in message:
        if not isinstance(message["method"], str):
            return "method must be a string"
        if "id" in message and not wire.valid_id(message["id"]):
            return "id must be a string or an integer"
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            return "params must be an object"
        return None
    if "id" not in message or ("result" not in message and "error" not in message):
        return "a message needs a method, or an id with a result or an error"
    return None


def _call_params(params: dict[str, Any]) -> bool:
    """tools/call params, checked without a schema pass (every call comes this way)."""
    if type(params.get("name")) is not str:
        return False
    arguments = params.get("arguments")
    if arguments is not None and type(arguments) is not dict:
        return False
    meta = params.get("_meta")
    if meta is None:
        return True
    if type(meta) is not dict:
        return False
    token = meta.get("progressToken")
    return token is None or (type(token) in (str, int))
