"""The client-facing MCP server: the SDK's low-level ``Server`` whose handlers route to a sandbox.

The SDK owns the wire (both protocol eras, sessions, SSE, protocol-version checks); these
handlers only find the caller's sandbox (from the authenticated request, never from anything
the client can choose) and hand the request to that sandbox's router.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.shared.exceptions import MCPError

from gateway import __version__
from gateway.auth import Principal
from gateway.upstream.connection import INTERNAL_ERROR, METHOD_NOT_FOUND, UpstreamError

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from gateway.hub import Gateway
    from gateway.router import SandboxRouter

logger = logging.getLogger("gateway.mcp")

PRINCIPAL_SCOPE_KEY = "gateway.principal"


class GatewayServer(Server[Any]):
    """Advertises ``listChanged`` for tools, prompts and resources: upstream changes are relayed."""

    def create_initialization_options(self, notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(options, *args, **kwargs)


class ClientCall:
    """Relays one call's progress notifications and server requests back to the client that made it."""

    def __init__(self, ctx: ServerRequestContext[Any], progress_token: Any) -> None:
        self._ctx = ctx
        self._token = progress_token

    async def progress(self, params: dict[str, Any]) -> None:
        if self._token is None:
            return
        forwarded = {k: v for k, v in params.items() if k in ("progress", "total", "message")}
        forwarded["progressToken"] = self._token
        # The request-scoped channel puts it on the stream of the POST that made the call.
        await self._ctx.session._request_outbound.notify("notifications/progress", forwarded)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self._ctx.session
        capability = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
        needed = capability.get(method)
        if needed is None:
            raise UpstreamError(f"{method} is not relayed to clients", METHOD_NOT_FOUND)
        declared = session.client_capabilities
        if declared is None or getattr(declared, needed, None) is None:
            raise UpstreamError(f"the client did not declare the {needed} capability", METHOD_NOT_FOUND)
        if not session.can_send_request:
            raise UpstreamError(f"the client's connection cannot receive {method} requests", METHOD_NOT_FOUND)
        try:
            result = await session._request_outbound.send_raw_request(method, params, None)
        except MCPError as exc:
            raise UpstreamError(exc.message, exc.code) from None
        return result if isinstance(result, dict) else {}


def _principal(ctx: ServerRequestContext[Any]) -> Principal:
    request = ctx.request
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) if request is not None else None
    if not isinstance(principal, Principal):
        # Never reached behind the auth middleware; refuse rather than guess a sandbox.
        raise MCPError(INTERNAL_ERROR, "request carries no authenticated sandbox")
    return principal


def _meta(params: Any) -> dict[str, Any] | None:
    meta = getattr(params, "meta", None)
    if meta is None:
        return None
    return meta.model_dump(by_alias=True, exclude_none=True) if hasattr(meta, "model_dump") else dict(meta)


def build_server(gateway: Gateway) -> GatewayServer:
    async def router_for(ctx: ServerRequestContext[Any]) -> tuple[Principal, SandboxRouter]:
        principal = _principal(ctx)
        router = gateway.router(principal.sandbox)
        gateway.track_connection(principal.sandbox, ctx.session._connection)
        return principal, router

    def fail(exc: UpstreamError) -> MCPError:
        return MCPError(exc.code, exc.message, exc.data)

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        principal, router = await router_for(ctx)
        tools = await gateway.visible_tools(principal, router, ctx.session._connection)
        return types.ListToolsResult.model_validate({"tools": tools})

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        principal, router = await router_for(ctx)
        meta = _meta(params)
        call = ClientCall(ctx, (meta or {}).get("progressToken"))
        try:
            session_id = ctx.session._connection.session_id
            result = await gateway.call_tool(principal, router, params.name, params.arguments, meta, call, session_id)
        except UpstreamError as exc:
            raise fail(exc) from None
        return types.CallToolResult.model_validate(result)

    async def list_prompts(ctx: ServerRequestContext[Any], params: Any) -> types.ListPromptsResult:
        principal, router = await router_for(ctx)
        return types.ListPromptsResult.model_validate({"prompts": await router.list_prompts(principal)})

    async def get_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
        principal, router = await router_for(ctx)
        try:
            result = await router.get_prompt(principal, params.name, params.arguments, _meta(params))
        except UpstreamError as exc:
            raise fail(exc) from None
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
        try:
            result = await router.read_resource(principal, str(params.uri), _meta(params))
        except UpstreamError as exc:
            raise fail(exc) from None
        return types.ReadResourceResult.model_validate(result)

    return GatewayServer(
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
    )
