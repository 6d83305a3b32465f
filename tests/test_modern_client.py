"""The real ``mcp`` client at 2026-07-28 (pinned and ``auto``) through the gateway, which serves that era itself.

Calls, prompts, resources, errors, list changes and resource updates over ``subscriptions/listen``,
and a sampling round trip through ``input_required``: against the fixture server, and the pulled
server-everything for what only it does (resource subscriptions).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry, start_gateway

MODERN = "2026-07-28"
CATALOG = {"fix": fixture_entry("--name", "fix", "--prompts", "--resources")}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"], workdir=tmp_path_factory.mktemp("modern-client"), catalog=CATALOG
    )
    yield gw
    gw.stop()


async def test_an_auto_client_finds_the_2026_era_and_calls_a_tool(gateway: RunningGateway) -> None:
    async with gateway.client(mode="auto") as client:
        assert client.session.protocol_version == MODERN
        result = await client.call_tool("fix__echo", {"text": "auto"})
    assert result.structured_content == {"text": "auto"}


async def test_a_tool_error_and_an_unknown_tool_reach_the_client_as_each_is(gateway: RunningGateway) -> None:
    async with gateway.client(mode=MODERN) as client:
        failed = await client.call_tool("fix__fail", {"message": "nope"})
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__missing", {})
    assert failed.is_error is True and failed.content[0].text == "nope"
    assert caught.value.error.code == -32602 and "fix__missing" in caught.value.error.message


async def test_prompts_and_resources_are_listed_and_read(gateway: RunningGateway) -> None:
    async with gateway.client(mode=MODERN) as client:
        prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        prompt = await client.get_prompt("fix__greet", {"name": "Ada"})
        resources = {str(resource.uri) for resource in (await client.list_resources()).resources}
        read = await client.read_resource("fixture://static/hello")
    assert {"fix__greet", "fix__plain"} <= prompts
    assert prompt.messages[0].content.text == "Hello, Ada!"
    assert "fixture://static/hello" in resources
    assert read.contents[0].text == "hello world"


async def test_a_sampling_request_of_the_upstream_is_answered_through_input_required(
    gateway: RunningGateway,
) -> None:
    async def sampler(context: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked = params.messages[0].content
        text = asked.text if isinstance(asked, types.TextContent) else "?"
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"re: {text}"), model="m"
        )

    async with gateway.client(mode=MODERN, sampling_callback=sampler) as client:
        result = await client.call_tool("fix__sample", {"prompt": "hello"})
    assert result.content[0].text == "sampled: re: hello"


async def test_listen_tells_the_client_when_the_tools_change(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host"], catalog=CATALOG)
    async with gw.client(mode=MODERN) as client, client.listen(tools_list_changed=True) as subscription:
        assert subscription.honored.tools_list_changed is True
        await client.call_tool("fix__change_tools", {})
        with anyio.fail_after(30):
            event = await subscription.__anext__()
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
    assert isinstance(event, ToolsListChanged)
    assert "fix__extra" in names


async def test_listen_relays_the_updates_of_a_subscribed_resource(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path
) -> None:
    gw = gateway_factory(["--servers", "everything"], data_dir=servers_data_dir)
    async with gw.client(mode=MODERN) as client:
        uri = str((await client.list_resources()).resources[0].uri)
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            assert subscription.honored.resource_subscriptions == [uri]
            toggled = await client.call_tool("everything__toggle-subscriber-updates", {})
            assert toggled.is_error is False, json.dumps(toggled.model_dump(mode="json"))
            with anyio.fail_after(60):
                event = await subscription.__anext__()
    assert event == ResourceUpdated(uri=uri)


async def test_a_listen_stream_ends_gracefully_and_at_once_when_the_gateway_stops(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host"], catalog=CATALOG)
    async with gw.client(mode=MODERN) as client, client.listen(tools_list_changed=True) as subscription:
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            events = [event async for event in subscription]  # a lost stream would raise SubscriptionLost
        elapsed = time.monotonic() - started
    assert events == []
    assert gw.process.wait(15) == 0
    assert elapsed < 4, f"the listen stream held the shutdown for {elapsed:.1f} s"
