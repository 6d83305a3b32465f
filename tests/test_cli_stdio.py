"""``mcp-gateway stdio``: a stdio-only client (the real mcp client, spawning the bridge) uses the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support import REPO, RunningGateway, fixture_entry, free_port

CATALOG = {"fx": fixture_entry()}


def bridge(env: dict[str, str], *args: str) -> StdioServerParameters:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "gateway", "stdio", *args], env={**base, **env}, cwd=str(REPO)
    )


async def test_a_stdio_client_lists_and_calls_tools_through_the_bridge(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory(["--servers", "fx", "--runtime", "host"], catalog=CATALOG)
    env = {"MCP_GATEWAY_URL": gateway.url, "MCP_GATEWAY_TOKEN": gateway.token}
    async with Client(stdio_client(bridge(env)), mode="legacy") as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert "fx__echo" in names
        result = await client.call_tool("fx__add", {"a": 20, "b": 22})
    assert not result.is_error
    assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "42"


async def test_the_bridge_takes_url_and_token_flags(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "fx", "--runtime", "host"], catalog=CATALOG)
    params = bridge({}, "--url", gateway.base_url, "--token", gateway.token)
    async with Client(stdio_client(params), mode="legacy") as client:
        result = await client.call_tool("fx__echo", {"text": "through the bridge"})
    assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "through the bridge"


def test_a_line_that_is_not_json_rpc_gets_a_parse_error(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--runtime", "host"])
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "stdio", "--url", gateway.base_url, "--token", gateway.token],
        input="this is not json\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"code":-32700' in result.stdout.replace(" ", "")


def test_without_a_token_the_bridge_fails_in_one_line(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "stdio",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--data-dir",
            str(tmp_path),
        ],
        input="",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no token" in result.stderr
