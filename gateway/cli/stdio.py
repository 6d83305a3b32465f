"""``mcp-gateway stdio``: the gateway for a client that only starts stdio servers (Claude Desktop).

JSON-RPC messages read from stdin (one per line) go to the gateway over streamable HTTP with the
token; its responses, requests and notifications come back on stdout, one per line. Both ends are
the mcp SDK's own transports (``stdio_server`` and ``streamable_http_client``); the bridge only
relays messages and, once the handshake has agreed on a protocol version, stamps it on every
later request as the HTTP transport requires (``MCP-Protocol-Version``). Logs go to stderr.
A line that is not JSON-RPC gets a JSON-RPC parse error; stdin's end closes the session.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse

from gateway.cli.main import UserError, add_data_dir

logger = logging.getLogger("gateway.stdio")

PARSE_ERROR = -32700
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 900.0  # a tool call may take long; the gateway's own call timeout ends it first


def register(commands: Any) -> None:
    stdio = commands.add_parser("stdio", help="bridge a stdio-only MCP client to the gateway")
    stdio.add_argument("--url", metavar="BASE_URL", help="the gateway (default $MCP_GATEWAY_URL or the data dir's)")
    stdio.add_argument("--token", help="the token (default $MCP_GATEWAY_TOKEN or DATA_DIR/token)")
    add_data_dir(stdio)
    stdio.set_defaults(handler=cmd_stdio)


def cmd_stdio(args: argparse.Namespace) -> int:
    from gateway.cli.remote import Remote

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="mcp-gateway stdio: %(message)s")
    remote = Remote(
        argparse.Namespace(url=args.url, data_dir=args.data_dir, admin_key=None, token=args.token, sandbox=None)
    )
    token = remote.token()
    try:
        anyio.run(bridge, remote.mcp_url, token)
    except* (httpx2.TransportError, OSError) as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        reason = str(leaf).splitlines()[0] if str(leaf) else type(leaf).__name__
        raise UserError(f"cannot reach the gateway at {remote.base_url} ({reason}); is it running?") from None
    return 0


class Bridge:
    def __init__(self) -> None:
        self.protocol_version: str | None = None
        self.initialize_ids: set[Any] = set()

    def outgoing(self, message: SessionMessage) -> SessionMessage:
        inner = message.message
        if isinstance(inner, JSONRPCRequest) and inner.method == "initialize":
            self.initialize_ids.add(inner.id)
        if self.protocol_version is None:
            return message
        return SessionMessage(
            inner, metadata=ClientMessageMetadata(headers={"MCP-Protocol-Version": self.protocol_version})
        )

    def incoming(self, message: SessionMessage) -> None:
        inner = message.message
        if isinstance(inner, JSONRPCResponse) and inner.id in self.initialize_ids:
            self.initialize_ids.discard(inner.id)
            version = inner.result.get("protocolVersion") if isinstance(inner.result, dict) else None
            if isinstance(version, str):
                self.protocol_version = version


async def bridge(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    state = Bridge()
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        stdio_server() as (stdin, stdout),
        streamable_http_client(url, http_client=http) as (from_gateway, to_gateway),
    ):

        async def upstream() -> None:
            async with to_gateway:
                async for item in stdin:
                    if isinstance(item, Exception):  # a line that is not JSON-RPC
                        error = ErrorData(code=PARSE_ERROR, message="Parse error: the line is not a JSON-RPC message")
                        await stdout.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))
                        continue
                    await to_gateway.send(state.outgoing(item))
            group.cancel_scope.cancel()  # stdin ended: the client is gone

        async def downstream() -> None:
            async for item in from_gateway:
                if isinstance(item, Exception):
                    logger.warning("%s", str(item).splitlines()[0] if str(item) else type(item).__name__)
                    continue
                state.incoming(item)
                await stdout.send(item)

        async with stdout, anyio.create_task_group() as group:  # closing stdout ends the SDK's writer
            group.start_soon(upstream)
            group.start_soon(downstream)
