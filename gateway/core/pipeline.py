"""The one way through for every request a client makes, whatever its transport or protocol era.

An entry point (HTTP of either era, the CLI's ``call``) turns what it received into a
:class:`Call`: who is calling (:class:`Caller`), the JSON-RPC method and params as they came,
and a :class:`ClientChannel` to reach back to that client during the request (progress, log
messages, server-to-client requests). :meth:`Pipeline.handle` runs the call through the
middleware chain (features: discovery, audit, metrics, policy, ...) and then the router of the
caller's sandbox, and returns the JSON-ready ``result`` object or raises :class:`RpcError`.

Nothing here knows HTTP, SSE, session ids on the wire or protocol eras: the entry point owns
framing and era rules (initialize / server/discover, ping, logging/setLevel, envelopes,
``ttlMs``), the pipeline owns what the request means.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.auth import Principal
from gateway.upstream.errors import INVALID_PARAMS, METHOD_NOT_FOUND, UpstreamError
from gateway.upstream.peer import CallOrigin, call_origin

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway
    from gateway.core.router import SandboxRouter

logger = logging.getLogger("gateway.pipeline")


class RpcError(Exception):
    """A JSON-RPC error for the client: its code, a one-line message, optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(slots=True, weakref_slot=True, eq=False)
class SessionState:
    """What the gateway keeps about one client session (handshake era); JSON values only.

    Compared and hashed by identity: a router holds the sessions subscribed to a resource weakly.

    Kept in a session store (``gateway.downstream.store``) so that a shared store can hold it.
    ``features`` is where middleware keeps per-session state (discovery's enabled tools, ...).
    """

    id: str
    sandbox: str
    token_id: str | None
    protocol_version: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # raised by whatever changes the record, so the entry point stores it again


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: the authenticated principal and what its client declared.

    ``session`` is the handshake-era session the request belongs to; 2026-07-28 requests have
    none (their capabilities come with each request).
    """

    principal: Principal
    protocol_version: str
    capabilities: Mapping[str, Any]
    client_info: Mapping[str, Any] = field(default_factory=dict)
    session: SessionState | None = None

    @property
    def sandbox(self) -> str:
        return self.principal.sandbox

    @property
    def owner(self) -> tuple[str, ...]:
        """Which client a call comes from, for routing what its upstream asks back."""
        if self.session is not None:
            return ("session", self.session.id)
        return ("token", self.principal.sandbox, self.principal.token_id or "")

    def declares(self, capability: str) -> bool:
        return self.capabilities.get(capability) is not None


class ClientChannel(Protocol):
    """How the pipeline reaches the client during one request (the entry point implements it)."""

    async def progress(self, params: dict[str, Any]) -> None:
        """An upstream ``notifications/progress`` (``progress``, ``total``, ``message``): the channel
        puts the client's own progress token on it, or drops it when the client asked for none."""

    async def log(self, params: dict[str, Any]) -> None:
        """An upstream ``notifications/message``: the channel applies the client's log level."""

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A server-to-client request (sampling, elicitation, roots) for this client; its result.

        Raises :class:`RpcError` when the client cannot answer (no such capability, no channel).
        """


class NoChannel:
    """A client that cannot be reached during a request (the CLI, a plain JSON response)."""

    async def progress(self, params: dict[str, Any]) -> None:
        return None

    async def log(self, params: dict[str, Any]) -> None:
        return None

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RpcError(METHOD_NOT_FOUND, f"this client cannot answer {method}")


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline.

    ``upstream_started`` (``time.perf_counter()``) is set by the router stage of a tools/call once
    its route is resolved (servers started): what follows is time spent upstream.
    """

    caller: Caller
    method: str
    params: dict[str, Any]
    channel: ClientChannel = field(default_factory=NoChannel)
    upstream_started: float | None = None

    @property
    def meta(self) -> dict[str, Any] | None:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else None


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


