"""Instant tool lists: a sandbox's first tools/list comes from the tool record, without starting servers.

The servers here take 5 s to start (``--start-delay 5``), so "instant" and "started" are far
apart. One gateway run per module learns their tools into a data dir (the record); each test
starts a fresh gateway on a copy of it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from tests.support import RunningGateway, fixture_entry, process_tree, start_gateway

DELAY = "5"
CATALOG: dict[str, Any] = {
    "a": fixture_entry("--name", "a", "--start-delay", DELAY),
    "b": fixture_entry("--name", "b", "--start-delay", DELAY, "--tools", "30"),
    "c": fixture_entry("--name", "c", "--start-delay", DELAY, "--prompts"),
}
SERVERS = ["--servers", "a,b,c"]


@pytest.fixture(scope="module")
def warm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose record knows a, b and c; a's record also holds ``extra`` (added by change_tools)."""
    workdir = tmp_path_factory.mktemp("warm")
    gateway = start_gateway(SERVERS, workdir=workdir, catalog=CATALOG)
    try:

        async def learn() -> None:
            async with gateway.client() as client:
                await client.list_tools()
                await client.call_tool("a__change_tools", {})
                await wait_for(lambda: "extra" in tool_names_in_record(gateway.data_dir, "a"))

        asyncio.run(learn())
    finally:
        gateway.stop()
    return gateway.data_dir


@pytest.fixture
def start_warm(
    warm_data: Path, tmp_path: Path, gateway_factory: Callable[..., RunningGateway]
) -> Callable[..., RunningGateway]:
    """Start a gateway on a copy of the warm data dir (``catalog`` and ``args`` may be changed)."""

    def start(args: list[str] = SERVERS, catalog: dict[str, Any] = CATALOG) -> RunningGateway:
        data_dir = tmp_path / f"data{len(list(tmp_path.iterdir()))}"
        shutil.copytree(warm_data, data_dir)
        return gateway_factory(args, catalog=catalog, data_dir=data_dir)

    return start


