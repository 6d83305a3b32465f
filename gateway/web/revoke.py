"""``POST /admin/tokens/revoke``: refuse one token from now on, by the token itself or by its ``jti``.

Body, one of:

- ``{"token": "<jwt>"}``: the token is checked (signature, audience, issuer; an expired one is
  accepted, revoking it is harmless) and its ``sub`` and ``jti`` are revoked until its ``exp``.
- ``{"jti": "...", "sandbox": "<id>"}``: for a token that is no longer at hand. The sandbox must
  exist; the entry is kept until the sandbox expires (for good if it never does).

Answer: 200 ``{"revoked": true, "sandbox", "jti", "until"}`` (``until`` ISO 8601 UTC or null).
Revocations take effect on the next request (sessions already open included), are kept in the
store across restarts and pruned once the token would have expired anyway. To cut off every
token of a sandbox at once, delete it: tokens are bound to one incarnation of a sandbox.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core.auth import LEEWAY_SECONDS, AuthError, Principal
from gateway.core.gateway import Gateway
from gateway.web.admin import ApiError, find_sandbox, json_object, read_json

logger = logging.getLogger("gateway.admin")

REVOKE_KEYS = ("token", "jti", "sandbox")
MAX_JTI_CHARS = 256


async def revoke(request: Request, gateway: Gateway) -> Response:
    body = json_object(await read_json(request, gateway.settings.max_body_bytes), REVOKE_KEYS)
    if "token" in body:
        if len(body) > 1:
            raise ApiError(400, "invalid_request", "send either {'token'} or {'jti', 'sandbox'}, not both")
        sandbox_id, jti, until = await _from_token(gateway, body["token"])
    else:
        jti = _string(body.get("jti"), "jti")
        if len(jti) > MAX_JTI_CHARS:
            raise ApiError(400, "invalid_request", f"'jti' is longer than {MAX_JTI_CHARS} characters")
        sandbox = find_sandbox(gateway, _string(body.get("sandbox"), "sandbox"))
        sandbox_id, until = sandbox.id, sandbox.expires_at
    gateway.revoke_token(sandbox_id, jti, until)
    logger.info("token %s of sandbox %s revoked", jti, sandbox_id)
    answer = {"revoked": True, "sandbox": sandbox_id, "jti": jti, "until": _iso(until)}
    return JSONResponse(answer)


async def _from_token(gateway: Gateway, token: Any) -> tuple[str, str, float | None]:
    token = _string(token, "token")
    tokens = gateway.tokens
    if tokens.is_access_token(token):
        message = "GATEWAY_ACCESS_TOKEN cannot be revoked; unset it and restart the gateway"
        raise ApiError(400, "not_revocable", message)
    try:
        principal: Principal = (
            await anyio.to_thread.run_sync(tokens.inspect, token) if tokens.fetches_keys else tokens.inspect(token)
        )
    except AuthError as exc:
        raise ApiError(400, "invalid_token", f"not a token this gateway accepts: {exc.description}") from None
    if not principal.token_id:
        message = "the token has no 'jti' claim, so it cannot be revoked alone (delete its sandbox instead)"
        raise ApiError(400, "not_revocable", message)
    until = float(principal.expires_at) + LEEWAY_SECONDS if principal.expires_at is not None else None
    return principal.sandbox, principal.token_id, until


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(
            400, "invalid_request", f"{key!r} must be a non-empty string; send {{'token'}} or {{'jti', 'sandbox'}}"
        )
    return value


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
