"""The sandbox admin API: create, list, show, delete sandboxes and mint their tokens.

Routes (all need the admin key as ``Authorization: Bearer <admin key>``):

- ``POST /admin/sandboxes`` ``{"id"?, "mcp": {...}, "ttl"?, "discovery"?}`` -> 201
  ``{"id", "mcp_url", "mcp_token", "servers"}``
- ``GET /admin/sandboxes`` -> ``{"sandboxes": [...]}``; ``GET /admin/sandboxes/{id}`` -> one
- ``PATCH /admin/sandboxes/{id}`` ``{"mcp": {server: {...} | null}}`` -> the sandbox and
  ``"changed"`` (the servers set, replaced or removed; see gateway.core.sandbox_update)
- ``DELETE /admin/sandboxes/{id}`` -> 204
- ``POST /admin/sandboxes/{id}/token`` ``{"ttl"?, "servers"?, "tools"?}`` -> ``{"mcp_token"}``
- ``POST /admin/tokens/revoke`` ``{"token"}`` or ``{"jti", "sandbox"}`` -> ``{"revoked": true, ...}``
  (gateway.web.revoke)

Every error is ``{"error": code, "message": one line}`` with a 4xx status. Bodies are read
with a hard size limit and never echoed back (they hold secrets).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.catalog.config import parse_mcp_config
from gateway.catalog.entries import CatalogError
from gateway.core.gateway import Gateway
from gateway.store.sandboxes import (
    InvalidSandboxId,
    Sandbox,
    SandboxError,
    SandboxExists,
    check_sandbox_id,
)
from gateway.web.access import admin_refusal

logger = logging.getLogger("gateway.admin")

MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
DISCOVERY_MODES = ("auto", "on", "off")
CREATE_KEYS = ("id", "mcp", "ttl", "discovery", "pinned")
TOKEN_KEYS = ("ttl", "servers", "tools")
UPDATE_KEYS = ("mcp",)


class ApiError(Exception):
    """An answer other than success: status, machine-readable code, one-line message."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


def error_response(exc: ApiError) -> Response:
    return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status, headers=exc.headers)


# -- request checks --------------------------------------------------------------------------


def check_admin(request: Request, gateway: Gateway) -> None:
    """Origin and admin key, as on every admin route (see gateway.web.access)."""
    refusal = admin_refusal(request, gateway)
    if refusal is not None:
        raise ApiError(refusal.status, refusal.error, refusal.message, refusal.headers)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON (None when empty). Never echoes the body: it may hold secrets."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "invalid_request", "the Content-Length header is not a number") from None
        if declared > limit:
            raise ApiError(413, "too_large", f"the request body is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the request body is over the limit of {limit} bytes")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {reason}{where}") from None


