"""The Starlette application: routes, the security middleware, and the lifespan.

``/mcp`` is :class:`gateway.downstream.http.McpEndpoint` behind :class:`McpGuard`, a plain ASGI
middleware that checks Origin and Host, the body size, and the bearer token, and pins the
request to the token's sandbox (``scope["gateway.principal"]``) before any era's code sees it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.auth import LEEWAY_SECONDS, AuthError, Principal, bearer_from_header
from gateway.core.gateway import Gateway
from gateway.core.pipeline import Pipeline
from gateway.downstream.handshake import PRINCIPAL_SCOPE_KEY
from gateway.downstream.http import McpEndpoint
from gateway.downstream.modern import ModernEndpoint
from gateway.downstream.modern_listen import INFLIGHT_RELEASE_KEY
from gateway.downstream.modern_listen import close_all as close_listen_streams
from gateway.features.metrics import count_rejection

logger = logging.getLogger("gateway.http")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
MCP_PATHS = ("/mcp", "/mcp/")
# Verified tokens kept (by their exact text) so a client's every request does not redo the signature
# check: at most this many, each until its exp (plus the verifier's leeway) and no longer than the
# age below. Whether its sandbox still exists is checked on every request regardless.
TOKEN_CACHE_SIZE = 1024
TOKEN_CACHE_SECONDS = 300.0


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_without_port(value: str) -> str:
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def json_error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def jsonrpc_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def send_with_retry_after(send: Send) -> Send:
    """Add ``Retry-After`` to a 503 (session limit) answer that lacks one, so clients back off instead of failing."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 413:
            count_rejection("size")
        if message["type"] == "http.response.start" and message["status"] == 503:
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", b"5"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length (0 when absent or not a number: the body reader then counts)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class McpGuard:
    """Origin, Host and bearer-token checks in front of the MCP endpoint."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        settings = gateway.settings
        self.resource_metadata_url = settings.base_url + "/.well-known/oauth-protected-resource"
        self.allowed_origins = set(settings.allow_origins)
        public_host = urlsplit(settings.mcp_url).netloc.lower()
        self.check_host = is_loopback_host(settings.host)
        self.allowed_hosts = {public_host, _host_without_port(public_host)}
        self.max_inflight = settings.max_inflight_per_sandbox
        self.max_body = settings.max_body_bytes
        self.inflight: dict[str, int] = {}
        self.verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, good until)

    def origin_allowed(self, origin: str) -> bool:
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and is_loopback_host(parts.hostname or "")

    def host_allowed(self, host: str) -> bool:
        host = host.lower()
        return (
            host in self.allowed_hosts
            or is_loopback_host(_host_without_port(host))
            or _host_without_port(host) in self.allowed_hosts
        )

    def unauthorized(self, description: str, error: str | None = "invalid_token") -> Response:
        challenge = f'Bearer resource_metadata="{self.resource_metadata_url}"'
        if error:
            escaped = description.replace('"', "'")
            challenge += f', error="{error}", error_description="{escaped}"'
        return jsonrpc_error(401, -32001, f"Unauthorized: {description}", {"WWW-Authenticate": challenge})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope["headers"] if k in (b"origin", b"host", b"authorization")}
        origin = headers.get(b"origin")
        if origin is not None and not self.origin_allowed(origin.decode("latin-1")):
            count_rejection("origin")
            await jsonrpc_error(403, -32600, "Forbidden: this Origin may not use the gateway")(scope, receive, send)
            return
        host = headers.get(b"host", b"").decode("latin-1")
        if self.check_host and not self.host_allowed(host):
            count_rejection("host")
            await jsonrpc_error(421, -32600, "Misdirected request: unknown Host")(scope, receive, send)
            return
        principal = await self.principal(headers.get(b"authorization"))
        if isinstance(principal, Response):
            count_rejection("auth")
            await principal(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        if scope["method"] == "POST" and _declared_length(scope) > self.max_body:
            count_rejection("size")
            await jsonrpc_error(413, -32600, "Request body too large")(scope, receive, send)
            return
        if scope["method"] != "POST":  # GET streams are long-lived and DELETE is cheap: not counted
            await self.app(scope, receive, send_with_retry_after(send))
            return
        sandbox = principal.sandbox
        if self.inflight.get(sandbox, 0) >= self.max_inflight:
            busy = jsonrpc_error(429, -32000, "Too many concurrent requests for this sandbox; retry shortly")
            busy.headers["Retry-After"] = "1"
            count_rejection("rate")
            await busy(scope, receive, send)
            return
        self.inflight[sandbox] = self.inflight.get(sandbox, 0) + 1
        counted = True

        def release() -> None:
            """The request no longer counts (a long-lived stream such as subscriptions/listen, once open)."""
            nonlocal counted
            if counted:
                counted = False
                left = self.inflight[sandbox] - 1
                if left:
                    self.inflight[sandbox] = left
                else:
                    del self.inflight[sandbox]

        scope[INFLIGHT_RELEASE_KEY] = release
        try:
            await self.app(scope, receive, send_with_retry_after(send))
        finally:
            release()

    async def principal(self, authorization: bytes | None) -> Principal | Response:
        if self.gateway.settings.no_auth:
            return Principal(sandbox=self.gateway.default_sandbox)
        token = bearer_from_header(authorization.decode("latin-1") if authorization else None)
        if token is None:
            return self.unauthorized("a bearer token is required", error=None)
        try:
            cached = self.verified.get(token)
            if cached is not None and time.time() < cached[1]:
                principal = cached[0]
            else:
                tokens = self.gateway.tokens
                if tokens.fetches_keys:
                    principal = await anyio.to_thread.run_sync(tokens.verify, token)
                else:
                    principal = tokens.verify(token)
                self.remember(token, principal)
            self.gateway.check_sandbox(principal)
            return principal
        except AuthError as exc:
            return self.unauthorized(exc.description, exc.error)

    def remember(self, token: str, principal: Principal) -> None:
        """Keep a verified token (bounded; the oldest entry goes first)."""
        until = time.time() + TOKEN_CACHE_SECONDS
        if principal.expires_at is not None:
            until = min(until, float(principal.expires_at) + LEEWAY_SECONDS)
        self.verified.pop(token, None)
        if len(self.verified) >= TOKEN_CACHE_SIZE:
            del self.verified[next(iter(self.verified))]
        self.verified[token] = (principal, until)


async def healthz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return JSONResponse({"status": "ok", "version": _version(), "uptime_s": round(time.time() - gateway.started_at, 1)})


def _version() -> str:
    from gateway import __version__

    return __version__


TOKEN_INSTRUCTIONS = (
    "This gateway issues its own tokens; there is no authorization server to log in to. Get a token from"
    " its operator (mcp-gateway token, or POST /admin/sandboxes/{id}/token) and send it as"
    " Authorization: Bearer <token>."
)


async def protected_resource(request: Request) -> Response:
    """RFC 9728 metadata for ``/mcp``.

    With an external issuer (``--jwt-public-key``/``--jwks-url`` and an ``--issuer`` URL) it names
    that issuer, so OAuth-capable clients log in there. With the gateway's own tokens it names no
    authorization server at all: naming the gateway would send clients to register at an endpoint
    that does not exist (the "DCR 404" dead end); the metadata says where tokens come from instead.
    """
    gateway: Gateway = request.app.state.gateway
    settings = gateway.settings
    body: dict[str, Any] = {
        "resource": settings.mcp_url,
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-sandbox-gateway",
    }
    if gateway.tokens.external and settings.issuer.startswith(("https://", "http://")):
        body["authorization_servers"] = [settings.issuer]
    else:
        body["mcp_gateway_tokens"] = TOKEN_INSTRUCTIONS
    return JSONResponse(body)


async def well_known_other(request: Request) -> Response:
    return json_error(404, "not_found", "no such metadata document")


def create_app(gateway: Gateway, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    pipeline = Pipeline(gateway, gateway.middleware)
    endpoint = McpEndpoint(gateway, pipeline, ModernEndpoint(pipeline, gateway.settings.max_body_bytes))
    mcp_endpoint = McpGuard(endpoint, gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            close_listen_streams()
            await gateway.aclose()

    routes: list[BaseRoute] = [
        Route("/mcp", endpoint=mcp_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/mcp/", endpoint=mcp_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", endpoint=healthz, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource", endpoint=protected_resource, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource/mcp", endpoint=protected_resource, methods=["GET"]),
        Route("/.well-known/{rest:path}", endpoint=well_known_other, methods=["GET"]),
    ]
    routes.extend(extra_routes or [])
    app = GatewayApp(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    app.state.pipeline = pipeline
    app.state.mcp = endpoint
    app.mcp_post = mcp_endpoint
    return app


class GatewayApp(Starlette):
    """Starlette, with ``POST /mcp`` (nearly every request) handed straight to its endpoint.

    The endpoint is the same one the ``/mcp`` route holds; skipping the router and Starlette's
    exception middlewares for it saves a tenth of a tool call's CPU. An exception there still ends
    in a 500 (uvicorn's instead of Starlette's), and nothing else takes this shortcut.
    """

    mcp_post: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.mcp_post is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in MCP_PATHS
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self.mcp_post(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


Factory = Callable[[], Starlette]