class Middleware(Protocol):
    """A feature on the call path: it may answer, change, observe or refuse a call."""

    async def __call__(self, call: Call, call_next: Handler) -> dict[str, Any]: ...


ROUTED_METHODS = (
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
)


class Pipeline:
    """Middleware, then the caller's sandbox router. Built once where the gateway is assembled."""

    def __init__(self, gateway: Gateway, middleware: Sequence[Middleware] = ()) -> None:
        self.gateway = gateway
        self.middleware = list(middleware)
        self._handler = self._chain()

    def use(self, middleware: Middleware) -> None:
        """Add a middleware at the end of the chain (closest to the router)."""
        self.middleware.append(middleware)
        self._handler = self._chain()

    def _chain(self) -> Handler:
        handler: Handler = self._route
        for middleware in reversed(self.middleware):
            handler = _bind(middleware, handler)
        return handler

    async def handle(self, call: Call) -> dict[str, Any]:
        if call.method not in ROUTED_METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {call.method}")
        with _upstream_errors():
            return await self._handler(call)

    # -- the end of the chain: the sandbox's router ------------------------------------------

    async def _route(self, call: Call) -> dict[str, Any]:
        principal = call.caller.principal
        router = self.gateway.router(principal.sandbox)
        method, params = call.method, call.params
        if method == "tools/list":
            return {"tools": await self.gateway.list_tools(principal, router)}
        if method == "tools/call":
            return await self._call_tool(call, router)
        if method == "prompts/list":
            return {"prompts": await router.list_prompts(principal)}
        if method == "prompts/get":
            name = _string(params, "name")
            with call_origin_of(call):
                return await router.get_prompt(principal, name, _object(params, "arguments"), call.meta)
        if method == "resources/list":
            return {"resources": await router.list_resources(principal)}
        if method == "resources/templates/list":
            return {"resourceTemplates": await router.list_resource_templates(principal)}
        if method == "resources/read":
            with call_origin_of(call):
                return await router.read_resource(principal, _string(params, "uri"), call.meta)
        if method == "resources/subscribe":
            await router.subscribe(principal, _string(params, "uri"), call.caller.session)
            return {}
        if method == "resources/unsubscribe":
            await router.unsubscribe(principal, _string(params, "uri"), call.caller.session)
            return {}
        ref = params.get("ref")
        argument = params.get("argument")
        if not isinstance(ref, dict) or not isinstance(argument, dict):
            raise RpcError(INVALID_PARAMS, "completion/complete needs a ref and an argument object")
        return await router.complete(principal, ref, argument, _object(params, "context"))

    async def _call_tool(self, call: Call, router: SandboxRouter) -> dict[str, Any]:
        name = _string(call.params, "name")
        arguments = _object(call.params, "arguments")
        principal = call.caller.principal
        with call_origin_of(call):
            # Resolving may start servers: that is gateway time, the call after it upstream time.
            await router.resolve_tool(principal, name)
            call.upstream_started = time.perf_counter()
            return await router.call_tool(principal, name, arguments, call.meta, call.channel)


def _bind(middleware: Middleware, call_next: Handler) -> Handler:
    async def handler(call: Call) -> dict[str, Any]:
        return await middleware(call, call_next)

    return handler


@contextlib.contextmanager
def call_origin_of(call: Call) -> Iterator[None]:
    """Mark the upstream work done in this block as the caller's (log messages and server requests
    an upstream sends while it runs go back to this caller's channel)."""
    token = call_origin.set(CallOrigin(call.caller.owner, call.channel.log))
    try:
        yield
    finally:
        call_origin.reset(token)


@contextlib.contextmanager
def _upstream_errors() -> Iterator[None]:
    try:
        yield
    except UpstreamError as exc:
        raise RpcError(exc.code, exc.message, exc.data) from None


def _string(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"params.{key} must be a string")
    return value


def _object(params: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RpcError(INVALID_PARAMS, f"params.{key} must be an object")
    return value
