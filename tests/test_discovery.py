"""Progressive discovery: gateway__find_tools / gateway__enable_tools through the real gateway.

Three fixture servers of ~75 tools each (generated tools with distinct descriptions): more than
the default --discovery-limit of 128, so ``auto`` turns discovery on.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry

CATALOG: dict[str, Any] = {name: fixture_entry("--name", name, "--tools", "50") for name in ("s1", "s2", "s3")}
BIG = ["--servers", "s1,s2,s3"]
DISCOVERY_TOOLS = {"gateway__find_tools", "gateway__enable_tools"}


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(BIG, catalog=CATALOG)


class Notifications:
    def __init__(self) -> None:
        self.received: list[Any] = []

    async def __call__(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.received.append(message)

    def tools_changed(self) -> int:
        return sum(isinstance(m, types.ToolListChangedNotification) for m in self.received)


async def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def mint(gateway: RunningGateway, *flags: str) -> str:
    argv = [sys.executable, "-m", "gateway", "token", "--data-dir", str(gateway.data_dir), *flags]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


async def names_listed(client: Any) -> set[str]:
    return {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}


async def find(client: Any, query: str, limit: int | None = None) -> list[dict[str, str]]:
    arguments: dict[str, Any] = {"query": query} | ({"limit": limit} if limit is not None else {})
    result = await client.call_tool("gateway__find_tools", arguments)
    assert result.is_error is False, result.content
    return result.structured_content["tools"]


# -- which list a session sees ------------------------------------------------------------------


async def test_auto_lists_only_the_discovery_tools_over_the_limit(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        assert await names_listed(client) == DISCOVERY_TOOLS


async def test_auto_lists_every_tool_under_the_limit(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory([*BIG, "--discovery-limit", "1000"], catalog=CATALOG)
    async with gateway.client() as client:
        names = await names_listed(client)
    assert len(names) > 200 and not names & DISCOVERY_TOOLS


async def test_off_lists_every_tool(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory([*BIG, "--discovery", "off"], catalog=CATALOG)
    async with gateway.client() as client:
        names = await names_listed(client)
        assert "s2__tool_0049" in names and not names & DISCOVERY_TOOLS
        with pytest.raises(MCPError) as caught:
            await client.call_tool("gateway__find_tools", {"query": "weather"})
    assert caught.value.code == -32602


async def test_on_uses_discovery_even_for_a_small_sandbox(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "s1", "--discovery", "on"], catalog=CATALOG)
    async with gateway.client() as client:
        assert await names_listed(client) == DISCOVERY_TOOLS


async def test_sandbox_discovery_setting_comes_from_its_config(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--discovery", "off"], catalog=CATALOG)
    with gateway.admin() as admin:
        response = admin.post("/admin/sandboxes", json={"mcp": {"s1": {}}, "discovery": "on"})
    assert response.status_code == 201, response.text
    async with gateway.client(response.json()["mcp_token"]) as client:
        assert await names_listed(client) == DISCOVERY_TOOLS


async def test_pinned_tools_are_always_listed_with_discovery_on(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory(["--servers", "s1", "--discovery", "on", "--pin-tools", "s1__tool_000*"], catalog=CATALOG)
    async with gateway.client() as client:
        names = await names_listed(client)
    assert names - DISCOVERY_TOOLS == {f"s1__tool_000{i}" for i in range(10)}


async def test_a_sandbox_pins_tools_in_its_config(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--discovery", "off"], catalog=CATALOG)
    with gateway.admin() as admin:
        body = {"mcp": {"s1": {}}, "discovery": "on", "pinned": ["s1__tool_0001"]}
        response = admin.post("/admin/sandboxes", json=body)
        bad = admin.post("/admin/sandboxes", json={"mcp": {"s1": {}}, "pinned": "s1__*"})
    assert response.status_code == 201, response.text
    assert bad.status_code == 400 and "pinned" in bad.json()["message"]
    async with gateway.client(response.json()["mcp_token"]) as client:
        assert await names_listed(client) == {*DISCOVERY_TOOLS, "s1__tool_0001"}


# -- find -----------------------------------------------------------------------------------------


async def test_find_tools_returns_the_best_matches_first(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        found = await find(client, "weather forecast for a city")
    assert len(found) == 10
    assert all(set(match) == {"name", "description"} for match in found)
    assert all("weather forecast" in match["description"] for match in found)


async def test_find_tools_ranks_the_exact_action_above_the_rest(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        found = await find(client, "delete github issue", limit=3)
    assert found[0]["description"].startswith("Delete github issue")


async def test_find_tools_honours_the_limit(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        assert len(await find(client, "pull request review", limit=3)) == 3


async def test_find_tools_matches_argument_names(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        found = await find(client, "attendees")  # an argument name only, never in a description
    assert found and all("calendar event" in match["description"] for match in found)


async def test_find_tools_without_a_query_is_a_tool_error(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        result = await client.call_tool("gateway__find_tools", {"query": " "})
    assert result.is_error is True


async def test_find_tools_works_over_the_2026_protocol(gateway: RunningGateway) -> None:
    async with gateway.client(mode="2026-07-28") as client:
        found = await find(client, "email message in the inbox", limit=2)
    assert found and all("email message in the inbox" in match["description"] for match in found)


# -- enable ---------------------------------------------------------------------------------------


async def test_enable_tools_adds_them_to_the_session_and_sends_list_changed(gateway: RunningGateway) -> None:
    notifications = Notifications()
    async with gateway.client(message_handler=notifications) as client:
        await names_listed(client)
        result = await client.call_tool("gateway__enable_tools", {"names": ["s1__tool_0003", "s2__echo"]})
        assert result.is_error is False
        assert result.structured_content == {"enabled": ["s1__tool_0003", "s2__echo"], "unknown": []}
        await wait_for(lambda: notifications.tools_changed() >= 1)
        assert await names_listed(client) == DISCOVERY_TOOLS | {"s1__tool_0003", "s2__echo"}
        called = await client.call_tool("s2__echo", {"text": "enabled"})
    assert called.content[0].text == "enabled"


async def test_enabled_tools_belong_to_their_session_only(gateway: RunningGateway) -> None:
    async with gateway.client() as first, gateway.client() as second:
        await first.call_tool("gateway__enable_tools", {"names": ["s3__add"]})
        assert "s3__add" in await names_listed(first)
        assert await names_listed(second) == DISCOVERY_TOOLS


async def test_enable_tools_reports_unknown_names(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        partly = await client.call_tool("gateway__enable_tools", {"names": ["s1__echo", "s1__nope"]})
        none = await client.call_tool("gateway__enable_tools", {"names": ["s1__nope"]})
    assert partly.is_error is False and partly.structured_content["unknown"] == ["s1__nope"]
    assert none.is_error is True


async def test_a_tool_not_enabled_can_be_called_by_its_full_name(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        assert "s3__tool_0001" not in await names_listed(client)
        result = await client.call_tool("s3__tool_0001", {"city": "Lyon"})
    assert result.is_error is False
    assert result.content[0].text.startswith("tool_0001 called with")


# -- the token's scope ----------------------------------------------------------------------------


async def test_find_never_reveals_servers_outside_the_token(gateway: RunningGateway) -> None:
    token = mint(gateway, "--servers", "s2")
    async with gateway.client(token) as client:
        found = await find(client, "weather forecast for a city", limit=50)
    assert found and all(match["name"].startswith("s2__") for match in found)


async def test_find_never_reveals_tools_outside_the_token_globs(gateway: RunningGateway) -> None:
    token = mint(gateway, "--tools", "s1__tool_00[0-4]*")
    async with gateway.client(token) as client:
        found = await find(client, "weather forecast for a city email invoice", limit=50)
        # 50 tools: under the limit, so auto lists them all, and find still answers.
        assert await names_listed(client) == {f"s1__tool_00{i:02d}" for i in range(50)}
    assert found and all(match["name"].startswith("s1__tool_00") for match in found)


async def test_enable_refuses_tools_outside_the_token(gateway: RunningGateway) -> None:
    token = mint(gateway, "--servers", "s1,s2", "--tools", "s1__*,s2__*")
    async with gateway.client(token) as client:
        result = await client.call_tool("gateway__enable_tools", {"names": ["s3__echo"]})
        assert result.is_error is True
        assert "s3__echo" not in await names_listed(client)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("s3__echo", {"text": "x"})
    assert caught.value.code == -32602
