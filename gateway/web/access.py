"""Who may use the admin routes: the admin key, from an acceptable Origin. One check for all of them.

- An ``Origin`` that is not loopback, the gateway's own public origin or listed with
  ``--allow-origin``: 403 ``forbidden`` (browsers' cross-site requests).
- The admin key as a bearer token: allowed.
- A valid *sandbox* token: 403 ``insufficient_scope`` (a real credential, but not for this).
- Anything else: 401 with a ``WWW-Authenticate: Bearer`` challenge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core.auth import AuthError, bearer_from_header, check_admin_key
from gateway.features.metrics import count_rejection

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway


@dataclass(frozen=True, slots=True)
class AdminRefusal:
    status: int
    error: str
    message: str
    headers: dict[str, str] | None = None

    def response(self) -> Response:
        return JSONResponse(
            {"error": self.error, "message": self.message}, status_code=self.status, headers=self.headers
        )


def _origin_ok(origin: str, gateway: Gateway) -> bool:
    from gateway.web.app import is_loopback_host

    if origin in gateway.settings.allow_origins:
        return True
    parts = urlsplit(origin)
    own = urlsplit(gateway.settings.mcp_url)
    if (parts.scheme, parts.netloc) == (own.scheme, own.netloc):
        return True
    return parts.scheme in ("http", "https") and bool(parts.hostname) and is_loopback_host(parts.hostname or "")


def admin_refusal(request: Request, gateway: Gateway) -> AdminRefusal | None:
    """None when the request may use the admin routes, else why not (the rejection is counted)."""
    origin = request.headers.get("origin")
    if origin is not None and not _origin_ok(origin, gateway):
        count_rejection("origin")
        return AdminRefusal(403, "forbidden", "this Origin may not use the admin API")
    presented = bearer_from_header(request.headers.get("authorization"))
    if check_admin_key(presented, gateway.admin_key):
        return None
    count_rejection("auth")
    metadata = gateway.settings.base_url + "/.well-known/oauth-protected-resource"
    challenge = f'Bearer realm="mcp-gateway-admin", resource_metadata="{metadata}"'
    if presented is None:
        return AdminRefusal(
            401,
            "unauthorized",
            "the admin key is required: send Authorization: Bearer <admin key>",
            {"WWW-Authenticate": challenge},
        )
    try:
        gateway.tokens.verify(presented)
    except AuthError:
        challenge += ', error="invalid_token", error_description="the admin key is not valid"'
        return AdminRefusal(401, "unauthorized", "the admin key is not valid", {"WWW-Authenticate": challenge})
    challenge += ', error="insufficient_scope", error_description="a sandbox token cannot use the admin API"'
    return AdminRefusal(
        403,
        "insufficient_scope",
        "a sandbox token cannot use the admin API; use the admin key",
        {"WWW-Authenticate": challenge},
    )


def admin_denied(request: Request, gateway: Gateway) -> Response | None:
    """:func:`admin_refusal` as a ready response, for routes that return early."""
    refusal = admin_refusal(request, gateway)
    return refusal.response() if refusal is not None else None
