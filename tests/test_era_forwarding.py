"""Both protocol eras reach every kind of upstream: the client's envelope never crosses a hop.

A 2026-07-28 client puts its protocol envelope (``io.modelcontextprotocol/*`` keys) into each
request's ``_meta``. The gateway speaks to each upstream in the era that upstream negotiated,
so those keys stay on the client's hop. Python-SDK servers reject a request that carries them
on a handshake-era connection, which is what these tests would catch.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import REPO, RunningGateway, fixture_entry

ERAS = ["legacy", "2026-07-28"]
RESERVED = "io.modelcontextprotocol/"


@pytest.fixture
def sdk_server(tmp_path: Path) -> dict[str, Any]:
    """A catalog entry for an `mcp` 2.x server living outside the repository."""
    home = tmp_path / "sdk-project"
    home.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "sdk_server.py", home / "server.py")
    return {"command": [sys.executable, str(home / "server.py")]}


@pytest.mark.parametrize("mode", ERAS)
async def test_python_time_server_answers_calls_of_both_eras(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path, mode: str
) -> None:
    gateway = gateway_factory(["--servers", "time"], data_dir=servers_data_dir)
    async with gateway.client(mode=mode) as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    assert result.is_error is False
    assert json.loads(result.content[0].text)["timezone"] == "UTC"


@pytest.mark.parametrize("mode", ERAS)
async def test_node_everything_server_answers_calls_prompts_and_resources_of_both_eras(
    gateway_factory: Callable[..., RunningGateway], servers_data_dir: Path, mode: str
) -> None:
    gateway = gateway_factory(["--servers", "everything"], data_dir=servers_data_dir)
    async with gateway.client(mode=mode) as client:
        echo = await client.call_tool("everything__echo", {"message": f"era {mode}"})
        prompt = await client.get_prompt("everything__simple-prompt", {})
        resources = (await client.list_resources()).resources
        read = await client.read_resource(str(resources[0].uri))
    assert echo.is_error is False and f"era {mode}" in echo.content[0].text
    assert prompt.messages
    assert read.contents


@pytest.mark.parametrize("mode", ERAS)
async def test_sdk_server_outside_the_repository_answers_every_forwarded_request_of_both_eras(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, sdk_server: dict[str, Any], mode: str
) -> None:
    gateway = gateway_factory(["--servers", "sdk"], catalog={"sdk": sdk_server})
    async with gateway.client(mode=mode) as client:
        echo = await client.call_tool("sdk__echo", {"text": "hi"})
        prompt = await client.get_prompt("sdk__greet", {"name": "Ada"})
        note = await client.read_resource("note://hello")
    assert echo.is_error is False and echo.content[0].text == "sdk echo: hi"
    assert prompt.messages[0].content.text == "Hello, Ada!"
    assert note.contents[0].text == "hello from the sdk fixture"


async def test_no_reserved_meta_key_of_a_2026_client_reaches_the_upstream(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory(["--servers", "fix"], catalog={"fix": fixture_entry()})
    async with gateway.client(mode="2026-07-28") as client:
        result = await client.call_tool("fix__meta", {})
    seen = result.structured_content["meta"]
    assert not [key for key in seen if key.startswith(RESERVED)]


async def test_no_reserved_meta_key_of_an_upstream_result_reaches_a_2025_client(
    gateway_factory: Callable[..., RunningGateway], sdk_server: dict[str, Any]
) -> None:
    gateway = gateway_factory(["--servers", "sdk"], catalog={"sdk": sdk_server})
    async with gateway.client(mode="legacy") as client:
        result = await client.call_tool("sdk__echo", {"text": "x"})
    assert not [key for key in (result.meta or {}) if key.startswith(RESERVED)]


@pytest.mark.parametrize("mode", ERAS)
async def test_an_upstream_error_names_its_server_and_is_logged(
    gateway_factory: Callable[..., RunningGateway], mode: str
) -> None:
    gateway = gateway_factory(["--servers", "fix"], catalog={"fix": fixture_entry()})
    async with gateway.client(mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__rpc_error", {"code": -32001, "message": "quota exhausted"})
    assert caught.value.error.message == "fix: quota exhausted"
    assert caught.value.error.code == -32001
    assert "fix: quota exhausted" in gateway.output()
