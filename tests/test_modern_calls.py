"""2026-07-28 ``tools/call`` through the gateway: the ``Mcp-Param-*`` header check, fed by the router.

A 2026-07-28 client mirrors the arguments a tool marks with ``x-mcp-header`` in ``Mcp-Param-*``
headers; the gateway rejects a request whose headers and arguments disagree. It takes each tool's
schema from its routes (``gateway/downstream/modern.py``) instead of a whole ``tools/list`` per
call, so the check must still see the schema the token sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.core.auth import TokenService
from gateway.store.datadir import DataDir
from tests.support import RunningGateway, fixture_entry, start_gateway

CATALOG = {"fix": fixture_entry("--name", "fix", "--routed-tool")}
MODERN = "2026-07-28"
HEADER_MISMATCH = -32020


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    workdir = tmp_path_factory.mktemp("modern")
    gw = start_gateway(["--servers", "fix", "--runtime", "host"], workdir=workdir, catalog=CATALOG)
    yield gw
    gw.stop()


async def call(
    http: httpx.AsyncClient, gateway: RunningGateway, arguments: dict[str, Any], region: str | None, token: str = ""
) -> httpx.Response:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1"},
    }
    params = {"name": "fix__routed", "arguments": arguments, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    headers = {
        "Authorization": f"Bearer {token or gateway.token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "fix__routed",
    }
    if region is not None:
        headers["Mcp-Param-Region"] = region
    return await http.post(gateway.url, json=body, headers=headers)


def reply(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ") and line[6:].strip()]
        return httpx.Response(200, content=data[-1]).json()
    return response.json()


async def warm(http: httpx.AsyncClient, gateway: RunningGateway) -> None:
    """The server runs and its tools are routed (the first call starts it)."""
    response = await call(http, gateway, {"region": "eu"}, "eu")
    assert response.status_code == 200, response.text


async def test_a_header_that_matches_its_argument_is_accepted(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    await warm(http, gateway)
    response = await call(http, gateway, {"region": "eu"}, "eu")
    assert response.status_code == 200
    assert reply(response)["result"]["content"][0]["text"] == "region eu"


async def test_a_header_that_contradicts_its_argument_is_rejected(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    await warm(http, gateway)
    response = await call(http, gateway, {"region": "eu"}, "us")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == HEADER_MISMATCH


async def test_a_missing_header_is_rejected(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    await warm(http, gateway)
    response = await call(http, gateway, {"region": "eu"}, None)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == HEADER_MISMATCH


async def test_a_token_that_may_not_see_the_tool_gets_no_schema_check_but_no_call_either(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    await warm(http, gateway)
    narrow = TokenService(DataDir.open(gateway.data_dir).signing_key(), gateway.url).mint(
        "default", ttl=600, tools=["fix__echo"]
    )
    response = await call(http, gateway, {"region": "eu"}, "us", token=narrow)
    answer = reply(response)
    assert "result" not in answer or answer["result"].get("isError"), answer
    assert "region eu" not in response.text


async def test_the_check_covers_tools_that_discovery_leaves_out_of_the_list(
    gateway_factory: Callable[..., RunningGateway], http: httpx.AsyncClient
) -> None:
    # With discovery on, tools/list shows only gateway__* tools: a check that looked the schema up
    # in the list (the SDK's default) would find nothing and let any header through.
    gw = gateway_factory(["--servers", "fix", "--runtime", "host", "--discovery", "on"], catalog=CATALOG)
    await warm(http, gw)
    response = await call(http, gw, {"region": "eu"}, "us")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == HEADER_MISMATCH
