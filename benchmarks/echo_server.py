"""A minimal echo MCP server for the benchmarks.

Two modes:

* stdio (default): newline-delimited JSON-RPC on stdin/stdout, standard library only, so it
  starts in a few tens of milliseconds and costs next to nothing per call. This is the server
  every proxy under test (the gateway, mcp-proxy) and the "direct stdio" row talk to.
* ``--http PORT``: the same two tools served by the ``mcp`` 2.x SDK's own streamable HTTP server
  (low-level ``Server`` + ``StreamableHTTPSessionManager`` + uvicorn on 127.0.0.1). This is the
  "echo server serving HTTP itself, no hop" baseline.

Tools: ``echo(text)`` returns ``text``; ``big(size)`` returns a text of ``size`` bytes.
``--start-delay S`` sleeps before serving, to stand in for a slow-starting server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

SERVER_NAME = "bench-echo"
SERVER_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
MAX_BIG = 64 * 1024 * 1024

TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Return the given text unchanged.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "big",
        "description": "Return a text of the given size in bytes.",
        "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]},
    },
]

_big_cache: dict[int, str] = {}


def big_text(size: int) -> str:
    """A text of exactly ``size`` ASCII bytes (cached: the benchmark measures transport, not this)."""
    size = max(0, min(int(size), MAX_BIG))
    text = _big_cache.get(size)
    if text is None:
        text = ("0123456789abcdef" * (size // 16 + 1))[:size]
        _big_cache[size] = text
    return text


def call_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The result of a tools/call as a plain dict (a CallToolResult)."""
    if name == "echo":
        return {"content": [{"type": "text", "text": str(arguments.get("text", ""))}], "isError": False}
    if name == "big":
        return {"content": [{"type": "text", "text": big_text(arguments.get("size", 0))}], "isError": False}
    return {"content": [{"type": "text", "text": f"unknown tool: {name}"}], "isError": True}


# --------------------------------------------------------------------------- stdio mode


def handle(msg: dict[str, Any]) -> dict[str, Any] | None:
    """Answer one JSON-RPC message; None for notifications and responses."""
    method = msg.get("method")
    mid = msg.get("id")
    if method is None or mid is None:
        return None
    params = msg.get("params") or {}
    if method == "tools/call":
        return {"jsonrpc": "2.0", "id": mid, "result": call_tool(params.get("name", ""), params.get("arguments") or {})}
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[0]
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION},
        }
        return {"jsonrpc": "2.0", "id": mid, "result": result}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": mid, "result": {"tools": TOOLS}}
    if method == "ping":
        return {"jsonrpc": "2.0", "id": mid, "result": {}}
    if method in ("prompts/list", "resources/list", "resources/templates/list"):
        key = {"prompts/list": "prompts", "resources/list": "resources"}.get(method, "resourceTemplates")
        return {"jsonrpc": "2.0", "id": mid, "result": {key: []}}
    return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": f"Method not found: {method}"}}


def serve_stdio() -> int:
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for line in stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            reply: dict[str, Any] | None = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "Parse error"},
            }
        else:
            reply = handle(msg) if isinstance(msg, dict) else None
        if reply is not None:
            stdout.write(dumps(reply).encode() + b"\n")
            stdout.flush()
    return 0


# --------------------------------------------------------------------------- HTTP mode


def serve_http(port: int, json_response: bool) -> int:
    """Serve the tools with the SDK's streamable HTTP server on 127.0.0.1:port at /mcp."""
    import contextlib
    from collections.abc import AsyncIterator

    import uvicorn
    from mcp import types
    from mcp.server.lowlevel.server import Server
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def on_list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t["name"], description=t["description"], input_schema=t["inputSchema"]) for t in TOOLS
            ]
        )

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = call_tool(params.name, dict(params.arguments or {}))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result["content"][0]["text"])], is_error=result["isError"]
        )

    server: Server[Any] = Server(
        SERVER_NAME, version=SERVER_VERSION, on_list_tools=on_list_tools, on_call_tool=on_call_tool
    )
    manager = StreamableHTTPSessionManager(app=server, json_response=json_response, session_idle_timeout=None)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    app = Starlette(
        routes=[Route("/mcp", endpoint=StreamableHTTPASGIApp(manager)), Route("/healthz", endpoint=healthz)],
        lifespan=lifespan,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    parser.add_argument("--json-response", action="store_true", help="HTTP mode: answer POSTs with JSON, not SSE")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="sleep S seconds before serving")
    args = parser.parse_args(argv)
    if args.start_delay > 0:
        time.sleep(args.start_delay)
    if args.http is not None:
        return serve_http(args.http, args.json_response)
    try:
        return serve_stdio()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