def json_object(body: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", f"the request body must be a JSON object with keys {_keys(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown key {unknown[0]!r}; valid keys: {_keys(allowed)}")
    for key in required:
        if key not in body:
            raise ApiError(400, "invalid_request", f"the key {key!r} is required; valid keys: {_keys(allowed)}")
    return body


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(keys)


def ttl_value(value: Any, key: str = "ttl") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, "invalid_request", f"{key!r} must be a number of seconds")
    if value <= 0 or value > MAX_TTL_SECONDS:
        raise ApiError(400, "invalid_request", f"{key!r} must be more than 0 and at most {MAX_TTL_SECONDS} seconds")
    return float(value)


def string_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(400, "invalid_request", f"{key!r} must be a list of non-empty strings")
    return list(value)


# -- sandboxes -------------------------------------------------------------------------------


def sandbox_id_from(value: object) -> str:
    """A sandbox id from a path or body, checked (400 ``invalid_sandbox_id`` otherwise)."""
    try:
        return check_sandbox_id(value)
    except InvalidSandboxId as exc:
        raise ApiError(400, "invalid_sandbox_id", str(exc)) from None


def find_sandbox(gateway: Gateway, sandbox_id: str) -> Sandbox:
    sandbox_id = sandbox_id_from(sandbox_id)
    try:
        sandbox = gateway.sandbox(sandbox_id)
    except SandboxError as exc:
        raise ApiError(500, "store_error", str(exc)) from None
    if sandbox is None:
        raise ApiError(404, "not_found", f"no sandbox {sandbox_id!r}")
    return sandbox


def mint(gateway: Gateway, sandbox: Sandbox, ttl: float | None, **claims: Any) -> str:
    """A token for the sandbox, never outliving it."""
    lifetime = ttl or float(gateway.settings.token_ttl)
    if sandbox.expires_at is not None:
        lifetime = min(lifetime, sandbox.expires_at - time.time())
    try:
        return gateway.mint_token(sandbox, ttl=max(1, math.ceil(lifetime)), **claims)
    except ValueError as exc:  # an external issuer: this gateway does not mint
        raise ApiError(409, "external_issuer", str(exc)) from None


def check_pulled(gateway: Gateway, names: list[str]) -> None:
    from gateway.catalog.pull import is_pulled

    for name in names:
        entry = gateway.catalog.get(name)
        if not is_pulled(entry, gateway.data.path):
            raise ApiError(400, "not_pulled", f"server {name!r} is not installed; run: mcp-gateway pull {name}")


async def create(request: Request, gateway: Gateway) -> Response:
    body = json_object(await read_json(request, gateway.settings.max_body_bytes), CREATE_KEYS, ("mcp",))
    sandbox_id = body.get("id")
    if sandbox_id is not None:
        sandbox_id = sandbox_id_from(sandbox_id)
    ttl = ttl_value(body.get("ttl"))
    discovery = body.get("discovery")
    if discovery is not None and discovery not in DISCOVERY_MODES:
        raise ApiError(400, "invalid_request", f"'discovery' must be one of {', '.join(DISCOVERY_MODES)}")
    pinned = body.get("pinned")
    if pinned is not None and (not isinstance(pinned, list) or not all(isinstance(p, str) and p for p in pinned)):
        raise ApiError(400, "invalid_request", "'pinned' must be a list of tool-name globs like [\"time__*\"]")
    if not isinstance(body["mcp"], dict):
        example = '{"time": {}, "githubOfficial": {"githubPersonalAccessToken": "..."}}'
        raise ApiError(400, "invalid_config", f"'mcp' must be a JSON object like {example}")
    try:
        check_pulled(gateway, sorted(parse_mcp_config(gateway.catalog, body["mcp"])))
        sandbox = gateway.create_sandbox(body["mcp"], sandbox_id, ttl, discovery, pinned)
    except CatalogError as exc:
        raise ApiError(400, "invalid_config", str(exc)) from None
    except InvalidSandboxId as exc:
        raise ApiError(400, "invalid_sandbox_id", str(exc)) from None
    except SandboxExists as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except SandboxError as exc:
        raise ApiError(500, "store_error", str(exc)) from None
    token = mint(gateway, sandbox, ttl)
    logger.info("sandbox %s created (servers: %s)", sandbox.id, ", ".join(sorted(sandbox.servers)) or "none")
    answer = {
        "id": sandbox.id,
        "mcp_url": gateway.settings.mcp_url,
        "mcp_token": token,
        "servers": sorted(sandbox.servers),
    }
    return JSONResponse(answer, status_code=201)


async def update(request: Request, gateway: Gateway, sandbox_id: str) -> Response:
    sandbox_id = sandbox_id_from(sandbox_id)
    body = json_object(await read_json(request, gateway.settings.max_body_bytes), UPDATE_KEYS, ("mcp",))
    find_sandbox(gateway, sandbox_id)  # 404 before any complaint about the config
    if not isinstance(body["mcp"], dict):
        example = '{"time": {}, "githubOfficial": {"githubPersonalAccessToken": "..."}, "notion": null}'
        raise ApiError(400, "invalid_config", f"'mcp' must be a JSON object like {example}")
    try:
        check_pulled(gateway, sorted(parse_mcp_config(gateway.catalog, _set_servers(body["mcp"]))))
        result = await gateway.update_sandbox(sandbox_id, body["mcp"])
    except CatalogError as exc:
        raise ApiError(400, "invalid_config", str(exc)) from None
    except SandboxError as exc:
        raise ApiError(500, "store_error", str(exc)) from None
    if result is None:
        raise ApiError(404, "not_found", f"no sandbox {sandbox_id!r}")
    sandbox, changed = result
    if changed:
        logger.info("sandbox %s updated (changed: %s)", sandbox.id, ", ".join(changed))
    return JSONResponse({**sandbox.public(), "changed": changed})


def _set_servers(mcp: dict[str, Any]) -> dict[str, Any]:
    """The servers a patch sets (not those it removes with null)."""
    return {key: value for key, value in mcp.items() if value is not None}


def listing(gateway: Gateway) -> Response:
    try:
        sandboxes = [s for s in gateway.store.all() if not s.expired]
    except SandboxError as exc:
        raise ApiError(500, "store_error", str(exc)) from None
    return JSONResponse({"sandboxes": [s.public() for s in sandboxes]})


async def delete(gateway: Gateway, sandbox_id: str) -> Response:
    sandbox_id = sandbox_id_from(sandbox_id)
    if not await gateway.delete_sandbox(sandbox_id):
        raise ApiError(404, "not_found", f"no sandbox {sandbox_id!r}")
    logger.info("sandbox %s deleted", sandbox_id)
    return Response(status_code=204)


async def new_token(request: Request, gateway: Gateway, sandbox_id: str) -> Response:
    sandbox_id = sandbox_id_from(sandbox_id)
    body = json_object(await read_json(request, gateway.settings.max_body_bytes), TOKEN_KEYS)
    sandbox = find_sandbox(gateway, sandbox_id)
    ttl = ttl_value(body.get("ttl"))
    servers = string_list(body.get("servers"), "servers")
    tools = string_list(body.get("tools"), "tools")
    if servers is not None:
        servers = [_server_of(gateway, sandbox, name) for name in servers]
    return JSONResponse({"mcp_token": mint(gateway, sandbox, ttl, servers=servers, tools=tools)})


def _server_of(gateway: Gateway, sandbox: Sandbox, key: str) -> str:
    """A server name (or its camelCase) of the sandbox."""
    name = key
    if name not in sandbox.servers:
        try:
            name = gateway.catalog.resolve_name(key)
        except CatalogError:
            pass
    if name not in sandbox.servers:
        valid = ", ".join(sorted(sandbox.servers)) or "none"
        message = f"{key!r} is not a server of sandbox {sandbox.id!r}; its servers: {valid}"
        raise ApiError(400, "invalid_request", message)
    return name


# -- routing ---------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # the others get a JSON 405


def guarded(gateway: Gateway, methods: dict[str, Callable[[Request], Awaitable[Response]]]) -> Handler:
    """One endpoint per path: admin checks, method dispatch (405 as JSON), errors as JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            check_admin(request, gateway)
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(methods)
                raise ApiError(405, "method_not_allowed", f"use {allowed} on this path", {"Allow": allowed})
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)

    return endpoint


def routes(gateway: Gateway) -> list[Route]:
    async def post_collection(request: Request) -> Response:
        return await create(request, gateway)

    async def get_collection(request: Request) -> Response:
        return listing(gateway)

    async def get_one(request: Request) -> Response:
        return JSONResponse(find_sandbox(gateway, request.path_params["sandbox_id"]).public())

    async def delete_one(request: Request) -> Response:
        return await delete(gateway, request.path_params["sandbox_id"])

    async def patch_one(request: Request) -> Response:
        return await update(request, gateway, request.path_params["sandbox_id"])

    async def post_token(request: Request) -> Response:
        return await new_token(request, gateway, request.path_params["sandbox_id"])

    async def post_revoke(request: Request) -> Response:
        from gateway.web.revoke import revoke

        return await revoke(request, gateway)

    collection = guarded(gateway, {"GET": get_collection, "POST": post_collection})
    one = guarded(gateway, {"GET": get_one, "PATCH": patch_one, "DELETE": delete_one})
    token = guarded(gateway, {"POST": post_token})
    revocation = guarded(gateway, {"POST": post_revoke})
    return [
        Route("/admin/sandboxes", endpoint=collection, methods=ANY_METHOD),
        Route("/admin/sandboxes/{sandbox_id}", endpoint=one, methods=ANY_METHOD),
        Route("/admin/sandboxes/{sandbox_id}/token", endpoint=token, methods=ANY_METHOD),
        Route("/admin/tokens/revoke", endpoint=revocation, methods=ANY_METHOD),
    ]
