"""A server process gets only what the contract allows, and its secrets go nowhere else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry, process_tree

CANARY = "gateway-env-canary-6d1f"
SECRET = "s3cr3t-value-for-fix-91c2"
OTHER_SECRET = "s3cr3t-of-other-server-77aa"

CATALOG = {
    "fix": fixture_entry(
        "--name",
        "fix",
        env=[
            {"name": "FIX_HOST", "value": "{{fix.host}}"},
            {"name": "FIX_HEADERS", "value": '{"Authorization": "Bearer $FIX_API_KEY"}'},
            {"name": "FIX_UNSET", "value": "{{fix.missing}}"},
        ],
        secrets=[{"name": "fix.api_key", "env": "FIX_API_KEY"}],
        config=[{"name": "fix", "properties": {"host": {"type": "string"}, "missing": {"type": "string"}}}],
    ),
    "other": fixture_entry("--name", "other", secrets=[{"name": "other.token", "env": "OTHER_TOKEN"}]),
}
CONFIG = {"fix": {"apiKey": SECRET, "host": "example.test"}, "other": {"token": OTHER_SECRET}}


def start(gateway_factory: Callable[..., RunningGateway], tmp_path: Path) -> RunningGateway:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(CONFIG))
    env = {"MCP_GATEWAY_CANARY": CANARY, "SHELL": "/bin/canary-shell", "TERM": "canary-term", "USER": "canary-user"}
    # Host runtime: these tests read the servers' /proc entries by the pids the servers report.
    return gateway_factory(["--config", f"@{config_file}", "--runtime", "host"], catalog=CATALOG, env=env)


async def fetch_env(gateway: RunningGateway, server: str) -> dict[str, str]:
    async with gateway.client() as client:
        result = await client.call_tool(f"{server}__env", {})
    return result.structured_content["env"]


async def test_child_sees_only_the_base_its_env_and_its_secrets(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    env = await fetch_env(gateway, "fix")
    assert set(env) == {"PATH", "HOME", "LANG", "FIX_HOST", "FIX_HEADERS", "FIX_API_KEY"}
    assert CANARY not in json.dumps(env)


async def test_config_values_and_secret_references_are_filled_in(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    async with gateway.client() as client:
        result = await client.call_tool("fix__whoami", {})
    pid = result.structured_content["pid"]
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    assert environ["FIX_HOST"] == "example.test"
    assert environ["FIX_HEADERS"] == f'{{"Authorization": "Bearer {SECRET}"}}'
    assert environ["FIX_API_KEY"] == SECRET
    assert "FIX_UNSET" not in environ


async def test_home_is_a_private_directory_in_the_data_dir(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    env = await fetch_env(gateway, "fix")
    assert Path(env["HOME"]).is_relative_to(gateway.data_dir)
    assert env["HOME"] != (await fetch_env(gateway, "other"))["HOME"]


async def test_each_server_gets_only_its_own_secret(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    async with gateway.client() as client:
        fix = await client.call_tool("fix__whoami", {})
        other = await client.call_tool("other__whoami", {})
    fix_env = Path(f"/proc/{fix.structured_content['pid']}/environ").read_bytes()
    other_env = Path(f"/proc/{other.structured_content['pid']}/environ").read_bytes()
    assert SECRET.encode() in fix_env and OTHER_SECRET.encode() not in fix_env
    assert OTHER_SECRET.encode() in other_env and SECRET.encode() not in other_env


async def test_secrets_are_on_no_command_line(gateway_factory: Callable[..., RunningGateway], tmp_path: Path) -> None:
    gateway = start(gateway_factory, tmp_path)
    await fetch_env(gateway, "fix")
    await fetch_env(gateway, "other")
    pids = {gateway.process.pid, *process_tree(gateway.process.pid)}
    assert len(pids) >= 3
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline
        assert OTHER_SECRET.encode() not in cmdline


async def test_secret_values_in_results_are_redacted(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    async with gateway.client() as client:
        result = await client.call_tool("fix__secret_echo", {"name": "FIX_API_KEY"})
        env_result = await client.call_tool("fix__env", {})
    assert result.content[0].text == "[REDACTED:fix.api_key]"
    assert SECRET not in env_result.content[0].text
    assert SECRET not in json.dumps(env_result.structured_content)


async def test_secrets_never_reach_the_gateway_output_or_server_logs(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path)
    async with gateway.client() as client:
        await client.call_tool("fix__secret_echo", {"name": "FIX_API_KEY"})
        with pytest.raises(MCPError):
            await client.call_tool("fix__crash", {})  # a crash is logged with the server's stderr tail
    gateway.stop()
    texts = [gateway.output()] + [p.read_text(errors="replace") for p in (gateway.data_dir / "logs").rglob("*.log")]
    for text in texts:
        assert SECRET not in text
        assert OTHER_SECRET not in text
