"""The gateway is transparent: the same client assertions hold against a server directly (the ``mcp``
client over stdio) and through the gateway (streamable HTTP, handshake era), for the fixture server,
an ``mcp`` 2.x server and the pulled server-everything.

Each test runs once per way in (``direct``, ``gateway``); only the tool/prompt name prefix differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from gateway.catalog.entries import Catalog
from gateway.catalog.pull import resolve_command
from tests.servers_cache import pulled_data_dir
from tests.support import FIXTURE_SERVER, REPO, RunningGateway

WAYS = ["direct", "gateway"]
FIXTURE_ARGS = [str(FIXTURE_SERVER), "--name", "fix", "--prompts", "--resources"]


@dataclass
class Way:
    client: Client
    prefix: str  # "" directly, "<server>__" through the gateway
    changes: asyncio.Queue[Any]

    def name(self, bare: str) -> str:
        return self.prefix + bare


@contextlib.asynccontextmanager
async def connect(
    way: str, server: str, command: list[str], gateway_factory: Callable[..., RunningGateway], **callbacks: Any
) -> AsyncIterator[Way]:
    changes: asyncio.Queue[Any] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            await changes.put(message)

    callbacks["message_handler"] = on_message
    if way == "direct":
        params = StdioServerParameters(command=command[0], args=command[1:])
        async with Client(params, mode="legacy", **callbacks) as client:
            yield Way(client, "", changes)
        return
    gateway = gateway_factory(["--servers", server, "--runtime", "host"], catalog={server: {"command": command}})
    async with gateway.client(mode="legacy", **callbacks) as client:
        yield Way(client, f"{server}__", changes)


def fixture_command() -> list[str]:
    return [sys.executable, *FIXTURE_ARGS]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


# -- the fixture server ----------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
async def test_fixture_tools_calls_and_errors_match(way: str, gateway_factory: Callable[..., RunningGateway]) -> None:
    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        names = {t.name for t in (await w.client.list_tools()).tools}
        echo = await w.client.call_tool(w.name("echo"), {"text": "héllo"})
        failed = await w.client.call_tool(w.name("fail"), {"message": "broken"})
        with pytest.raises(MCPError) as rpc:
            await w.client.call_tool(w.name("rpc_error"), {"code": -32000, "message": "nope"})
    assert {w.name(n) for n in ("echo", "fail", "progress", "sample", "elicit")} <= names
    assert (echo.is_error, text_of(echo), echo.structured_content) == (False, "héllo", {"text": "héllo"})
    assert (failed.is_error, text_of(failed)) == (True, "broken")
    assert rpc.value.error.code == -32000 and "nope" in rpc.value.error.message


@pytest.mark.parametrize("way", WAYS)
async def test_fixture_progress_matches(way: str, gateway_factory: Callable[..., RunningGateway]) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        result = await w.client.call_tool(w.name("progress"), {"steps": 3}, progress_callback=on_progress)
    assert text_of(result) == "done"
    assert [p for p, _ in seen] == [1, 2, 3]


@pytest.mark.parametrize("way", WAYS)
async def test_a_cancelled_call_leaves_the_connection_serving(
    way: str, gateway_factory: Callable[..., RunningGateway]
) -> None:
    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        await w.client.call_tool(w.name("echo"), {"text": "warm"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.client.call_tool(w.name("sleep"), {"seconds": 30}), 1.0)
        echo = await asyncio.wait_for(w.client.call_tool(w.name("echo"), {"text": "after"}), 20)
    assert text_of(echo) == "after"


@pytest.mark.parametrize("way", WAYS)
async def test_fixture_prompts_and_resources_match(way: str, gateway_factory: Callable[..., RunningGateway]) -> None:
    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        prompts = {p.name for p in (await w.client.list_prompts()).prompts}
        prompt = await w.client.get_prompt(w.name("plain"), {})
        resources = (await w.client.list_resources()).resources
        read = await w.client.read_resource(str(resources[0].uri))
    assert w.name("plain") in prompts
    assert prompt.messages
    assert read.contents


@pytest.mark.parametrize("way", WAYS)
async def test_fixture_list_changed_reaches_the_client(
    way: str, gateway_factory: Callable[..., RunningGateway]
) -> None:
    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        await w.client.list_tools()
        await asyncio.sleep(0.5)  # the client's event stream is open
        await w.client.call_tool(w.name("change_tools"), {})
        changed = await asyncio.wait_for(w.changes.get(), 30)
    assert isinstance(changed, types.ToolListChangedNotification)


@pytest.mark.parametrize("way", WAYS)
async def test_an_elicitation_round_trip_matches(way: str, gateway_factory: Callable[..., RunningGateway]) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "yes"})

    async with connect(way, "fix", fixture_command(), gateway_factory, elicitation_callback=elicit) as w:
        result = await w.client.call_tool(w.name("elicit"), {"message": "continue?"})
    assert asked == ["continue?"]
    assert result.is_error is False
    assert '"answer": "yes"' in text_of(result)


@pytest.mark.parametrize("way", WAYS)
async def test_a_sampling_round_trip_matches(way: str, gateway_factory: Callable[..., RunningGateway]) -> None:
    async def sample(context: Any, params: Any) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="hello"), model="m"
        )

    async with connect(way, "fix", fixture_command(), gateway_factory, sampling_callback=sample) as w:
        result = await w.client.call_tool(w.name("sample"), {"prompt": "hi"})
    assert (result.is_error, text_of(result)) == (False, "sampled: hello")


@pytest.mark.parametrize("way", WAYS)
async def test_sampling_without_the_capability_fails_the_same_way(
    way: str, gateway_factory: Callable[..., RunningGateway]
) -> None:
    async with connect(way, "fix", fixture_command(), gateway_factory) as w:
        result = await w.client.call_tool(w.name("sample"), {"prompt": "hi"})
    assert result.is_error is True


# -- an mcp 2.x server -----------------------------------------------------------------------


@pytest.fixture
def sdk_command(tmp_path: Path) -> list[str]:
    home = tmp_path / "sdk-project"
    home.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "sdk_server.py", home / "server.py")
    return [sys.executable, str(home / "server.py")]


@pytest.mark.parametrize("way", WAYS)
async def test_sdk_server_answers_match(
    way: str, gateway_factory: Callable[..., RunningGateway], sdk_command: list[str]
) -> None:
    async with connect(way, "sdk", sdk_command, gateway_factory) as w:
        names = {t.name for t in (await w.client.list_tools()).tools}
        echo = await w.client.call_tool(w.name("echo"), {"text": "hi"})
        failed = await w.client.call_tool(w.name("fail"), {"reason": "bad"})
        prompt = await w.client.get_prompt(w.name("greet"), {"name": "Ada"})
        read = await w.client.read_resource("note://hello")
    assert {w.name("echo"), w.name("fail")} <= names
    assert text_of(echo) == "sdk echo: hi"
    assert failed.is_error is True
    assert "Ada" in str(prompt.messages[0].content)
    assert read.contents


# -- server-everything (pulled) --------------------------------------------------------------


@pytest.fixture(scope="module")
def everything_command() -> list[str]:
    data = pulled_data_dir(["everything"])
    catalog = Catalog.load(())
    return resolve_command(catalog.get("everything"), data)


@pytest.mark.parametrize("way", WAYS)
async def test_everything_server_answers_match(
    way: str, gateway_factory: Callable[..., RunningGateway], everything_command: list[str]
) -> None:
    async with connect(way, "everything", everything_command, gateway_factory) as w:
        names = {t.name for t in (await w.client.list_tools()).tools}
        echo = await w.client.call_tool(w.name("echo"), {"message": "parity"})
        prompt = await w.client.get_prompt(w.name("simple-prompt"), {})
        resources = (await w.client.list_resources()).resources
        read = await w.client.read_resource(str(resources[0].uri))
    assert w.name("echo") in names
    assert "parity" in text_of(echo)
    assert prompt.messages
    assert read.contents
