"""Published MCP servers, pulled for real, through the real gateway: the quick start works."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import RunningGateway


async def test_time_and_everything_tools_are_listed_and_called(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path
) -> None:
    gateway = gateway_factory(["--servers", "time,everything"], data_dir=servers_data_dir)
    async with gateway.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"time__get_current_time", "time__convert_time", "everything__echo"} <= names
        now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        echo = await client.call_tool("everything__echo", {"message": "through the gateway"})
    assert now.is_error is False
    assert '"timezone": "UTC"' in now.content[0].text or "UTC" in now.content[0].text
    assert "through the gateway" in echo.content[0].text


async def test_everything_resources_and_prompts_route_through(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path
) -> None:
    gateway = gateway_factory(["--servers", "everything"], data_dir=servers_data_dir)
    async with gateway.client(mode="2026-07-28") as client:
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        resources = (await client.list_resources()).resources
        assert prompts and all(p.startswith("everything__") for p in prompts)
        assert resources
        first = await client.read_resource(str(resources[0].uri))
    assert first.contents


async def test_time_server_error_is_a_tool_error_not_a_crash(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path
) -> None:
    gateway = gateway_factory(["--servers", "time"], data_dir=servers_data_dir)
    async with gateway.client() as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "Not/AZone"})
        again = await client.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
    assert result.is_error is True
    assert again.is_error is False
