"""Aggregation for one sandbox: names, tools/list, tools/call, prompts, resources.

A :class:`SandboxRouter` owns the sandbox's upstream servers. It merges their tools and
prompts under namespaced names, keeps the map back to (server, original name), and routes
calls. Everything it returns has passed through the sandbox's redactor.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.auth import Principal
from gateway.core.naming import exposed_name
from gateway.features.redaction import Redactor
from gateway.upstream.errors import INVALID_PARAMS, ErrorReply, UpstreamError
from gateway.upstream.server import UpstreamServer

logger = logging.getLogger("gateway.router")


RESERVED_META_PREFIX = "io.modelcontextprotocol/"


def upstream_params(params: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` with the client's ``_meta`` as it may cross this hop.

    The client's protocol envelope (every ``io.modelcontextprotocol/`` key: protocol version,
    client info and capabilities, log level of a 2026-07-28 request) belongs to the client's hop;
    each upstream speaks the era it negotiated with the gateway, so those keys never go on. The
    progress token is the upstream connection's own (it sets one per request). What remains
    (trace context, application keys) is forwarded.
    """
    kept = {
        key: value
        for key, value in (meta or {}).items()
        if key != "progressToken" and not key.startswith(RESERVED_META_PREFIX)
    }
    return {**params, "_meta": kept} if kept else params


def downstream_result(result: dict[str, Any]) -> dict[str, Any]:
    """An upstream's result without the upstream hop's protocol envelope in its ``_meta``."""
    meta = result.get("_meta")
    if not isinstance(meta, dict) or not any(key.startswith(RESERVED_META_PREFIX) for key in meta):
        return result
    kept = {key: value for key, value in meta.items() if not key.startswith(RESERVED_META_PREFIX)}
    trimmed = {key: value for key, value in result.items() if key != "_meta"}
    return {**trimmed, "_meta": kept} if kept else trimmed


class Downstream(Protocol):
    """The client side of one call: where its progress and server requests go."""

    async def progress(self, params: dict[str, Any]) -> None: ...

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Route:
    server: str
    original: str
    exposed: str
    definition: dict[str, Any]  # as the client sees it (exposed name)


class UnknownName(UpstreamError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"Unknown {kind}: {name}", INVALID_PARAMS)


