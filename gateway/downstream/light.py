"""The light path: a handshake-era session's opening and its simple requests, without the SDK's session.

:class:`gateway.downstream.fastpath.FastPath` hands these here (it has already checked the headers, the
credential and the session's owner):

- ``initialize`` without a session: answered with the SDK's own result builder, and the session
  is opened as a :class:`gateway.downstream.sessions.LightSession`;
- on a light session: notifications (``notifications/initialized`` recorded, the rest dropped as
  the SDK drops them), ``ping``, ``logging/setLevel``, ``tools/list``, ``prompts/list``, ``resources/list``,
  ``resources/templates/list`` (validated and serialized by the SDK's own functions), the GET
  stream for the gateway's list-changed notifications, and DELETE.

Anything else on a light session materializes it (``gateway/downstream/sessions.py``) and goes to the SDK.
Every answer is ``application/json`` (a POST) or an SSE stream (the GET), as the SDK's are.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import GET_STREAM_KEY
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import ErrorData
from mcp_types import methods as _methods
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from starlette.types import Message, Receive, Scope, Send

from gateway.downstream.mcp_server import PRINCIPAL_SCOPE_KEY
from gateway.downstream.relay import set_log_level
from gateway.downstream.sessions import LightSession, LightSessions
from gateway.features import toolcache

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway
    from gateway.downstream.mcp_server import GatewayServer

logger = logging.getLogger("gateway.light")

LIST_METHODS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle GET stream, as the SDK's (sse-starlette) sends
HANDOVER_POLLS = 500  # x 10 ms: how long a handover waits for the SDK to take an event stream
MAX_ID = 2**63 - 1  # the largest int id the SDK keeps as an int and orjson writes exactly
_open_streams: weakref.WeakSet[_Stream] = weakref.WeakSet()


def end_streams() -> None:
    """End every open light GET stream (the gateway is shutting down), as the SDK's streams are ended."""
    for stream in list(_open_streams):
        stream.end()


def sse_start(session_id: str) -> Message:
    """The start of an SSE response, with the headers the SDK's (sse-starlette) responses have."""
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"cache-control", b"no-cache, no-transform"),
            (b"connection", b"keep-alive"),
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"mcp-session-id", session_id.encode()),
            (b"x-accel-buffering", b"no"),
        ],
    }


def plain_request(message: dict[str, Any]) -> bool:
    """A JSON-RPC request the SDK would take as such: jsonrpc, an int/str id, a method, dict params."""
    if message.get("jsonrpc") != "2.0" or type(message.get("method")) is not str:
        return False
    request_id = message.get("id")
    if type(request_id) is int:
        if not -MAX_ID <= request_id <= MAX_ID:
            return False
    elif type(request_id) is not str:
        return False
    params = message.get("params")
    return (params is None or type(params) is dict) and len(message) == (4 if "params" in message else 3)


def plain_notification(message: dict[str, Any]) -> bool:
    if message.get("jsonrpc") != "2.0" or type(message.get("method")) is not str or "id" in message:
        return False
    params = message.get("params")
    return (params is None or type(params) is dict) and len(message) == (3 if "params" in message else 2)


