"""Bytes on the wire of streamable HTTP: headers, JSON-RPC bodies, SSE framing, result shaping.

Shared by the handshake-era endpoint (``handshake.py``) and its per-request response
(``response.py``). Plain ASGI and orjson: no web framework or SDK transport in between.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from mcp_types import methods as mcp_methods
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from gateway.core.pipeline import RpcError
from gateway.upstream.errors import INTERNAL_ERROR

logger = logging.getLogger("gateway.http")

INVALID_REQUEST = -32600
PARSE_ERROR = -32700
MAX_ID = 2**63 - 1  # the largest int id orjson writes exactly and the SDK's client keeps as an int
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle event stream, so proxies keep it open

POST_HEADERS = {
    b"content-type": "content_type",
    b"accept": "accept",
    b"mcp-session-id": "session_id",
    b"mcp-protocol-version": "protocol_version",
    b"last-event-id": "last_event_id",
}


def collect(scope: Scope, wanted: dict[bytes, str] = POST_HEADERS) -> dict[str, str] | None:
    """The ``wanted`` headers of a request by their short names; None when one of them is repeated."""
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = wanted.get(key)
        if name is not None:
            if name in found:
                return None
            found[name] = value.decode("latin-1")
    return found


def accepts(accept: str) -> tuple[bool, bool]:
    """(JSON, SSE): what an ``Accept`` header admits, with the RFC 7231 wildcards."""
    types = [media.strip().split(";")[0].strip().lower() for media in accept.split(",")]
    wildcard = "*/*" in types
    has_json = wildcard or any(t in ("application/json", "application/*") for t in types)
    has_sse = wildcard or any(t in ("text/event-stream", "text/*") for t in types)
    return has_json, has_sse


def json_content_type(value: str) -> bool:
    return any(part.strip().lower() == "application/json" for part in value.split(";")[0].split(","))


def error_body(code: int, message: str, request_id: Any = None, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})


def result_body(request_id: Any, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    session_id: str | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A complete ``application/json`` response (an empty body for 202 and DELETE)."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if session_id is not None:
        raw.append((b"mcp-session-id", session_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_error(
    send: Send, status: int, code: int, message: str, session_id: str | None = None, **headers: str
) -> None:
    extra = tuple((name.replace("_", "-").encode(), value.encode()) for name, value in headers.items())
    await respond(send, status, error_body(code, message), session_id, extra)


def sse_start(session_id: str | None) -> Message:
    """The start of an event-stream response."""
    headers = [
        (b"cache-control", b"no-cache, no-transform"),
        (b"connection", b"keep-alive"),
        (b"content-type", b"text/event-stream"),
        (b"x-accel-buffering", b"no"),
    ]
    if session_id is not None:
        headers.append((b"mcp-session-id", session_id.encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


def sse_event(data: bytes) -> bytes:
    """One SSE ``message`` event holding one JSON-RPC message (JSON never contains a raw newline)."""
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


SSE_PING = b": ping\r\n\r\n"


class TooLarge(Exception):
    """A request body over the limit (McpGuard refuses a declared one; this catches a chunked one)."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body; None if the client went away meanwhile. Raises :class:`TooLarge`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def valid_id(request_id: Any) -> bool:
    kind = type(request_id)
    return kind is str or (kind is int and -MAX_ID <= request_id <= MAX_ID)


# -- results ---------------------------------------------------------------------------------


def plain_result(result: Any) -> dict[str, Any] | None:
    """A tools/call result made only of text content (and ``isError``) in its wire form, or None.

    The common case, written without a schema pass: ``{"content": [{"text", "type"}...], "isError"}``
    is what the protocol surface makes of it for every handshake version.
    """
    if type(result) is not dict:
        return None
    content = result.get("content")
    is_error = result.get("isError", False)
    if type(content) is not list or type(is_error) is not bool:
        return None
    for key in result:
        if key != "content" and key != "isError":
            return None
    items = []
    for item in content:
        if type(item) is not dict or len(item) != 2 or item.get("type") != "text":
            return None
        text = item.get("text")
        if type(text) is not str:
            return None
        items.append({"text": text, "type": "text"})
    return {"content": items, "isError": is_error}


def shaped(method: str, version: str, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as the protocol ``version`` defines it for ``method`` (unknown fields dropped).

    Raises :class:`RpcError` (internal error) when the result does not fit: an upstream's bad
    result is the gateway's fault to report, never relayed malformed.
    """
    if method == "tools/call":
        plain = plain_result(result)
        if plain is not None:
            return plain
        if "isError" not in result:  # the result's default, written out (clients of the SDK got it so)
            result = {**result, "isError": False}
    try:
        return mcp_methods.serialize_server_result(method, version, result)
    except (ValidationError, KeyError, ValueError):
        logger.warning("a %s result does not fit protocol %s; answered with an error", method, version)
        raise RpcError(INTERNAL_ERROR, "Handler returned an invalid result") from None


def valid_params(method: str, version: str, params: Any) -> bool:
    """Whether ``params`` are what ``method`` takes in protocol ``version``."""
    try:
        mcp_methods.validate_client_request(method, version, params)
    except (ValidationError, KeyError, ValueError):
        return False
    return True
