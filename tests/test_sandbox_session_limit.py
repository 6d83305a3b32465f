"""Per-sandbox limits: one sandbox at its session or call limit never keeps another from working."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import orjson

from tests.sandbox_helpers import create
from tests.support import RunningGateway, fixture_entry
from tests.test_fastpath import RawSession

CATALOG = {"fix": fixture_entry("--name", "fix")}
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fix__echo", "arguments": {"text": "hi"}}}


async def initialize(http: httpx.AsyncClient, gateway: RunningGateway, token: str) -> httpx.Response:
    headers = {k: v for k, v in RawSession(http, gateway.url, token).headers().items() if k != "MCP-Protocol-Version"}
    return await http.post(gateway.url, content=orjson.dumps(INIT), headers=headers)


async def test_a_sandbox_at_its_session_limit_does_not_affect_another(
    gateway_factory: Callable[..., RunningGateway], http: httpx.AsyncClient
) -> None:
    gateway = gateway_factory(["--runtime", "host", "--max-sessions-per-sandbox", "2"], catalog=CATALOG)
    full = create(gateway, {"fix": {}})["mcp_token"]
    other = create(gateway, {"fix": {}})["mcp_token"]
    await RawSession(http, gateway.url, full).open()
    await RawSession(http, gateway.url, full).open()
    refused = await initialize(http, gateway, full)
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["message"] == "Too many open sessions"
    session = await RawSession(http, gateway.url, other).open()
    answer = await http.post(gateway.url, content=orjson.dumps(CALL), headers=session.headers())
    assert answer.status_code == 200, answer.text
    assert "hi" in answer.text


async def test_ending_a_session_frees_its_sandbox_a_place(
    gateway_factory: Callable[..., RunningGateway], http: httpx.AsyncClient
) -> None:
    gateway = gateway_factory(["--runtime", "host", "--max-sessions-per-sandbox", "1"], catalog=CATALOG)
    token = create(gateway, {"fix": {}})["mcp_token"]
    first = await RawSession(http, gateway.url, token).open()
    assert (await initialize(http, gateway, token)).status_code == 503
    assert (await http.delete(gateway.url, headers=first.headers())).status_code in (200, 204)
    assert (await initialize(http, gateway, token)).status_code == 200


async def test_a_sandbox_at_its_call_limit_does_not_affect_another(
    gateway_factory: Callable[..., RunningGateway], http: httpx.AsyncClient
) -> None:
    gateway = gateway_factory(["--runtime", "host", "--max-concurrent-requests", "1"], catalog=CATALOG)
    busy = await RawSession(http, gateway.url, create(gateway, {"fix": {}})["mcp_token"]).open()
    other = await RawSession(http, gateway.url, create(gateway, {"fix": {}})["mcp_token"]).open()
    assert (await busy.post_until_admitted(CALL)).status_code == 200  # the server runs: calls are quick
    assert (await other.post_until_admitted(CALL)).status_code == 200
    slow = asyncio.ensure_future(busy.call(2, "fix__sleep", {"seconds": 6}))
    refused = None
    deadline = time.monotonic() + 5
    while refused is None and time.monotonic() < deadline and not slow.done():
        await asyncio.sleep(0.2)  # until the slow call is in flight
        response = await busy.post(CALL)
        refused = response if response.status_code == 429 else None
    assert refused is not None, "no 429 while the sandbox's call was in flight"
    answer = await other.post(CALL)
    assert not slow.done(), "the slow call ended before the other sandbox was tried"
    assert answer.status_code == 200 and "hi" in answer.text
    await asyncio.wait_for(slow, 30)