class SandboxRouter:
    def __init__(
        self,
        sandbox: str,
        servers: dict[str, UpstreamServer],
        prefixes: dict[str, str],
        redactor: Redactor,
        on_list_changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.servers = servers
        self.prefixes = prefixes
        self.redactor = redactor
        self._on_list_changed = on_list_changed
        # Hook for tool integrity checks: (server, kind, definition) -> offer it?
        self.admit: Callable[[str, str, dict[str, Any]], bool] | None = None
        self._tools: dict[str, Route] | None = None
        self._prompts: dict[str, Route] | None = None
        self._subscribers: dict[str, weakref.WeakSet[Any]] = {}  # resource uri -> subscribed sessions
        # (session id, method, params) -> delivered to that client session; set by the gateway.
        self.notify_session: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.rejected: dict[str, str] = {}  # exposed name -> why it is not offered
        # server -> hash of its effective settings in this sandbox (catalog entry, config and secret
        # values): what the tool record and the tool ledger are keyed by. Set by the gateway.
        self.fingerprints: dict[str, str] = {}

    # -- servers -------------------------------------------------------------------------

    def visible_servers(self, principal: Principal) -> list[UpstreamServer]:
        return [s for name, s in self.servers.items() if principal.may_use_server(name)]

    def may_use_capabilities(self, principal: Principal, server_name: str) -> bool:
        """May ``principal`` see this server's prompts, resources, templates and completions?

        Only if the token may use the server and, when it carries a ``tools`` claim, at least one of
        the server's tools (by exposed name) matches it: a token narrowed to ``time__*`` reaches the
        time server's prompts and resources, not those of servers whose tools it may not call. A
        server whose tools are not known yet (not started) counts as having none.
        """
        if not principal.may_use_server(server_name):
            return False
        if principal.tools is None:
            return True
        server = self.servers.get(server_name)
        if server is None:
            return False
        prefix = self.prefixes.get(server_name, server_name)
        return any(
            isinstance(tool.get("name"), str)
            and principal.may_use_tool(server_name, exposed_name(prefix, tool["name"]))
            for tool in server.tools
        )

    async def capability_servers(self, principal: Principal) -> list[UpstreamServer]:
        """Start the servers the token may use; those whose non-tool capabilities it may reach."""
        servers = self.visible_servers(principal)
        await self.ensure_started(servers)
        return [s for s in servers if self.may_use_capabilities(principal, s.name)]

    async def ensure_started(self, servers: Iterable[UpstreamServer]) -> None:
        """Start servers in parallel; one that fails leaves the others usable (its tools are absent)."""
        pending = [s for s in servers if s.state != "running"]
        if not pending:
            return
        results = await asyncio.gather(*(s.ensure_running() for s in pending), return_exceptions=True)
        changed = False
        for server, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                message = result.message if isinstance(result, UpstreamError) else str(result)
                logger.warning("sandbox %s: server %s is unavailable: %s", self.sandbox, server.name, message)
            else:
                changed = True
        if changed:
            self.invalidate()

    def invalidate(self) -> None:
        self._tools = None
        self._prompts = None

    async def server_lists_changed(self, server: UpstreamServer, kind: str) -> None:
        self.invalidate()
        if self._on_list_changed is not None:
            await self._on_list_changed(kind)

    # -- indexes -------------------------------------------------------------------------

    def _build_index(self, kind: str) -> dict[str, Route]:
        index: dict[str, Route] = {}
        for name, server in self.servers.items():
            items = server.tools if kind == "tool" else server.prompts
            for item in items:
                original = item.get("name")
                if not isinstance(original, str) or not original:
                    continue
                if self.admit is not None and not self.admit(name, kind, item):
                    continue
                exposed = exposed_name(self.prefixes.get(name, name), original)
                if exposed in index:
                    other = index[exposed].server
                    why = f"{kind} name {exposed!r} of server {name!r} collides with server {other!r}; not offered"
                    if self.rejected.get(f"{name}:{exposed}") != why:
                        logger.warning("sandbox %s: %s", self.sandbox, why)
                    self.rejected[f"{name}:{exposed}"] = why
                    continue
                definition = dict(item)
                definition["name"] = exposed
                index[exposed] = Route(name, original, exposed, definition)
        return index

    def tool_routes(self) -> dict[str, Route]:
        if self._tools is None:
            self._tools = self._build_index("tool")
        return self._tools

    def prompt_routes(self) -> dict[str, Route]:
        if self._prompts is None:
            self._prompts = self._build_index("prompt")
        return self._prompts

    # -- tools ---------------------------------------------------------------------------

    async def list_tools(self, principal: Principal, start: bool = True) -> list[dict[str, Any]]:
        """``start=False``: list what is known now (running servers, tool records) without starting any."""
        if start:
            await self.ensure_started(self.visible_servers(principal))
        return [
            self.redactor.value(route.definition)
            for route in self.tool_routes().values()
            if principal.may_use_tool(route.server, route.exposed)
        ]

    async def resolve_tool(self, principal: Principal, name: str) -> Route:
        route = self.tool_routes().get(name)
        if route is None:
            # Servers not started yet have no tools listed: start what the token may see, then look again
            # (rebuilding the index: a server may have finished starting for another request meanwhile).
            await self.ensure_started(self.visible_servers(principal))
            self.invalidate()
            route = self.tool_routes().get(name)
        if route is None or not principal.may_use_tool(route.server, route.exposed):
            raise UnknownName("tool", name)
        return route

    async def call_tool(
        self,
        principal: Principal,
        name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None,
        downstream: Downstream | None = None,
    ) -> dict[str, Any]:
        route = await self.resolve_tool(principal, name)
        params = upstream_params({"name": route.original, "arguments": arguments or {}}, meta)
        result = await self._call(route.server, "tools/call", params, downstream, meta)
        return self.redactor.value(result)

    async def _call(
        self,
        server_name: str,
        method: str,
        params: dict[str, Any],
        downstream: Downstream | None,
        meta: dict[str, Any] | None,
    ) -> dict[str, Any]:
        server = self.servers[server_name]
        wants_progress = downstream is not None and meta is not None and meta.get("progressToken") is not None
        try:
            result = await server.call(
                method,
                params,
                on_progress=downstream.progress if wants_progress and downstream else None,
                on_request=downstream.request if downstream is not None else None,
            )
        except ErrorReply as exc:
            # The server's own error: say which server, and log it. Upstream messages may quote
            # secrets back at us (a bad token in an error, say), so both are redacted.
            message = f"{server_name}: {self.redactor.text(exc.message)}"
            logger.warning("sandbox %s: %s answered %s with error %s", self.sandbox, method, exc.code, message)
            raise UpstreamError(message, exc.code, self.redactor.value(exc.data)) from None
        except UpstreamError as exc:
            raise UpstreamError(self.redactor.text(exc.message), exc.code, self.redactor.value(exc.data)) from None
        return downstream_result(result)

    # -- prompts -------------------------------------------------------------------------

    async def list_prompts(self, principal: Principal) -> list[dict[str, Any]]:
        await self.ensure_started(self.visible_servers(principal))
        return [
            self.redactor.value(route.definition)
            for route in self.prompt_routes().values()
            if self.may_use_capabilities(principal, route.server)
        ]

    async def get_prompt(
        self, principal: Principal, name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None
    ) -> dict[str, Any]:
        route = self.prompt_routes().get(name)
        if route is None:
            await self.ensure_started(self.visible_servers(principal))
            route = self.prompt_routes().get(name)
        if route is None or not self.may_use_capabilities(principal, route.server):
            raise UnknownName("prompt", name)
        params: dict[str, Any] = {"name": route.original}
        if arguments:
            params["arguments"] = arguments
        params = upstream_params(params, meta)
        return self.redactor.value(await self._call(route.server, "prompts/get", params, None, meta))

    # -- resources -----------------------------------------------------------------------

    async def list_resources(self, principal: Principal) -> list[dict[str, Any]]:
        servers = await self.capability_servers(principal)
        return [self.redactor.value(r) for s in servers for r in s.resources]

    async def list_resource_templates(self, principal: Principal) -> list[dict[str, Any]]:
        servers = await self.capability_servers(principal)
        return [self.redactor.value(t) for s in servers for t in s.resource_templates]

    def _owner_of(self, servers: list[UpstreamServer], uri: str) -> UpstreamServer | None:
        for server in servers:
            if any(r.get("uri") == uri for r in server.resources):
                return server
        for server in servers:
            for template in server.resource_templates:
                head = str(template.get("uriTemplate", "")).split("{", 1)[0]
                if head and uri.startswith(head):
                    return server
        with_resources = [s for s in servers if s.capabilities.get("resources") is not None]
        return with_resources[0] if len(with_resources) == 1 else None

    async def read_resource(self, principal: Principal, uri: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        servers = await self.capability_servers(principal)
        owner = self._owner_of(servers, uri)
        if owner is None:
            raise UpstreamError(f"Resource not found: {uri}", -32002)
        params = upstream_params({"uri": uri}, meta)
        return self.redactor.value(await self._call(owner.name, "resources/read", params, None, meta))

    async def subscribe(self, principal: Principal, uri: str, connection: Any) -> None:
        """Forward ``resources/subscribe`` to the owner; its ``resources/updated`` then reach ``connection``."""
        servers = await self.capability_servers(principal)
        owner = self._owner_of(servers, uri)
        if owner is None:
            raise UpstreamError(f"Resource not found: {uri}", -32002)
        await self._call(owner.name, "resources/subscribe", {"uri": uri}, None, None)
        self._subscribers.setdefault(uri, weakref.WeakSet()).add(connection)

    async def unsubscribe(self, principal: Principal, uri: str, connection: Any) -> None:
        subscribers = self._subscribers.get(uri)
        if subscribers is not None:
            subscribers.discard(connection)
        if subscribers:
            return  # another session still wants updates
        self._subscribers.pop(uri, None)
        servers = [s for s in self.visible_servers(principal) if self.may_use_capabilities(principal, s.name)]
        owner = self._owner_of(servers, uri)
        if owner is not None and owner.state == "running":
            await self._call(owner.name, "resources/unsubscribe", {"uri": uri}, None, None)

    async def server_notification(self, server: UpstreamServer, method: str, params: dict[str, Any]) -> None:
        """Notifications not tied to a call: resource updates go to the sessions that subscribed."""
        if method != "notifications/resources/updated":
            return
        uri = params.get("uri")
        for subscriber in list(self._subscribers.get(uri, ()) if isinstance(uri, str) else ()):
            try:
                if hasattr(subscriber, "send_resource_updated"):  # a 2026-07-28 listen stream
                    await subscriber.send_resource_updated(uri)
                elif self.notify_session is not None:  # a client session (SessionState)
                    await self.notify_session(subscriber.id, method, {"uri": uri})
            except Exception:
                logger.debug("could not deliver resources/updated for %s", uri, exc_info=True)

    async def complete(
        self, principal: Principal, ref: dict[str, Any], argument: dict[str, Any], context: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Route ``completion/complete`` to the server owning the prompt or resource template."""
        ref = dict(ref)
        if ref.get("type") == "ref/prompt":
            route = self.prompt_routes().get(str(ref.get("name")))
            if route is None:
                await self.ensure_started(self.visible_servers(principal))
                route = self.prompt_routes().get(str(ref.get("name")))
            if route is None or not self.may_use_capabilities(principal, route.server):
                raise UnknownName("prompt", str(ref.get("name")))
            server_name = route.server
            ref["name"] = route.original
        else:
            servers = await self.capability_servers(principal)
            owner = self._owner_of(servers, str(ref.get("uri")))
            if owner is None:
                raise UpstreamError(f"Resource not found: {ref.get('uri')}", -32002)
            server_name = owner.name
        if self.servers[server_name].capabilities.get("completions") is None:
            return {"completion": {"values": [], "total": 0, "hasMore": False}}
        params: dict[str, Any] = {"ref": ref, "argument": argument}
        if context:
            params["context"] = context
        return self.redactor.value(await self._call(server_name, "completion/complete", params, None, None))

    # -- lifecycle -----------------------------------------------------------------------

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)
