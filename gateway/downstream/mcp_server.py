"""The client-facing MCP server: the SDK's low-level ``Server`` whose handlers route to a sandbox.

The SDK owns the wire (both protocol eras, sessions, SSE, protocol-version checks); these
handlers only find the caller's sandbox (from the authenticated request, never from anything
the client can choose) and hand the request to that sandbox's router.

What an upstream sends back during a call (progress, log messages, sampling and elicitation
requests) goes to the client that made the call, on that call's own response stream. On
handshake-era connections (2025-xx) a sampling/elicitation request is relayed as a
server-to-client request; on 2026-07-28 connections, which have no such requests, the call
answers with an ``InputRequiredResult`` while the upstream call stays parked, and the client's
retry (carrying the responses and our ``requestState``) resumes it: see :class:`InputExchange`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import secrets
import warnings
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway import __version__
from gateway.core.auth import Principal
from gateway.downstream.relay import LOG_LEVELS, RELAYED_REQUESTS, log_message, progress_message, set_log_level
from gateway.features.redaction import NO_REDACTION, Redactor
from gateway.upstream.errors import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, UpstreamError
from gateway.upstream.peer import CallOrigin, call_origin

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from gateway.core.gateway import Gateway
    from gateway.core.router import SandboxRouter

logger = logging.getLogger("gateway.mcp")

PRINCIPAL_SCOPE_KEY = "gateway.principal"
# The request's principal, for SDK hooks that get no request (get_tool_input_schema). Set by
# gateway.web.app.McpGuard in the request's own task (uvicorn runs each request in a fresh task, so a
# value never outlives its request).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


class GatewayServer(Server[Any]):
    """Advertises ``listChanged`` for tools, prompts and resources: upstream changes are relayed."""

    session_connections: weakref.WeakValueDictionary[str, Any]

    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(options, *args, **kwargs)


# A parked call (waiting for a 2026-era client to retry with input) is cancelled after this long.
INPUT_WAIT_SECONDS = 600.0

# Requests being served that go upstream (tools/call, prompts/get, resources/read), per gateway:
# a graceful shutdown waits for these, not for idle event streams.
_active: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def active_requests(gateway: Gateway) -> int:
    """Upstream-bound requests in progress, including 2026-era calls parked for client input."""
    parked = sum(1 for e in InputExchange.parked.values() if e.task is not None and not e.task.done())
    return _active.get(gateway, 0) + parked


class _Active:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def __enter__(self) -> None:
        _active[self._gateway] = _active.get(self._gateway, 0) + 1

    def __exit__(self, *exc: object) -> None:
        _active[self._gateway] = _active.get(self._gateway, 1) - 1


class ClientCall:
    """Relays one call's progress, log messages and server requests back to the client that made it.

    A 2026-era call that needs input spans several client requests (rounds); :meth:`rebind`
    points the relay at the current one.
    """

    def __init__(self, ctx: ServerRequestContext[Any], progress_token: Any, redactor: Redactor = NO_REDACTION) -> None:
        self._ctx = ctx
        self._token = progress_token
        self._redactor = redactor
        self.exchange: InputExchange | None = None

    def rebind(self, ctx: ServerRequestContext[Any], progress_token: Any) -> None:
        self._ctx = ctx
        self._token = progress_token

    @property
    def modern(self) -> bool:
        return self._ctx.session.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def progress(self, params: dict[str, Any]) -> None:
        if self._token is None:
            return
        forwarded = progress_message(params, self._token, self._redactor)
        # The request-scoped channel puts it on the stream of the POST that made the call.
        await self._ctx.session._request_outbound.notify("notifications/progress", forwarded)

    async def log(self, params: dict[str, Any]) -> None:
        """An upstream ``notifications/message``, if the client asked for that level."""
        session = self._ctx.session
        # 2026-07-28: the request's own log-level opt-in (the SDK computed it for this request).
        allowed = getattr(session, "_allowed_log_levels", frozenset(LOG_LEVELS))
        forwarded = log_message(params, session._connection, allowed, self._redactor)
        if forwarded is not None:
            await session._request_outbound.notify("notifications/message", forwarded)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self._ctx.session
        needed = RELAYED_REQUESTS.get(method)
        if needed is None:
            raise UpstreamError(f"{method} is not relayed to clients", METHOD_NOT_FOUND)
        declared = session.client_capabilities
        if declared is None or getattr(declared, needed, None) is None:
            raise UpstreamError(f"the client did not declare the {needed} capability", METHOD_NOT_FOUND)
        params = self._redactor.value(params)
        if self.modern:
            if self.exchange is None:
                raise UpstreamError(f"{method} cannot be relayed for this request", METHOD_NOT_FOUND)
            return await self.exchange.ask(method, params)
        if not session.can_send_request:
            raise UpstreamError(f"the client's connection cannot receive {method} requests", METHOD_NOT_FOUND)
        try:
            result = await session._request_outbound.send_raw_request(method, params, None)
        except MCPError as exc:
            raise UpstreamError(exc.message, exc.code) from None
        return result if isinstance(result, dict) else {}


class InputExchange:
    """A 2026-era tools/call whose upstream asked the client something (sampling, elicitation).

    The upstream call runs in its own task. Each round (the first request, then every retry)
    waits until the call finishes or the upstream asks something; in the latter case the round
    answers ``InputRequiredResult`` with the open questions and a random ``requestState`` that
    names this exchange. The retry's ``inputResponses`` answer the upstream's pending requests.
    The state is bound to the sandbox and the tool; an exchange nobody resumes is cancelled
    after ``INPUT_WAIT_SECONDS`` (the upstream then gets ``notifications/cancelled``).
    """

    parked: dict[str, InputExchange] = {}

    def __init__(self, sandbox: str, tool: str, call: ClientCall) -> None:
        self.sandbox = sandbox
        self.tool = tool
        self.call = call
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self.state: str | None = None
        self._keys = itertools.count(1)
        self._open: dict[str, tuple[str, dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._asked = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        call.exchange = self

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        key = f"{method.split('/')[0]}-{next(self._keys)}"
        self._open[key] = (method, params, future)
        self._asked.set()
        try:
            return await future
        finally:
            self._open.pop(key, None)

    def answer(self, responses: dict[str, Any]) -> None:
        for key, response in responses.items():
            entry = self._open.get(key)
            if entry is None or entry[2].done():
                continue
            data = response
            if hasattr(response, "model_dump"):
                data = response.model_dump(by_alias=True, mode="json", exclude_none=True)
            entry[2].set_result(data if isinstance(data, dict) else {})

    async def round(self) -> dict[str, Any] | types.InputRequiredResult:
        """Wait for the call to finish (its result) or to need input (an InputRequiredResult)."""
        assert self.task is not None
        self._unpark()
        try:
            while not self.task.done():
                if any(not f.done() for _, _, f in self._open.values()):
                    break
                self._asked.clear()
                waiter = asyncio.ensure_future(self._asked.wait())
                try:
                    await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        except asyncio.CancelledError:
            self.task.cancel()  # the client gave up on this round: the upstream call goes too
            raise
        if self.task.done():
            return self.task.result()
        requests = {key: {"method": m, "params": p} for key, (m, p, f) in self._open.items() if not f.done()}
        self.state = "gw1." + secrets.token_urlsafe(32)
        self.parked[self.state] = self
        self._expiry = asyncio.get_running_loop().call_later(INPUT_WAIT_SECONDS, self._expire)
        return types.InputRequiredResult.model_validate({"inputRequests": requests, "requestState": self.state})

    def _unpark(self) -> None:
        if self.state is not None:
            self.parked.pop(self.state, None)
            self.state = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        logger.info("a call waiting for client input on sandbox %s expired", self.sandbox)
        self._unpark()
        if self.task is not None:
            self.task.cancel()

    def finished(self, _task: asyncio.Task[Any]) -> None:
        """The upstream call ended (result, error, timeout) while possibly parked: forget it."""
        self._unpark()
        for _, _, future in self._open.values():
            if not future.done():
                future.cancel()

    @classmethod
    def resume(cls, state: str, sandbox: str, tool: str) -> InputExchange:
        exchange = cls.parked.get(state)
        if exchange is None or exchange.sandbox != sandbox or exchange.tool != tool:
            raise MCPError(INVALID_PARAMS, "Invalid or expired requestState", {"reason": "invalid_request_state"})
        return exchange


def _principal(ctx: ServerRequestContext[Any]) -> Principal:
    request = ctx.request
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        # Never reached behind the auth middleware; refuse rather than guess a sandbox.
        raise MCPError(INTERNAL_ERROR, "request carries no authenticated sandbox")
    return principal


def _owner(ctx: ServerRequestContext[Any], principal: Principal) -> tuple[str, ...]:
    """Which client a call comes from, for routing what its upstream asks back.

    A handshake-era client has a session. A 2026-07-28 request stands alone (each one may come
    with a fresh connection object), so its client is known only by its credential.
    """
    if not ClientCall(ctx, None).modern:
        connection = ctx.session._connection
        return ("session", connection.session_id or str(id(connection)))
    return ("token", principal.sandbox, principal.token_id or "")


def _meta(params: Any) -> dict[str, Any] | None:
    """The request's ``_meta`` as it was on the wire (``progressToken``, not the SDK's ``progress_token``)."""
    if params is None or getattr(params, "meta", None) is None:
        return None
    dumped = params.model_dump(by_alias=True, mode="json", exclude_none=True, include={"meta"})
    meta = dumped.get("_meta")
    return meta if isinstance(meta, dict) else None


@contextlib.contextmanager
def upstream_errors() -> Iterator[None]:
    """An upstream failure becomes the JSON-RPC error the client gets (its code and message kept)."""
    try:
        yield
    except UpstreamError as exc:
        raise MCPError(exc.code, exc.message, exc.data) from None


def tool_input_schema(gateway: Gateway, name: str) -> Mapping[str, Any] | None:
    """Tool ``name``'s inputSchema as the calling token sees it, for the SDK's ``Mcp-Param-*`` header check.

    Without this hook the SDK lists every tool (our tools/list handler, with pydantic models of
    all of them) before each 2026-07-28 ``tools/call`` with arguments, just to find one schema.
    None (the SDK then skips the check; the call itself still rejects an unknown tool): no request
    principal, or a tool not known yet (its server never ran) or not visible to the token.
    """
    principal = current_principal.get()
    if principal is None:
        return None
    router = gateway.live_routers().get(principal.sandbox)
    route = router.tool_routes().get(name) if router is not None else None
    if route is None or not principal.may_use_tool(route.server, route.exposed):
        return None
    schema = route.definition.get("inputSchema")
    return schema if isinstance(schema, Mapping) else None


def build_server(gateway: Gateway) -> GatewayServer:
    # Session id -> the SDK's connection of that session, for the fast path (gateway/downstream/fastpath.py):
    # a session is known there once one of its requests reached a handler here.
    connections: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    async def router_for(ctx: ServerRequestContext[Any]) -> tuple[Principal, SandboxRouter]:
        principal = _principal(ctx)
        with upstream_errors():
            router = gateway.router(principal.sandbox)
        connection = ctx.session._connection
        gateway.track_connection(principal.sandbox, connection)
        if connection.session_id is not None:
            connections[connection.session_id] = connection
        return principal, router

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        principal, router = await router_for(ctx)
        tools = await gateway.visible_tools(principal, router, None)  # 2026-07-28: no session
        return types.ListToolsResult.model_validate({"tools": tools})

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        with _Active(gateway):
            return await _call_tool(ctx, params)

    async def _call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        principal, router = await router_for(ctx)
        meta = _meta(params)
        token = (meta or {}).get("progressToken")
        if params.request_state is not None:
            exchange = InputExchange.resume(params.request_state, principal.sandbox, params.name)
            exchange.call.rebind(ctx, token)
            exchange.answer(params.input_responses or {})
            return await _finish(exchange)
        call = ClientCall(ctx, token, router.redactor)
        session_id = None  # 2026-07-28 requests (the only ones served here) have no session
        relay = call_origin.set(CallOrigin(_owner(ctx, principal), call.log))
        try:
            work = gateway.call_tool(principal, router, params.name, params.arguments, meta, call, session_id)
            if not call.modern:
                with upstream_errors():
                    result = await work
                return types.CallToolResult.model_validate(result)
            exchange = InputExchange(principal.sandbox, params.name, call)
            exchange.task = asyncio.ensure_future(work)
            exchange.task.add_done_callback(exchange.finished)
        finally:
            call_origin.reset(relay)
        return await _finish(exchange)

    async def _finish(exchange: InputExchange) -> types.CallToolResult | types.InputRequiredResult:
        with upstream_errors():
            outcome = await exchange.round()
        if isinstance(outcome, types.InputRequiredResult):
            return outcome
        return types.CallToolResult.model_validate(outcome)

    async def set_logging_level(
        ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        _principal(ctx)
        set_log_level(ctx.session._connection, str(params.level))
        return types.EmptyResult()

    async def list_prompts(ctx: ServerRequestContext[Any], params: Any) -> types.ListPromptsResult:
        principal, router = await router_for(ctx)
        return types.ListPromptsResult.model_validate({"prompts": await router.list_prompts(principal)})

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
        principal, router = await router_for(ctx)
        with upstream_errors():
            with _Active(gateway):
                result = await router.get_prompt(principal, params.name, params.arguments, _meta(params))
        return types.GetPromptResult.model_validate(result)

    async def list_resources(ctx: ServerRequestContext[Any], params: Any) -> types.ListResourcesResult:
        principal, router = await router_for(ctx)
        return types.ListResourcesResult.model_validate({"resources": await router.list_resources(principal)})

    async def list_resource_templates(ctx: ServerRequestContext[Any], params: Any) -> types.ListResourceTemplatesResult:
        principal, router = await router_for(ctx)
        templates = await router.list_resource_templates(principal)
        return types.ListResourceTemplatesResult.model_validate({"resourceTemplates": templates})

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        principal, router = await router_for(ctx)
        with upstream_errors():
            with _Active(gateway):
                result = await router.read_resource(principal, str(params.uri), _meta(params))
        return types.ReadResourceResult.model_validate(result)

    async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        principal, router = await router_for(ctx)
        with upstream_errors():
            await router.subscribe(principal, str(params.uri), ctx.session._connection)
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        principal, router = await router_for(ctx)
        with upstream_errors():
            await router.unsubscribe(principal, str(params.uri), ctx.session._connection)
        return types.EmptyResult()

    async def complete(ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
        principal, router = await router_for(ctx)
        dumped = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        with upstream_errors():
            result = await router.complete(principal, dumped["ref"], dumped["argument"], dumped.get("context"))
        return types.CompleteResult.model_validate(result)

    with warnings.catch_warnings():
        # logging/setLevel is deprecated from 2026-07-28 on, but handshake-era clients use it.
        warnings.simplefilter("ignore")
        server = GatewayServer(
            "mcp-sandbox-gateway",
            version=__version__,
            instructions="Tools of several MCP servers, named <server>__<tool>.",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            on_list_prompts=list_prompts,
            on_get_prompt=get_prompt,
            on_list_resources=list_resources,
            on_list_resource_templates=list_resource_templates,
            on_read_resource=read_resource,
            on_set_logging_level=set_logging_level,
            on_subscribe_resource=subscribe,
            on_unsubscribe_resource=unsubscribe,
            on_completion=complete,
        )
    server.session_connections = connections
    server.get_tool_input_schema = lambda name: tool_input_schema(gateway, name)
    return server
