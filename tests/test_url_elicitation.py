"""URL-mode elicitation reaches only clients that declared it, in both protocol eras.

The gateway declares ``elicitation: {"form": {}, "url": {}}`` upstream, so an upstream may send a
URL-mode ``elicitation/create`` whatever the client declared. Per MCP 2025-11-25 a client declaring
``elicitation: {}`` or ``{"form": {}}`` supports form mode only: the upstream gets -32601 instead
(the fixture's ``elicit`` tool reports the error in its result).

The ``mcp`` client declares both modes whenever it has an elicitation callback, so the form-only
clients here speak raw HTTP (httpx); the URL-mode clients are the real ``mcp`` client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import mcp_types as types
import pytest

from tests.support import RunningGateway, fixture_entry, start_gateway

HANDSHAKE, MODERN = "2025-11-25", "2026-07-28"
URL_ASK = {"message": "verify?", "mode": "url"}
REFUSAL = "the client did not declare URL-mode elicitation"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"],
        workdir=tmp_path_factory.mktemp("url-elicitation"),
        catalog={"fix": fixture_entry("--name", "fix")},
    )
    yield gw
    gw.stop()


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, whether a JSON body or an event stream."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        return [response.json()]
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


async def handshake_call(http: httpx.AsyncClient, gateway: RunningGateway, capabilities: dict[str, Any]) -> Any:
    """Initialize a 2025-11-25 session declaring ``capabilities``, call fix__elicit in URL mode; its result."""
    headers = {"Authorization": f"Bearer {gateway.token}", "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": capabilities,
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    response = await http.post(gateway.url, json=init, headers=headers)
    assert messages(response)[0]["result"]["protocolVersion"] == HANDSHAKE
    headers |= {"Mcp-Session-Id": response.headers["mcp-session-id"], "MCP-Protocol-Version": HANDSHAKE}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(gateway.url, json=initialized, headers=headers)).status_code == 202
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fix__elicit", "arguments": URL_ASK}}
    received = messages(await http.post(gateway.url, json=call, headers=headers))
    assert not [m for m in received if m.get("method") == "elicitation/create"]  # nothing reached the client
    [answer] = [m for m in received if m.get("id") == 2]
    return answer["result"]


async def modern_call(http: httpx.AsyncClient, gateway: RunningGateway, capabilities: dict[str, Any]) -> Any:
    """A 2026-07-28 fix__elicit call in URL mode from a client declaring ``capabilities``; its result."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    }
    params = {"name": "fix__elicit", "arguments": URL_ASK, "_meta": meta}
    headers = {
        "Authorization": f"Bearer {gateway.token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "fix__elicit",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    [answer] = [m for m in messages(await http.post(gateway.url, json=body, headers=headers)) if m.get("id") == 1]
    return answer["result"]


@pytest.mark.parametrize("declared", [{}, {"form": {}}], ids=["empty", "form"])
async def test_a_handshake_client_declaring_form_mode_only_gets_no_url_elicitation(
    declared: dict[str, Any], gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    result = await handshake_call(http, gateway, {"elicitation": declared})
    assert result["isError"] is True
    assert REFUSAL in result["content"][0]["text"]


@pytest.mark.parametrize("declared", [{}, {"form": {}}], ids=["empty", "form"])
async def test_a_2026_client_declaring_form_mode_only_gets_no_url_elicitation(
    declared: dict[str, Any], gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    result = await modern_call(http, gateway, {"elicitation": declared})
    assert result["resultType"] == "complete" and result["isError"] is True
    assert REFUSAL in result["content"][0]["text"]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_a_client_declaring_url_mode_gets_the_url_elicitation(mode: str, gateway: RunningGateway) -> None:
    asked: list[Any] = []

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept")

    async with gateway.client(mode=mode, elicitation_callback=elicit) as client:
        result = await client.call_tool("fix__elicit", URL_ASK)
    [params] = asked
    assert isinstance(params, types.ElicitRequestURLParams)
    assert params.url == "https://example.com/verify" and params.message == "verify?"
    assert result.is_error is False
    assert json.loads(result.content[0].text)["action"] == "accept"  # type: ignore[union-attr]