def record_of(data_dir: Path, server: str) -> dict[str, Any]:
    """The one tool record of ``server`` (every test sandbox runs it with the same settings)."""
    paths = list((data_dir / "toolcache" / server).glob("*.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def tool_names_in_record(data_dir: Path, server: str) -> set[str]:
    try:
        record = record_of(data_dir, server)
    except (AssertionError, OSError, ValueError):
        return set()
    return {tool["name"] for tool in record["tools"]}


async def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class Notifications:
    """A client message handler that keeps the notifications it receives."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    async def __call__(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.received.append(message)

    def tools_changed(self) -> int:
        return sum(isinstance(m, types.ToolListChangedNotification) for m in self.received)


def running_servers(gateway: RunningGateway) -> set[str]:
    """The ``--name`` of every fixture server process under the gateway (runtimes may add wrappers)."""
    names: set[str] = set()
    for pid in process_tree(gateway.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg.endswith("fixture_server.py") for arg in argv) and "--name" in argv:
            names.add(argv[argv.index("--name") + 1])
    return names


def mint(gateway: RunningGateway, *flags: str) -> str:
    argv = [sys.executable, "-m", "gateway", "token", "--data-dir", str(gateway.data_dir), *flags]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


# -- the record ---------------------------------------------------------------------------------


def test_record_holds_each_servers_tools_keyed_by_its_entry(warm_data: Path) -> None:
    for server in ("a", "b", "c"):
        record = record_of(warm_data, server)
        assert record["version"] == 1 and record["key"]
        assert "echo" in {tool["name"] for tool in record["tools"]}
    assert "tool_0029" in tool_names_in_record(warm_data, "b")
    c = record_of(warm_data, "c")
    assert {prompt["name"] for prompt in c["prompts"]} == {"greet", "plain"}


def test_list_changed_from_a_server_updates_its_record(warm_data: Path) -> None:
    assert "extra" in tool_names_in_record(warm_data, "a")


# -- instant lists ------------------------------------------------------------------------------


async def test_first_tools_list_comes_from_the_record_without_starting_servers(
    start_warm: Callable[..., RunningGateway],
) -> None:
    gateway = start_warm()
    async with gateway.client() as client:
        started = time.perf_counter()
        names = {tool.name for tool in (await client.list_tools()).tools}
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"first tools/list took {elapsed:.2f} s"
    assert {"a__echo", "a__extra", "b__tool_0029", "c__echo"} <= names
    assert running_servers(gateway) == set()


async def test_a_call_starts_only_the_server_of_its_tool(start_warm: Callable[..., RunningGateway]) -> None:
    gateway = start_warm()
    async with gateway.client() as client:
        await client.list_tools()
        result = await client.call_tool("b__echo", {"text": "from the record"})
    assert result.content[0].text == "from the record"
    assert running_servers(gateway) == {"b"}


async def test_live_list_that_differs_from_the_record_sends_list_changed(
    start_warm: Callable[..., RunningGateway],
) -> None:
    gateway = start_warm()
    notifications = Notifications()
    async with gateway.client(message_handler=notifications) as client:
        assert "a__extra" in {tool.name for tool in (await client.list_tools()).tools}
        await client.call_tool("a__echo", {"text": "start a"})  # a's live list has no "extra"
        await wait_for(lambda: notifications.tools_changed() >= 1)
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
    assert "a__extra" not in names and "a__echo" in names
    assert "extra" not in tool_names_in_record(gateway.data_dir, "a")


async def test_live_list_equal_to_the_record_sends_no_list_changed(
    start_warm: Callable[..., RunningGateway],
) -> None:
    gateway = start_warm()
    notifications = Notifications()
    async with gateway.client(message_handler=notifications) as client:
        await client.list_tools()
        await client.call_tool("b__echo", {"text": "start b"})
        await asyncio.sleep(1.0)
    assert notifications.tools_changed() == 0


async def test_changed_catalog_entry_is_started_to_learn_its_tools(start_warm: Callable[..., RunningGateway]) -> None:
    catalog = {**CATALOG, "b": fixture_entry("--name", "b", "--start-delay", DELAY, "--tools", "3")}
    gateway = start_warm(catalog=catalog)
    async with gateway.client() as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "b__tool_0002" in names and "b__tool_0003" not in names  # live, not the record's 30
    assert "a__echo" in names
    assert running_servers(gateway) == {"b"}  # only b, whose record no longer matches


async def test_never_seen_server_is_awaited_up_to_the_deadline_then_announced(
    start_warm: Callable[..., RunningGateway],
) -> None:
    catalog = {**CATALOG, "slow": fixture_entry("--name", "slow", "--start-delay", "14")}
    gateway = start_warm(["--servers", "a,slow"], catalog=catalog)
    notifications = Notifications()
    async with gateway.client(message_handler=notifications) as client:
        started = time.perf_counter()
        names = {tool.name for tool in (await client.list_tools()).tools}
        elapsed = time.perf_counter() - started
        assert 9.0 <= elapsed < 13.0, f"first tools/list took {elapsed:.2f} s"
        assert "a__echo" in names and "slow__echo" not in names
        await wait_for(lambda: notifications.tools_changed() >= 1)
        names = {tool.name for tool in (await client.list_tools(cache_mode="bypass")).tools}
    assert "slow__echo" in names


async def test_narrowed_token_lists_only_its_tools_from_the_record(start_warm: Callable[..., RunningGateway]) -> None:
    gateway = start_warm()
    token = mint(gateway, "--servers", "b", "--tools", "b__tool_001*,b__echo")
    async with gateway.client(token) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == {"b__echo", *(f"b__tool_001{i}" for i in range(10))}
    assert running_servers(gateway) == set()


async def test_prestart_starts_a_new_sandboxs_servers_after_its_first_list(
    start_warm: Callable[..., RunningGateway],
) -> None:
    gateway = start_warm(["--prestart"])  # no default servers: the sandbox below is the only one
    with gateway.admin() as admin:
        response = admin.post("/admin/sandboxes", json={"mcp": {"a": {}, "b": {}}})
    assert response.status_code == 201, response.text
    async with gateway.client(response.json()["mcp_token"]) as client:
        started = time.perf_counter()
        await client.list_tools()
        assert time.perf_counter() - started < 2.0
        await wait_for(lambda: running_servers(gateway) == {"a", "b"})


# A stdio MCP server whose tool description quotes its secret (as careless servers do).
LEAKY_SERVER = """
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "leaky"}}
    elif msg["method"] == "tools/list":
        tool = {"name": "use", "description": "Uses " + os.environ["LEAKY_TOKEN"], "inputSchema": {"type": "object"}}
        result = {"tools": [tool]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


async def test_record_never_keeps_a_sandbox_secret(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    secret = "leaky-secret-value-0123456789"
    script = tmp_path / "leaky_server.py"
    script.write_text(LEAKY_SERVER)
    catalog = {
        "leaky": {
            "command": [sys.executable, str(script)],
            "secrets": [{"name": "leaky.token", "env": "LEAKY_TOKEN"}],
        }
    }
    config = json.dumps({"leaky": {"token": secret}})
    gateway = gateway_factory(["--config", config], catalog=catalog)
    async with gateway.client() as client:
        tools = (await client.list_tools()).tools
    assert tools[0].description == "Uses [REDACTED:leaky.token]"
    record = json.dumps(record_of(gateway.data_dir, "leaky"))
    assert secret not in record and "[REDACTED:leaky.token]" in record
