"""``mcp-gateway status | tools | call``: talk to a running gateway.

Where it runs: ``--url`` (the gateway's base URL), else ``$MCP_GATEWAY_URL``, else the
``public_url`` the last ``serve`` of the data dir recorded in ``gateway.json`` (minus ``/mcp``),
else http://127.0.0.1:8811.
The admin key: ``--admin-key``, else ``$MCP_GATEWAY_ADMIN_KEY``, else ``DATA_DIR/admin.key``.
``tools`` and ``call`` act as a client with ``--token``, else ``$MCP_GATEWAY_TOKEN``, else the
default sandbox's ``DATA_DIR/token``; with ``--sandbox ID`` they mint a short-lived token of
that sandbox with the admin API.

Nothing here creates files: the data dir is only read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gateway.cli.main import UserError, add_data_dir
from gateway.store.datadir import default_data_dir

DEFAULT_BASE_URL = "http://127.0.0.1:8811"
MINTED_TOKEN_TTL = 600
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 900.0


def register(commands: Any) -> None:
    status = commands.add_parser("status", help="servers and sessions of a running gateway")
    _add_remote(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=cmd_status)

    tools = commands.add_parser("tools", help="the tool list as a client of a sandbox sees it")
    _add_remote(tools)
    _add_client(tools)
    tools.add_argument("--json", action="store_true", help="print the tools (with their schemas) as JSON")
    tools.set_defaults(handler=cmd_tools)

    call = commands.add_parser("call", help="call one tool and print its result")
    call.add_argument("tool", metavar="TOOL", help="the tool's name as `tools` lists it")
    call.add_argument("--args", default="{}", metavar="JSON", help="arguments: a JSON object, @FILE or - (stdin)")
    _add_remote(call)
    _add_client(call)
    call.add_argument("--json", action="store_true", help="print the whole result as JSON")
    call.set_defaults(handler=cmd_call)


def _add_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", metavar="BASE_URL", help="the gateway (default $MCP_GATEWAY_URL, else from DATA_DIR/gateway.json)"
    )
    add_data_dir(parser)
    parser.add_argument("--admin-key", help="admin key (default $MCP_GATEWAY_ADMIN_KEY or DATA_DIR/admin.key)")


def _add_client(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--sandbox", metavar="ID", help="act as this sandbox (mints a short-lived token)")
    who.add_argument("--token", help="act with this sandbox token (default $MCP_GATEWAY_TOKEN, else DATA_DIR/token)")


# -- where and who ---------------------------------------------------------------------------------


class Remote:
    """A running gateway as seen from the command line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
        self.base_url = self._base_url()

    def _base_url(self) -> str:
        url = self.args.url or os.environ.get("MCP_GATEWAY_URL")
        if not url:
            try:
                state = json.loads((self.data / "gateway.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
            url = state.get("public_url") if isinstance(state, dict) else None
        url = (url or DEFAULT_BASE_URL).rstrip("/")
        if url.endswith("/mcp"):
            url = url[: -len("/mcp")]
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--url must be an http:// or https:// URL, not {url!r}")
        return url

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    def admin_key(self) -> str:
        key = self.args.admin_key or os.environ.get("MCP_GATEWAY_ADMIN_KEY")
        if not key:
            try:
                key = (self.data / "admin.key").read_text(encoding="utf-8").strip()
            except OSError:
                key = ""
        if not key:
            raise UserError(
                f"no admin key: pass --admin-key, set $MCP_GATEWAY_ADMIN_KEY, or use the data dir of the gateway "
                f"(no {self.data / 'admin.key'})"
            )
        return key

    def unreachable(self) -> UserError:
        return UserError(
            f"cannot reach the gateway at {self.base_url} (is it running? start it with: mcp-gateway serve)"
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_key()}"}
        try:
            response = httpx.request(method, self.base_url + path, headers=headers, timeout=CONNECT_TIMEOUT, **kwargs)
        except httpx.HTTPError:
            raise self.unreachable() from None
        if response.status_code == 401:
            raise UserError(
                "the gateway refused the admin key (use --admin-key, $MCP_GATEWAY_ADMIN_KEY or DATA_DIR/admin.key)"
            )
        return response

    def token(self) -> str:
        if self.args.token:
            return str(self.args.token)
        if self.args.sandbox:
            return self.mint(self.args.sandbox)
        if os.environ.get("MCP_GATEWAY_TOKEN"):
            return os.environ["MCP_GATEWAY_TOKEN"].strip()
        try:
            token = (self.data / "token").read_text(encoding="utf-8").strip()
        except OSError:
            token = ""
        if not token:
            raise UserError(
                f"no token: pass --token or --sandbox ID, or use the gateway's data dir (no {self.data}/token)"
            )
        return token

    def mint(self, sandbox: str) -> str:
        response = self.admin(
            "POST", f"/admin/sandboxes/{quote(sandbox, safe='')}/token", json={"ttl": MINTED_TOKEN_TTL}
        )
        if response.status_code == 404:
            raise UserError(f"{_message(response)} on the gateway at {self.base_url} (see: mcp-gateway sandbox list)")
        if response.status_code != 200:
            raise UserError(f"could not get a token for sandbox {sandbox!r}: {_message(response)}")
        return str(response.json()["mcp_token"])


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {response.status_code}"


# -- status ------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    remote = Remote(args)
    response = remote.admin("GET", "/admin/status")
    if response.status_code != 200:
        raise UserError(f"the gateway answered /admin/status with {response.status_code}: {_message(response)}")
    status = response.json()
    sessions = _open_sessions(remote)
    for sandbox in status.get("sandboxes", []):
        sandbox.setdefault("sessions", sessions.get(sandbox.get("id"), 0))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    health = _health(remote)
    up = f", up {_duration(health['uptime_s'])}" if isinstance(health.get("uptime_s"), int | float) else ""
    print(f"Gateway {remote.base_url} (version {health.get('version', '?')}{up})")
    sandboxes = status.get("sandboxes", [])
    if not sandboxes:
        print("No live sandboxes: a sandbox starts when a client first uses it.")
    for sandbox in sandboxes:
        print()
        count = sandbox.get("sessions", 0)
        print(f"Sandbox {sandbox.get('id')}: {count} open session{'s' if count != 1 else ''}")
        rows = [
            [
                server.get("name", ""),
                server.get("state", ""),
                _text(server.get("pid")),
                _duration(server.get("uptime_s")),
                _text(server.get("restarts")),
                _text(server.get("calls")),
                _one_line(server.get("last_error")),
            ]
            for server in sandbox.get("servers", [])
        ]
        if rows:
            _table(["SERVER", "STATE", "PID", "UPTIME", "RESTARTS", "CALLS", "LAST ERROR"], rows, indent="  ")
        else:
            print("  no servers")
    return 0


def _health(remote: Remote) -> dict[str, Any]:
    try:
        body = httpx.get(remote.base_url + "/healthz", timeout=CONNECT_TIMEOUT).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _open_sessions(remote: Remote) -> dict[str, int]:
    """Open sessions per sandbox, from the gateway's metrics (empty if it has none)."""
    from prometheus_client.parser import text_string_to_metric_families

    response = remote.admin("GET", "/metrics")
    if response.status_code != 200:
        return {}
    sessions: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(response.text):
            if family.name == "mcp_gateway_open_sessions":
                for sample in family.samples:
                    sessions[sample.labels.get("sandbox", "")] = int(sample.value)
    except ValueError:
        return {}
    return sessions


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _one_line(value: Any, width: int = 80) -> str:
    if not value:
        return "-"
    line = " ".join(str(value).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]], indent: str = "") -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        print(indent + "  ".join(cells).rstrip())


