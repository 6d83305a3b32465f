"""The gateway core end to end: a real gateway process, real fixture servers, the mcp client over HTTP."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.support import FIXTURE_SERVER, RunningGateway, fixture_entry

CATALOG = {
    "fix": fixture_entry("--prompts", "--resources", "--name", "fix"),
    "other": fixture_entry("--name", "other"),
}


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    # Host runtime: some tests compare the pids servers report (in bwrap every server is pid 2).
    return gateway_factory(["--servers", "fix,other", "--runtime", "host"], catalog=CATALOG)


class Target:
    """One way to reach the fixture server: directly over stdio, or through the gateway (either protocol era)."""

    def __init__(self, kind: str, gateway: RunningGateway | None) -> None:
        self.kind = kind
        self.gateway = gateway
        self.prefix = "" if gateway is None else "fix__"

    def name(self, tool: str) -> str:
        return f"{self.prefix}{tool}"

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        if self.gateway is None:
            args = [str(FIXTURE_SERVER), "--prompts", "--resources"]
            async with Client(StdioServerParameters(command=sys.executable, args=args), mode="legacy") as client:
                yield client
        else:
            mode = "2026-07-28" if self.kind == "gateway-2026" else "legacy"
            async with self.gateway.client(mode=mode) as client:
                yield client


@pytest.fixture(params=["direct", "gateway", "gateway-2026"])
def target(request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]) -> Target:
    if request.param == "direct":
        return Target("direct", None)
    return Target(request.param, gateway_factory(["--servers", "fix"], catalog=CATALOG))


# -- the same behaviour directly and through the gateway --------------------------------------


async def test_echo_returns_content_and_structured_content(target: Target) -> None:
    async with target.connect() as client:
        result = await client.call_tool(target.name("echo"), {"text": "héllo"})
        assert result.is_error is False
        assert result.content[0].text == "héllo"
        assert result.structured_content == {"text": "héllo"}


async def test_tool_error_result_is_returned_unchanged(target: Target) -> None:
    async with target.connect() as client:
        result = await client.call_tool(target.name("fail"), {"message": "it broke"})
        assert result.is_error is True
        assert result.content[0].text == "it broke"


async def test_upstream_json_rpc_error_keeps_its_code_and_message(target: Target) -> None:
    async with target.connect() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(target.name("rpc_error"), {"code": -32050, "message": "custom failure"})
        assert caught.value.code == -32050
        assert "custom failure" in caught.value.message


async def test_tool_list_has_the_servers_tools_with_schemas(target: Target) -> None:
    async with target.connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        echo = tools[target.name("echo")]
        assert echo.input_schema["properties"]["text"]["type"] == "string"
        assert target.name("sleep") in tools


async def test_prompt_is_rendered_by_its_server(target: Target) -> None:
    async with target.connect() as client:
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        assert target.name("greet") in prompts
        result = await client.get_prompt(target.name("greet"), {"name": "Ada"})
        assert result.messages[0].content.text == "Hello, Ada!"


async def test_resource_is_read_by_its_uri(target: Target) -> None:
    async with target.connect() as client:
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert "fixture://static/hello" in uris
        result = await client.read_resource("fixture://static/hello")
        assert result.contents[0].text == "hello world"


async def test_resource_template_is_listed(target: Target) -> None:
    async with target.connect() as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["fixture://items/{id}"]


# -- aggregation --------------------------------------------------------------------------------


async def test_tools_of_every_server_are_listed_under_their_prefix(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"fix__echo", "other__echo", "fix__env", "other__env"} <= names
    assert all("__" in name for name in names)


async def test_call_is_routed_to_the_server_named_by_the_prefix(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        fix = await client.call_tool("fix__whoami", {})
        other = await client.call_tool("other__whoami", {})
    assert "fix" in fix.structured_content["argv"]
    assert "other" in other.structured_content["argv"]


async def test_server_process_is_reused_across_calls_and_sessions(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        first = await client.call_tool("fix__whoami", {})
        second = await client.call_tool("fix__whoami", {})
    async with gateway.client(mode="2026-07-28") as client:
        third = await client.call_tool("fix__whoami", {})
    pids = {r.structured_content["pid"] for r in (first, second, third)}
    assert len(pids) == 1


async def test_unknown_tool_is_invalid_params(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("nope__echo", {"text": "x"})
    assert caught.value.code == -32602
    assert "nope__echo" in caught.value.message


async def test_unknown_prompt_is_invalid_params(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("fix__nope", {})
    assert caught.value.code == -32602


async def test_meta_is_forwarded_to_the_server(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--servers", "fix"], catalog=CATALOG)
    async with gw.client() as client:
        result = await client.call_tool("fix__meta", {}, meta={"trace": "abc-123"})
    assert result.structured_content["meta"]["trace"] == "abc-123"


async def test_failed_server_leaves_the_others_usable(gateway_factory: Callable[..., RunningGateway]) -> None:
    catalog = {**CATALOG, "broken": fixture_entry("--exit-at-start")}
    gw = gateway_factory(["--servers", "fix,broken"], catalog=catalog)
    async with gw.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "fix__echo" in names
        assert not any(n.startswith("broken__") for n in names)
        result = await client.call_tool("fix__echo", {"text": "still here"})
    assert result.structured_content == {"text": "still here"}
    assert httpx.get(gw.base_url + "/healthz").status_code == 200


async def test_server_crash_fails_the_call_with_an_error_naming_the_server(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__crash", {})
        assert "'fix'" in caught.value.message
        # The next call starts it again.
        result = await client.call_tool("fix__echo", {"text": "back"})
    assert result.structured_content == {"text": "back"}


async def test_protocol_2025_06_18_client_can_initialize_and_call(gateway: RunningGateway) -> None:
    headers = {
        "Authorization": f"Bearer {gateway.token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=60) as http:
        response = await http.post("/mcp", json=init)
        assert response.status_code == 200
        session = response.headers["mcp-session-id"]
        assert '"protocolVersion":"2025-06-18"' in response.text.replace(" ", "")
        headers2 = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers2)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "fix__echo", "arguments": {"text": "old client"}},
        }
        response = await http.post("/mcp", json=call, headers=headers2)
    assert response.status_code == 200
    assert "old client" in response.text


async def test_ping_is_answered(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        await client.send_ping()
