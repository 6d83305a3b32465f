"""The 2026-07-28 era of streamable HTTP, served by the gateway itself.

A 2026-07-28 request is one self-contained POST: no ``initialize``, no session; the request's
``params._meta`` carries the client's protocol version, capabilities and info (the envelope), and
the ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers repeat what the body says, as
do ``Mcp-Param-*`` headers for tool arguments whose schema marks them with ``x-mcp-header``.
:class:`ModernEndpoint` gets every request whose ``MCP-Protocol-Version`` is not a handshake-era
version (:class:`gateway.downstream.http.McpEndpoint` decides), checks all of that (the SDK's public
ladder in ``mcp.shared.inbound``), answers ``server/discover`` and ``subscriptions/listen`` itself
and hands every routed method to the gateway's :class:`~gateway.core.pipeline.Pipeline`. Errors
get the status the spec assigns to their code (400 for the envelope and header errors, 404 for an
unknown method).

The answer is ``application/json`` unless something has to reach the client before it: the first
progress or log message of a call (only with a ``progressToken`` / ``logLevel`` in the request)
turns the response into an SSE stream, as does a call still running after ``KEEPALIVE_SECONDS``
(then kept alive with comment pings). Closing the response cancels the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LOG_LEVEL_META_KEY,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_INFO_META_KEY,
)
from mcp_types import methods as spec_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from gateway import __version__
from gateway.core.pipeline import Call, Caller, Pipeline, RpcError
from gateway.downstream.handshake import PRINCIPAL_SCOPE_KEY
from gateway.downstream.modern_exchange import InputExchange, ModernChannel, may_ask
from gateway.downstream.modern_http import Monitor, Reply, Request, plain_error, read_body
from gateway.downstream.modern_listen import INFLIGHT_RELEASE_KEY, ListenStream
from gateway.downstream.relay import LOG_LEVELS, Active

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from gateway.core.auth import Principal

logger = logging.getLogger("gateway.modern")

SERVER_NAME = "mcp-sandbox-gateway"
INSTRUCTIONS = "Tools of several MCP servers, named <server>__<tool>."
# List results may be kept this long by a client (lists change when servers start or change:
# clients that want to know subscribe with subscriptions/listen). Private: they depend on the token.
LIST_TTL_MS = 0
CACHE_SCOPE = "private"
UPSTREAM_BOUND = frozenset({"tools/call", "prompts/get", "resources/read", "completion/complete"})
_LEVEL_SETS = {level: frozenset(LOG_LEVELS[i:]) for i, level in enumerate(LOG_LEVELS)}
_NO_LEVELS: frozenset[str] = frozenset()


def server_info() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__}


def discover_result() -> dict[str, Any]:
    """``server/discover``: what the gateway serves. List changes and resource updates reach clients
    through ``subscriptions/listen``; log messages reach a call that asked for them."""
    capabilities = {
        "completions": {},
        "logging": {},
        "prompts": {"listChanged": True},
        "resources": {"listChanged": True, "subscribe": True},
        "tools": {"listChanged": True},
    }
    return {
        "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
        "capabilities": capabilities,
        "instructions": INSTRUCTIONS,
    }


class Failure(Exception):
    """A request refused before it reached a handler: the JSON-RPC error and its HTTP status."""

    def __init__(self, code: int, message: str, data: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error = RpcError(code, message, data)
        self.status = status if status is not None else ERROR_CODE_HTTP_STATUS.get(code, 200)


def _rejection(rejection: InboundLadderRejection) -> Failure:
    return Failure(rejection.code, rejection.message, rejection.data)


class ModernEndpoint:
    """The ASGI app for 2026-07-28 requests, behind :class:`gateway.web.app.McpGuard`."""

    def __init__(self, pipeline: Pipeline, max_body_bytes: int) -> None:
        self.pipeline = pipeline
        self.gateway = pipeline.gateway
        self.max_body = max_body_bytes
        self.info = server_info()
        self.monitor = Monitor()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            allow = [(b"allow", b"POST")]
            await plain_error(send, 405, INVALID_REQUEST, "2026-07-28 requests are POSTs", allow)
            return
        request = Request(scope)
        has_json, has_sse = request.accepts()
        if not (has_json and has_sse):
            await plain_error(
                send,
                406,
                INVALID_REQUEST,
                "Not Acceptable: Accept must list application/json and text/event-stream",
                [],
            )
            return
        if request.length is not None and request.length > self.max_body:
            await plain_error(send, 413, INVALID_REQUEST, "Payload Too Large: the request body is too large", [])
            return
        raw = await read_body(receive, self.max_body)
        if raw is None:
            await plain_error(send, 413, INVALID_REQUEST, "Payload Too Large: the request body is too large", [])
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await plain_error(send, 400, PARSE_ERROR, "Parse error", [])
            return
        if isinstance(body, dict) and "id" not in body:
            await self._notification(body, request, send)
            return
        request_id = body.get("id") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or body.get("jsonrpc") != "2.0"
            or not isinstance(request_id, str | int)
            or isinstance(request_id, bool)
            or not isinstance(body.get("method"), str)
            or not isinstance(body.get("params", {}), dict)
        ):
            await plain_error(
                send, 400, INVALID_REQUEST, "Body must be a single JSON-RPC request or notification object", []
            )
            return
        reply = Reply(send, request_id)
        principal: Principal = scope[PRINCIPAL_SCOPE_KEY]
        try:
            caller, params = self._check(body, request, principal)
            method: str = body["method"]
            if method == "subscriptions/listen":
                stream = ListenStream(self.gateway, caller, request_id, params, self.info)
                await stream.serve(receive, send, scope.get(INFLIGHT_RELEASE_KEY))
                return
            if method == "server/discover":
                await reply.result(self._shape(method, discover_result()))
                return
            if method in UPSTREAM_BOUND:
                result = await self._upstream_bound(method, params, caller, reply, receive)
            else:
                result = await self.pipeline.handle(Call(caller, method, params))
            await reply.result(self._shape(method, result))
        except Failure as failure:
            await reply.error(failure.error, failure.status)
        except RpcError as error:
            await reply.error(error)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not reply.gone or task is None:
                raise
            task.uncancel()  # the client closed the response: nothing is left to answer
        except Exception:
            logger.exception("a 2026-07-28 %s request failed", body.get("method"))
            await reply.error(RpcError(INTERNAL_ERROR, "Internal server error"))

    async def _notification(self, body: dict[str, Any], request: Request, send: Send) -> None:
        """Client notifications have no meaning at this era (a client cancels by closing the response):
        acknowledged and dropped, as the SDK does, if well-formed and at a version served here."""
        if body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
            await plain_error(
                send, 400, INVALID_REQUEST, "Body must be a single JSON-RPC request or notification object", []
            )
            return
        rejection = unsupported_protocol_version_rejection(request.headers.get("mcp-protocol-version", ""))
        if rejection is not None:
            await plain_error(send, 400, rejection.code, rejection.message, [])
            return
        await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def _check(self, body: dict[str, Any], request: Request, principal: Principal) -> tuple[Caller, dict[str, Any]]:
        """The envelope and header ladder, the ``Mcp-Param-*`` check and the method's params shape."""
        if request.repeated is not None:
            raise Failure(HEADER_MISMATCH, f"{request.repeated} header appears more than once")
        verdict = classify_inbound_request(body, headers=request.headers)
        if isinstance(verdict, InboundLadderRejection):
            raise _rejection(verdict)
        method: str = body["method"]
        params: dict[str, Any] = body["params"]  # the ladder proved params carries a _meta object
        if method == "tools/call":
            _check_call_params(params)  # the hot path: what the spec's model checks, without building it
            self._check_param_headers(params, request, principal)
        else:
            try:
                spec_methods.validate_client_request(method, verdict.protocol_version, params)
            except KeyError:
                raise Failure(METHOD_NOT_FOUND, "Method not found", method) from None
            except ValidationError as exc:
                raise Failure(INVALID_PARAMS, "Invalid request parameters", _first_error(exc)) from None
        capabilities = verdict.client_capabilities if isinstance(verdict.client_capabilities, Mapping) else {}
        info = verdict.client_info if isinstance(verdict.client_info, Mapping) else {}
        return Caller(principal, verdict.protocol_version, capabilities, info), params

    def _check_param_headers(self, params: dict[str, Any], request: Request, principal: Principal) -> None:
        """``Mcp-Param-*`` headers against the arguments, by the schema of the tool as this token sees it.

        A tool not routed yet (its server never ran) or hidden from the token is not checked here:
        the call itself refuses an unknown tool.
        """
        name = params.get("name")
        arguments = params.get("arguments")
        if not isinstance(name, str) or (arguments is not None and not isinstance(arguments, Mapping)):
            return
        if not arguments and not request.param_headers:
            return
        router = self.gateway.live_routers().get(principal.sandbox)
        route = router.tool_routes().get(name) if router is not None else None
        if route is None or not principal.may_use_tool(route.server, route.exposed):
            return
        schema = route.definition.get("inputSchema")
        if not isinstance(schema, Mapping) or (not request.param_headers and not _declares_headers(schema)):
            return
        rejection = validate_mcp_param_headers(schema, arguments or {}, request.headers)
        if rejection is not None:
            raise _rejection(rejection)

    async def _upstream_bound(
        self, method: str, params: dict[str, Any], caller: Caller, reply: Reply, receive: Receive
    ) -> dict[str, Any]:
        """A request that goes to an upstream: relayed notifications, cancelled when the client leaves,
        and (tools/call) ``input_required`` rounds when the upstream asks the client something."""
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        level = meta.get(LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None
        levels = _LEVEL_SETS.get(level, _NO_LEVELS) if isinstance(level, str) else _NO_LEVELS
        self.monitor.track(reply, receive)
        try:
            if method == "tools/call" and (params.get("requestState") is not None or may_ask(caller)):
                return await self._exchange_round(params, caller, reply, token, levels)
            redactor = self.gateway.router(caller.sandbox).redactor
            channel = ModernChannel(reply, caller, token, levels, redactor)
            with Active(self.gateway):
                return await self.pipeline.handle(Call(caller, method, params, channel))
        finally:
            self.monitor.untrack(reply)

    async def _exchange_round(
        self, params: dict[str, Any], caller: Caller, reply: Reply, token: Any, levels: frozenset[str]
    ) -> dict[str, Any]:
        name = params.get("name")
        state = params.get("requestState")
        if state is not None:
            exchange = InputExchange.resume(state, caller.sandbox, "tools/call", str(name))
            exchange.channel.rebind(reply, caller, token, levels)
            exchange.answer(params.get("inputResponses"))
            return await exchange.round()
        redactor = self.gateway.router(caller.sandbox).redactor
        channel = ModernChannel(reply, caller, token, levels, redactor)
        exchange = InputExchange(caller.sandbox, "tools/call", str(name), channel)
        exchange.start(self._counted(Call(caller, "tools/call", params, channel)))
        return await exchange.round()

    async def _counted(self, call: Call) -> dict[str, Any]:
        with Active(self.gateway):
            return await self.pipeline.handle(call)

    def _shape(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """What every 2026-07-28 result carries: ``resultType``, the server's info in ``_meta`` and,
        on cacheable results, ``ttlMs`` / ``cacheScope``."""
        shaped = dict(result)
        shaped.setdefault("resultType", "complete")
        if method in spec_methods.CACHEABLE_METHODS and shaped["resultType"] == "complete":
            shaped.setdefault("ttlMs", LIST_TTL_MS)
            shaped.setdefault("cacheScope", CACHE_SCOPE)
        meta = shaped.get("_meta")
        if not isinstance(meta, dict):
            shaped["_meta"] = {SERVER_INFO_META_KEY: self.info}
        elif SERVER_INFO_META_KEY not in meta:
            shaped["_meta"] = {**meta, SERVER_INFO_META_KEY: self.info}
        return shaped


# inputSchema (by identity; the entry keeps it alive) -> whether it marks any argument with x-mcp-header.
_HEADER_SCHEMAS: dict[int, tuple[Mapping[str, Any], bool]] = {}


def _declares_headers(schema: Mapping[str, Any]) -> bool:
    known = _HEADER_SCHEMAS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    declares = bool(x_mcp_header_map(schema))
    if len(_HEADER_SCHEMAS) >= 4096:
        _HEADER_SCHEMAS.clear()
    _HEADER_SCHEMAS[id(schema)] = (schema, declares)
    return declares


_CALL_FIELDS = (("name", str), ("arguments", dict), ("requestState", str), ("inputResponses", dict))


def _check_call_params(params: dict[str, Any]) -> None:
    """``tools/call`` params as the 2026-07-28 schema has them (the envelope was checked already)."""
    for key, kind in _CALL_FIELDS:
        value = params.get(key)
        if (value is not None or key == "name") and not isinstance(value, kind):
            raise Failure(INVALID_PARAMS, "Invalid request parameters", f"params.{key} must be a {kind.__name__}")
    meta = params["_meta"]
    token = meta.get("progressToken")
    if token is not None and (not isinstance(token, str | int) or isinstance(token, bool)):
        raise Failure(INVALID_PARAMS, "Invalid request parameters", "_meta.progressToken must be a string or integer")
    level = meta.get(LOG_LEVEL_META_KEY)
    if level is not None and level not in LOG_LEVELS:
        raise Failure(INVALID_PARAMS, "Invalid request parameters", f"_meta.{LOG_LEVEL_META_KEY} is not a log level")
    if not isinstance(meta.get(CLIENT_CAPABILITIES_META_KEY), dict):
        raise Failure(INVALID_PARAMS, "Invalid request parameters", "the client capabilities must be an object")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "invalid params"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