# -- tools and call -----------------------------------------------------------------------------------


def cmd_tools(args: argparse.Namespace) -> int:
    remote = Remote(args)
    tools = _run_client(remote, remote.token(), _list_tools)
    if args.json:
        print(json.dumps(tools, indent=2))
        return 0
    if not tools:
        print("No tools: this sandbox has no servers (or the token sees none).")
        return 0
    width = max(len(tool["name"]) for tool in tools)
    for tool in tools:
        description = _one_line(tool.get("description") or "", 100)
        print(f"{tool['name']:<{width}}  {description if description != '-' else ''}".rstrip())
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    arguments = _parse_arguments(args.args)
    remote = Remote(args)
    token = remote.token()

    async def call(client: Any) -> dict[str, Any]:
        result = await client.call_tool(args.tool, arguments)
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")

    result = _run_client(remote, token, call)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for line in _result_lines(result):
            print(line)
    if result.get("isError"):
        print(f"mcp-gateway: the tool {args.tool} reported an error", file=sys.stderr)
        return 1
    return 0


def _parse_arguments(text: str) -> dict[str, Any]:
    source = "--args"
    if text == "-":
        text, source = sys.stdin.read(), "--args - (stdin)"
    elif text.startswith("@"):
        try:
            text, source = Path(text[1:]).read_text(encoding="utf-8"), f"--args {text}"
        except OSError as exc:
            raise UserError(f"cannot read {text[1:]}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise UserError(f'{source} must be a JSON object, like {{"text": "hi"}}')
    return value


def _result_lines(result: dict[str, Any]) -> Iterator[str]:
    content = result.get("content") or []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            yield str(item.get("text", ""))
        elif kind in ("image", "audio"):
            size = len(item.get("data", "")) * 3 // 4
            yield f"[{kind}: {item.get('mimeType', '?')}, about {size} bytes]"
        elif kind == "resource_link":
            yield f"[resource link: {item.get('uri')}]"
        elif kind == "resource":
            resource = item.get("resource", {})
            yield resource["text"] if "text" in resource else f"[resource: {resource.get('uri')}]"
        else:
            yield json.dumps(item)
    if not content and "structuredContent" in result:
        yield json.dumps(result["structuredContent"], indent=2)


async def _list_tools(client: Any) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _run_client(remote: Remote, token: str, action: Any) -> Any:
    _check_reachable(remote)
    try:
        return asyncio.run(_with_client(remote, token, action))
    except BaseException as exc:
        raise _user_error(remote, exc) from None


def _check_reachable(remote: Remote) -> None:
    try:
        httpx.get(remote.base_url + "/healthz", timeout=CONNECT_TIMEOUT)
    except httpx.HTTPError:
        raise remote.unreachable() from None


async def _with_client(remote: Remote, token: str, action: Any) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(CALL_TIMEOUT, connect=CONNECT_TIMEOUT)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with Client(streamable_http_client(remote.mcp_url, http_client=http), mode="legacy") as client:
            return await action(client)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _user_error(remote: Remote, exc: BaseException) -> BaseException:
    """One line for what went wrong in an MCP exchange (the SDK wraps errors in exception groups)."""
    import httpx2
    from mcp.shared.exceptions import MCPError

    for leaf in _leaves(exc):
        if isinstance(leaf, KeyboardInterrupt | UserError):
            return leaf
        if isinstance(leaf, httpx2.HTTPStatusError):
            if leaf.response.status_code == 401:
                return UserError("the gateway refused the sandbox token (expired, or for another gateway?)")
            return UserError(f"the gateway answered HTTP {leaf.response.status_code}")
        if isinstance(leaf, httpx2.TransportError | httpx.TransportError | ConnectionError):
            return remote.unreachable()
        if isinstance(leaf, MCPError):
            message = _one_line(str(leaf), 300)
            if message.startswith("Unauthorized"):
                return UserError(f"the gateway refused the sandbox token ({message.split(':', 1)[-1].strip()})")
            return UserError(message)
    first = next(_leaves(exc))
    return UserError(f"the MCP exchange failed: {type(first).__name__}: {_one_line(str(first), 200)}")
