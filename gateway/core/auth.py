"""Tokens: mint, verify, claims.

Sandbox tokens are JWTs. By default the gateway signs them itself (HS256, the data dir's
signing key). An external issuer may be configured instead (a public key file or a JWKS URL,
RS256/ES256/EdDSA). The accepted algorithms are fixed here, never read from the token, and
header parameters that point at other keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are refused.

Tokens the gateway mints carry the generation of their sandbox (``gen``); whether it is still
the live sandbox's, and whether the token's ``jti`` was revoked, is checked by the gateway
(gateway.core.gateway) on every request, since both change while a token is valid.
"""

from __future__ import annotations

import fnmatch
import hmac
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

DEFAULT_ISSUER = "mcp-gateway"
DEFAULT_TTL = 24 * 3600
LEEWAY_SECONDS = 30
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256", "EdDSA"]
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
JWKS_COOLDOWN = 5.0


class AuthError(Exception):
    """A credential was missing or refused. ``error`` is the RFC 6750 error code."""

    def __init__(self, description: str, error: str = "invalid_token", status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a sandbox, narrowed by the token's optional ``servers`` and ``tools`` claims."""

    sandbox: str
    servers: tuple[str, ...] | None = None
    tools: tuple[str, ...] | None = None
    token_id: str | None = None
    expires_at: float | None = None
    # Set for tokens this gateway signed itself: the sandbox generation they were minted for
    # ("" when the token has no ``gen`` claim). None for external-issuer tokens and the
    # GATEWAY_ACCESS_TOKEN, which are not bound to one incarnation of a sandbox.
    generation: str | None = None

    def may_use_server(self, server: str) -> bool:
        return self.servers is None or server in self.servers

    def may_use_tool(self, server: str, tool_name: str) -> bool:
        """``tool_name`` is the name the client sees (``server__tool``)."""
        if not self.may_use_server(server):
            return False
        return self.tools is None or any(fnmatch.fnmatchcase(tool_name, pattern) for pattern in self.tools)


def _string_list(value: Any, claim: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"the {claim!r} claim must be a list of strings")
    return tuple(value)


class TokenService:
    """Mints and verifies sandbox tokens for one audience (the public MCP URL)."""

    def __init__(
        self,
        signing_key: bytes,
        audience: str,
        issuer: str = DEFAULT_ISSUER,
        public_key_file: Path | None = None,
        jwks_url: str | None = None,
        access_token: str | None = None,
        default_sandbox: str = "default",
    ) -> None:
        self._signing_key = signing_key
        self.audience = audience
        self.issuer = issuer
        self._access_token = access_token or None
        self._default_sandbox = default_sandbox
        self._public_key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        if public_key_file is not None:
            try:
                self._public_key = public_key_file.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read --jwt-public-key {public_key_file}: {exc.strerror}") from None
        if jwks_url is not None:
            # Unknown kids refetch the set at most every JWKS_COOLDOWN seconds: a flood of forged kids
            # cannot turn into a flood of fetches.
            self._jwks = jwt.PyJWKClient(
                jwks_url, cache_keys=True, max_cached_keys=16, lifespan=300, timeout=5, cooldown_duration=JWKS_COOLDOWN
            )

    @property
    def fetches_keys(self) -> bool:
        """Verification may fetch a JWKS over the network (so callers run it off the event loop)."""
        return self._jwks is not None

    @property
    def external(self) -> bool:
        return self._public_key is not None or self._jwks is not None

    def mint(
        self,
        sandbox: str,
        ttl: int | None = DEFAULT_TTL,
        servers: Sequence[str] | None = None,
        tools: Sequence[str] | None = None,
        generation: str | None = None,
    ) -> str:
        """A token for ``sandbox``; ``generation`` is the sandbox's (see gateway.store.sandboxes)."""
        if self.external:
            raise ValueError("this gateway verifies tokens from an external issuer; it does not mint them")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sandbox,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
        }
        if ttl:
            claims["exp"] = now + int(ttl)
        if servers is not None:
            claims["servers"] = list(servers)
        if tools is not None:
            claims["tools"] = list(tools)
        if generation:
            claims["gen"] = generation
        return jwt.encode(claims, self._signing_key, algorithm="HS256", headers={"typ": "JWT"})

    def _key_for(self, token: str, header: dict[str, Any]) -> tuple[Any, list[str]]:
        if self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key, ASYMMETRIC_ALGORITHMS
            except jwt.PyJWKClientError as exc:
                raise AuthError(f"no signing key for this token: {str(exc).splitlines()[0]}") from None
        if self._public_key is not None:
            return self._public_key, ASYMMETRIC_ALGORITHMS
        if header.get("kid") is not None:
            raise AuthError("unknown key id")
        return self._signing_key, ["HS256"]

    def verify(self, token: str) -> Principal:
        """Check a bearer token and return the principal it names. Raises :class:`AuthError`."""
        if self.is_access_token(token):
            return Principal(sandbox=self._default_sandbox)
        return self._decode(token, check_expiry=True)

    def is_access_token(self, token: str) -> bool:
        """The configured ``GATEWAY_ACCESS_TOKEN`` (compared in constant time)."""
        return self._access_token is not None and hmac.compare_digest(token.encode(), self._access_token.encode())

    def inspect(self, token: str) -> Principal:
        """Like :meth:`verify` (signature, audience, issuer), but an expired token is still read:
        revoking one that has just expired is harmless. The access token is not a JWT here."""
        return self._decode(token, check_expiry=False)

    def _decode(self, token: str, check_expiry: bool) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        if any(name in header for name in FORBIDDEN_HEADERS):
            raise AuthError("token headers that name keys (jku, x5u, jwk, x5c) are not accepted")
        key, algorithms = self._key_for(token, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_signature": True,
                    "verify_exp": check_expiry,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience does not match this gateway") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("token algorithm is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        sandbox = claims.get("sub")
        if not isinstance(sandbox, str) or not sandbox:
            raise AuthError("token subject must name a sandbox")
        token_id = claims.get("jti")
        if token_id is not None and not isinstance(token_id, str):
            raise AuthError("the 'jti' claim must be a string")
        generation: str | None = None
        if not self.external:  # signed with this gateway's own key: bound to one sandbox incarnation
            generation = claims.get("gen", "")
            if not isinstance(generation, str):
                raise AuthError("the 'gen' claim must be a string")
        return Principal(
            sandbox=sandbox,
            servers=_string_list(claims.get("servers"), "servers"),
            tools=_string_list(claims.get("tools"), "tools"),
            token_id=token_id,
            expires_at=claims.get("exp"),
            generation=generation,
        )


def check_admin_key(presented: str | None, admin_key: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), admin_key.encode())


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