class LightPath:
    """Serves what a light session needs; says False when a request is not its to serve."""

    def __init__(self, table: LightSessions, server: GatewayServer, gateway: Gateway) -> None:
        self.table = table
        self.server = server
        self.gateway = gateway
        self._runner = ServerRunner(server, None, None)  # type: ignore[arg-type]  # builds results only
        self._initialize_results: dict[str, dict[str, Any]] = {}

    # -- initialize ---------------------------------------------------------------------

    async def initialize(self, scope: Scope, message: dict[str, Any], owner: Any, send: Send) -> bool:
        """Open a light session for a plain ``initialize``; False (nothing sent) if the SDK should judge it."""
        if not plain_request(message) or message["method"] != "initialize" or "initialize" in self.server.cache_hints:
            return False
        params = message.get("params")
        try:
            _methods.validate_client_request("initialize", LATEST_HANDSHAKE_VERSION, params)
            _, negotiated = ServerRunner._negotiate_initialize(params)
            result = self._initialize_result(negotiated, params)
        except Exception:
            return False  # malformed: the SDK's error, from the SDK
        if self.table.full():  # the SDK's answer at its session limit (which counts light sessions too)
            logger.warning("Refusing to open a new session: %d sessions are already open", len(self.table.sessions))
            error = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": types.INTERNAL_ERROR, "message": "Too many open sessions"},
            }
            await self._respond(send, None, 503, orjson.dumps(error))
            return True
        session = self.table.open(owner, negotiated, params or {})
        toolcache.warm(self.gateway, scope[PRINCIPAL_SCOPE_KEY])  # its first tools/list comes next
        await self._answer(send, session.session_id, {"jsonrpc": "2.0", "id": message["id"], "result": result})
        return True

    def _initialize_result(self, negotiated: str, params: Any) -> dict[str, Any]:
        cached = self._initialize_results.get(negotiated)
        if cached is None:
            runner = self._runner
            cached = runner._serialize("initialize", LATEST_HANDSHAKE_VERSION, runner._handle_initialize(params))
            self._initialize_results[negotiated] = cached
        return cached

    # -- requests and notifications on a light session ----------------------------------

    async def post(self, scope: Scope, session: LightSession, message: dict[str, Any], send: Send) -> bool:
        """Serve a POSTed message of a light session; False (nothing sent) if the session must materialize."""
        if "id" not in message:
            if not plain_notification(message):
                return False
            if message["method"] == "notifications/initialized":
                session.initialized = True
            await self._accepted(send, session.session_id)
            return True
        if not plain_request(message):
            return False
        method = message["method"]
        params = message.get("params")
        if method == "ping":
            result = self._shaped(method, session, params, {})
            if result is None:
                return False
        elif method == "logging/setLevel":
            result = self._shaped(method, session, params, {})
            if result is None:
                return False
            set_log_level(session, params["level"])
            session.log_level = params["level"]  # replayed into the SDK's session if it is handed over
        elif method in LIST_METHODS:
            if not self._valid(method, session, params) or method in self.server.cache_hints:
                return False
            try:
                result = _methods.serialize_server_result(
                    method, session.protocol_version, await self._list(scope, session, method)
                )
            except Exception as exc:  # as the SDK's dispatcher answers a handler that raised
                error = handler_exception_to_error_data(exc)
                if error is None:
                    logger.exception("handler for %r raised", method)
                    error = ErrorData(code=0, message=str(exc))
                body = {"jsonrpc": "2.0", "id": message["id"], "error": error.model_dump(exclude_none=True)}
                await self._answer(send, session.session_id, body)
                return True
        else:
            return False
        await self._answer(send, session.session_id, {"jsonrpc": "2.0", "id": message["id"], "result": result})
        return True

    def _valid(self, method: str, session: LightSession, params: Any) -> bool:
        try:
            _methods.validate_client_request(method, session.protocol_version, params)
        except Exception:
            return False
        meta = params.get("_meta") if params else None
        return meta is None or (type(meta) is dict and "progressToken" not in meta)

    def _shaped(self, method: str, session: LightSession, params: Any, result: dict[str, Any]) -> Any:
        if not self._valid(method, session, params):
            return None
        try:
            return _methods.serialize_server_result(method, session.protocol_version, result)
        except Exception:
            return None

    async def _list(self, scope: Scope, session: LightSession, method: str) -> dict[str, Any]:
        """What ``mcp_server``'s list handlers return, dumped as the SDK dumps it."""
        gateway = self.gateway
        principal = scope[PRINCIPAL_SCOPE_KEY]
        router = gateway.router(principal.sandbox)
        gateway.track_connection(principal.sandbox, session)
        model: Any
        if method == "tools/list":
            tools = await gateway.visible_tools(principal, router, session)
            model = types.ListToolsResult.model_validate({"tools": tools})
        elif method == "prompts/list":
            model = types.ListPromptsResult.model_validate({"prompts": await router.list_prompts(principal)})
        elif method == "resources/list":
            model = types.ListResourcesResult.model_validate({"resources": await router.list_resources(principal)})
        else:
            templates = await router.list_resource_templates(principal)
            model = types.ListResourceTemplatesResult.model_validate({"resourceTemplates": templates})
        return model.model_dump(by_alias=True, mode="json", exclude_none=True)

    # -- GET and DELETE -----------------------------------------------------------------

    async def get(self, scope: Scope, session: LightSession, receive: Receive, send: Send) -> None:
        """The session's standalone SSE stream: list-changed notifications until it ends."""
        if session.stream is not None:
            await self._error(send, session.session_id, 409, "Conflict: Only one SSE stream is allowed per session")
            return
        stream = _Stream(scope, send)
        session.stream = stream
        _open_streams.add(stream)
        self.table.hold(session)
        try:
            await send(sse_start(session.session_id))
            await stream.run(receive)
        finally:
            if session.stream is stream:
                session.stream = None
            self.table.release(session)

    async def delete(self, session: LightSession, send: Send) -> None:
        self.table.close(session)
        await self._respond(send, session.session_id, 200, b"")

    # -- answers ------------------------------------------------------------------------

    async def _answer(self, send: Send, session_id: str, body: dict[str, Any]) -> None:
        await self._respond(send, session_id, 200, orjson.dumps(body))

    async def _accepted(self, send: Send, session_id: str) -> None:
        await self._respond(send, session_id, 202, b"")

    async def _error(self, send: Send, session_id: str, status: int, message: str) -> None:
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": types.INVALID_REQUEST, "message": message}}
        await self._respond(send, session_id, status, orjson.dumps(body))

    @staticmethod
    async def _respond(send: Send, session_id: str | None, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if session_id is not None:
            headers.append((b"mcp-session-id", session_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Stream:
    """An open GET stream of a light session: notifications pushed to it are sent as SSE events.

    When the session is handed to the SDK, the stream is handed over too: the SDK's transport
    serves the same open response from then on (its headers were sent already and are the same),
    so the client's event stream never breaks and nothing sent meanwhile is lost.
    """

    __slots__ = ("__weakref__", "done", "ended", "handover", "pending", "scope", "send", "wake")

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope = scope
        self.send = send
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.ended = False
        self.done = False
        self.handover: Any = None

    def push(self, data: bytes) -> None:
        self.pending.append(data)
        self.wake.set()

    def end(self) -> None:
        """Close the stream (the session ended, or the gateway is shutting down)."""
        self.ended = True
        self.wake.set()

    async def hand_over(self, transport: Any) -> None:
        """Let ``transport`` (the session's SDK transport) serve this stream; return once it does."""
        self.handover = transport
        self.wake.set()
        for _ in range(HANDOVER_POLLS):
            if self.done or GET_STREAM_KEY in transport._request_streams:
                return
            await asyncio.sleep(0.01)
        logger.warning("the SDK did not take over an event stream in time")

    async def run(self, receive: Receive) -> None:
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            while True:
                self.wake.clear()  # before the flush: a push from here on wakes the wait below
                if self.pending:
                    pending, self.pending = self.pending, []
                    chunk = b"".join(b"event: message\r\ndata: " + data + b"\r\n\r\n" for data in pending)
                    await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.ended or disconnected.done() or self.handover is not None:
                    break
                waiter = asyncio.ensure_future(self.wake.wait())
                done, _ = await asyncio.wait(
                    (waiter, disconnected), timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if not done:
                    await self.send({"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True})
            if disconnected.done():
                return
            disconnected.cancel()
            if self.handover is not None and not self.ended:
                await self._serve_by_sdk(receive)
            else:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.done = True
            disconnected.cancel()

    async def _serve_by_sdk(self, receive: Receive) -> None:
        started = False

        async def send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True  # ours went out already, with the same headers
                if message["status"] != 200:
                    logger.warning("the SDK refused an event stream handed over (%s)", message["status"])
                return
            await self.send(message)

        await self.handover.handle_request(self.scope, receive, send)


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
