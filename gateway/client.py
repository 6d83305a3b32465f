"""A Python client for the gateway's sandbox admin API, in the spirit of E2B's SDK.

    from gateway.client import GatewayClient

    gateway = GatewayClient("http://127.0.0.1:8811", admin_key="...")
    sandbox = gateway.create_sandbox(mcp={"githubOfficial": {"githubPersonalAccessToken": "ghp_..."}})
    sandbox.mcp_url, sandbox.mcp_token      # hand these to an MCP client
    sandbox.delete()

:class:`AsyncGatewayClient` is the same with ``await``. Every failure raises
:class:`GatewayError` with the HTTP status (0 when the gateway could not be reached) and the
gateway's one-line message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8811"
DEFAULT_TIMEOUT = 60.0


class GatewayError(Exception):
    """The gateway refused a request (``status`` 4xx/5xx) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, error: str | None = None) -> None:
        super().__init__(f"{status} {message}" if status else message)
        self.status = status
        self.message = message
        self.error = error


def default_admin_key() -> str | None:
    """``$MCP_GATEWAY_ADMIN_KEY``, else the admin key of the data dir (``$MCP_GATEWAY_HOME``)."""
    env = os.environ.get("MCP_GATEWAY_ADMIN_KEY")
    if env:
        return env
    home = os.environ.get("MCP_GATEWAY_HOME")
    path = (Path(home).expanduser() if home else Path.home() / ".mcp-gateway") / "admin.key"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _error_from(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return GatewayError(response.status_code, body["message"], body.get("error"))
    text = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
    return GatewayError(response.status_code, text[:300])


def _unreachable(base_url: str, exc: httpx.HTTPError) -> GatewayError:
    return GatewayError(0, f"cannot reach the gateway at {base_url}: {type(exc).__name__}: {exc}".rstrip(": "))


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise _error_from(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


@dataclass
class SandboxInfo:
    """What every sandbox answer holds; never a secret value."""

    id: str
    servers: list[str]
    mcp_url: str
    created_at: str | None = None
    expires_at: str | None = None
    # Set by create_sandbox and new_token (list/get mint none); kept out of repr() and logs.
    mcp_token: str | None = field(default=None, repr=False)
    # Set by update_sandbox: the servers the update set, replaced or removed (those restarted).
    changed: list[str] = field(default_factory=list)


@dataclass
class Sandbox(SandboxInfo):
    """A sandbox handle of the sync client."""

    _client: GatewayClient | None = field(default=None, repr=False, compare=False)

    def delete(self) -> None:
        assert self._client is not None
        self._client.delete_sandbox(self.id)

    def update(self, mcp: dict[str, Any]) -> list[str]:
        """Apply an ``mcp`` patch (see :meth:`GatewayClient.update_sandbox`); returns the changed servers."""
        assert self._client is not None
        updated = self._client.update_sandbox(self.id, mcp)
        self.servers, self.changed = updated.servers, updated.changed
        return self.changed

    def new_token(
        self, ttl: float | None = None, servers: list[str] | None = None, tools: list[str] | None = None
    ) -> str:
        assert self._client is not None
        self.mcp_token = self._client.new_token(self.id, ttl=ttl, servers=servers, tools=tools)
        return self.mcp_token

    def claude_command(self, name: str = "mcp-gateway") -> str:
        """The ``claude mcp add`` line for this sandbox (holds the token: do not log it)."""
        return claude_command(self, name)


@dataclass
class AsyncSandbox(SandboxInfo):
    """A sandbox handle of the async client."""

    _client: AsyncGatewayClient | None = field(default=None, repr=False, compare=False)

    async def delete(self) -> None:
        assert self._client is not None
        await self._client.delete_sandbox(self.id)

    async def update(self, mcp: dict[str, Any]) -> list[str]:
        """Apply an ``mcp`` patch (see :meth:`AsyncGatewayClient.update_sandbox`); returns the changed servers."""
        assert self._client is not None
        updated = await self._client.update_sandbox(self.id, mcp)
        self.servers, self.changed = updated.servers, updated.changed
        return self.changed

    async def new_token(
        self, ttl: float | None = None, servers: list[str] | None = None, tools: list[str] | None = None
    ) -> str:
        assert self._client is not None
        self.mcp_token = await self._client.new_token(self.id, ttl=ttl, servers=servers, tools=tools)
        return self.mcp_token

    def claude_command(self, name: str = "mcp-gateway") -> str:
        return claude_command(self, name)


def claude_command(sandbox: SandboxInfo, name: str) -> str:
    if not sandbox.mcp_token:
        raise ValueError("this sandbox handle holds no token; call new_token() first")
    header = f'--header "Authorization: Bearer {sandbox.mcp_token}"'
    return f"claude mcp add --transport http {name} {sandbox.mcp_url} {header}"


def _create_body(
    mcp: dict[str, Any] | None, id: str | None, ttl: float | None, discovery: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"mcp": mcp or {}}
    if id is not None:
        body["id"] = id
    if ttl is not None:
        body["ttl"] = ttl
    if discovery is not None:
        body["discovery"] = discovery
    return body


def _token_body(ttl: float | None, servers: list[str] | None, tools: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = ttl
    if servers is not None:
        body["servers"] = servers
    if tools is not None:
        body["tools"] = tools
    return body


def _revoke_body(token: str | None, jti: str | None, sandbox: str | None) -> dict[str, Any]:
    if token is not None:
        if jti is not None or sandbox is not None:
            raise ValueError("pass either a token, or jti= and sandbox=")
        return {"token": token}
    if jti is None or sandbox is None:
        raise ValueError("pass a token, or both jti= and sandbox=")
    return {"jti": jti, "sandbox": sandbox}


def _info(data: dict[str, Any], mcp_url: str) -> dict[str, Any]:
    return {
        "id": data["id"],
        "servers": list(data.get("servers") or []),
        "mcp_url": data.get("mcp_url") or mcp_url,
        "created_at": data.get("created_at"),
        "expires_at": data.get("expires_at"),
        "mcp_token": data.get("mcp_token"),
        "changed": list(data.get("changed") or []),
    }


class _Base:
    def __init__(self, base_url: str | None, admin_key: str | None) -> None:
        url = (base_url or os.environ.get("MCP_GATEWAY_URL") or DEFAULT_URL).rstrip("/")
        self.base_url = url[: -len("/mcp")] if url.endswith("/mcp") else url
        key = admin_key or default_admin_key()
        if not key:
            raise GatewayError(0, "no admin key: pass admin_key=, or set $MCP_GATEWAY_ADMIN_KEY")
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self._mcp_url: str | None = None

    def _mcp_url_from(self, metadata: Any) -> str:
        resource = metadata.get("resource") if isinstance(metadata, dict) else None
        return resource if isinstance(resource, str) and resource else self.base_url + "/mcp"


class GatewayClient(_Base):
    """Synchronous client of the admin API. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self, base_url: str | None = None, admin_key: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(base_url, admin_key)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        return _check(response)

    @property
    def mcp_url(self) -> str:
        """The gateway's public MCP URL (from its protected-resource metadata)."""
        if self._mcp_url is None:
            self._mcp_url = self._mcp_url_from(self._request("GET", "/.well-known/oauth-protected-resource"))
        return self._mcp_url

    def _sandbox(self, data: dict[str, Any]) -> Sandbox:
        url = data.get("mcp_url") or self.mcp_url
        return Sandbox(**_info(data, url), _client=self)

    def create_sandbox(
        self,
        mcp: dict[str, Any] | None = None,
        id: str | None = None,
        ttl: float | None = None,
        discovery: str | None = None,
    ) -> Sandbox:
        data = self._request("POST", "/admin/sandboxes", _create_body(mcp, id, ttl, discovery))
        self._mcp_url = data.get("mcp_url") or self._mcp_url
        return self._sandbox(data)

    def list_sandboxes(self) -> list[Sandbox]:
        data = self._request("GET", "/admin/sandboxes")
        return [self._sandbox(item) for item in data.get("sandboxes", [])]

    def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return self._sandbox(self._request("GET", f"/admin/sandboxes/{_quote(sandbox_id)}"))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._request("DELETE", f"/admin/sandboxes/{_quote(sandbox_id)}")

    def update_sandbox(self, sandbox_id: str, mcp: dict[str, Any]) -> Sandbox:
        """Update a live sandbox in place: each server in ``mcp`` gets exactly these settings
        (added if new), a server given as ``None`` is removed, the others stay as they are.
        Only the changed servers restart (listed in ``.changed``); its tokens keep working."""
        return self._sandbox(self._request("PATCH", f"/admin/sandboxes/{_quote(sandbox_id)}", {"mcp": mcp}))

    def new_token(
        self,
        sandbox_id: str,
        ttl: float | None = None,
        servers: list[str] | None = None,
        tools: list[str] | None = None,
    ) -> str:
        path = f"/admin/sandboxes/{_quote(sandbox_id)}/token"
        return str(self._request("POST", path, _token_body(ttl, servers, tools))["mcp_token"])

    def revoke_token(
        self, token: str | None = None, *, jti: str | None = None, sandbox: str | None = None
    ) -> dict[str, Any]:
        """Refuse one token from now on: pass the token, or its ``jti`` and ``sandbox``.

        Returns ``{"revoked": True, "sandbox", "jti", "until"}``.
        """
        return dict(self._request("POST", "/admin/tokens/revoke", _revoke_body(token, jti, sandbox)))


class AsyncGatewayClient(_Base):
    """Asynchronous client of the admin API. Use with ``async with``, or call :meth:`aclose`."""

    def __init__(
        self, base_url: str | None = None, admin_key: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(base_url, admin_key)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout)

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None
        return _check(response)

    async def get_mcp_url(self) -> str:
        """The gateway's public MCP URL (from its protected-resource metadata)."""
        if self._mcp_url is None:
            self._mcp_url = self._mcp_url_from(await self._request("GET", "/.well-known/oauth-protected-resource"))
        return self._mcp_url

    async def _sandbox(self, data: dict[str, Any]) -> AsyncSandbox:
        url = data.get("mcp_url") or await self.get_mcp_url()
        return AsyncSandbox(**_info(data, url), _client=self)

    async def create_sandbox(
        self,
        mcp: dict[str, Any] | None = None,
        id: str | None = None,
        ttl: float | None = None,
        discovery: str | None = None,
    ) -> AsyncSandbox:
        data = await self._request("POST", "/admin/sandboxes", _create_body(mcp, id, ttl, discovery))
        self._mcp_url = data.get("mcp_url") or self._mcp_url
        return await self._sandbox(data)

    async def list_sandboxes(self) -> list[AsyncSandbox]:
        data = await self._request("GET", "/admin/sandboxes")
        return [await self._sandbox(item) for item in data.get("sandboxes", [])]

    async def get_sandbox(self, sandbox_id: str) -> AsyncSandbox:
        return await self._sandbox(await self._request("GET", f"/admin/sandboxes/{_quote(sandbox_id)}"))

    async def delete_sandbox(self, sandbox_id: str) -> None:
        await self._request("DELETE", f"/admin/sandboxes/{_quote(sandbox_id)}")

    async def update_sandbox(self, sandbox_id: str, mcp: dict[str, Any]) -> AsyncSandbox:
        """Update a live sandbox in place (see :meth:`GatewayClient.update_sandbox`)."""
        data = await self._request("PATCH", f"/admin/sandboxes/{_quote(sandbox_id)}", {"mcp": mcp})
        return await self._sandbox(data)

    async def new_token(
        self,
        sandbox_id: str,
        ttl: float | None = None,
        servers: list[str] | None = None,
        tools: list[str] | None = None,
    ) -> str:
        path = f"/admin/sandboxes/{_quote(sandbox_id)}/token"
        data = await self._request("POST", path, _token_body(ttl, servers, tools))
        return str(data["mcp_token"])

    async def revoke_token(
        self, token: str | None = None, *, jti: str | None = None, sandbox: str | None = None
    ) -> dict[str, Any]:
        """Refuse one token from now on: pass the token, or its ``jti`` and ``sandbox``."""
        return dict(await self._request("POST", "/admin/tokens/revoke", _revoke_body(token, jti, sandbox)))


def _quote(sandbox_id: str) -> str:
    return quote(sandbox_id, safe="")
