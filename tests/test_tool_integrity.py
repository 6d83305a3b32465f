"""A changed tool definition ("rug pull") is withheld until an operator accepts it."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from gateway.features.pinning import ToolLedger, definition_hash
from tests.support import RunningGateway, fixture_entry

CATALOG = {"fix": fixture_entry("--name", "fix")}


async def descriptions(gateway: RunningGateway) -> dict[str, str]:
    async with gateway.client() as client:
        return {t.name: t.description or "" for t in (await client.list_tools()).tools}


async def change_echo(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        await client.call_tool("fix__change_description", {})


async def test_changed_description_withholds_the_tool(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "fix"], catalog=CATALOG)
    assert "fix__echo" in await descriptions(gateway)
    await change_echo(gateway)
    listed = await descriptions(gateway)
    assert "fix__echo" not in listed
    assert "fix__env" in listed
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__echo", {"text": "x"})
    assert caught.value.code == -32602


async def test_operator_accepts_a_change_through_the_admin_api(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "fix"], catalog=CATALOG)
    await descriptions(gateway)
    await change_echo(gateway)
    await descriptions(gateway)
    with gateway.admin() as admin:
        pending = admin.get("/admin/tools/changes").json()["changes"]
        assert [(c["server"], c["tool"], c["description"]) for c in pending] == [("fix", "echo", "CHANGED")]
        accepted = admin.post("/admin/tools/accept", json={"server": "fix"}).json()
    assert accepted == {"accepted": ["echo"]}
    assert (await descriptions(gateway))["fix__echo"] == "CHANGED"


async def test_accept_tool_changes_flag_lets_changes_through(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "fix", "--accept-tool-changes"], catalog=CATALOG)
    await descriptions(gateway)
    await change_echo(gateway)
    assert (await descriptions(gateway))["fix__echo"] == "CHANGED"


async def test_tool_admin_routes_need_the_admin_key(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--servers", "fix"], catalog=CATALOG)
    url = gateway.base_url + "/admin/tools/changes"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not-the-key"}).status_code == 401
    sandbox_token = httpx.get(url, headers={"Authorization": f"Bearer {gateway.token}"})
    assert sandbox_token.status_code == 403  # a real credential, but not an admin one
    assert sandbox_token.json()["error"] == "insufficient_scope"


async def test_name_collision_after_namespacing_is_refused(gateway_factory: Callable[..., RunningGateway]) -> None:
    catalog = {"a": fixture_entry("--name", "a", prefix=""), "b": fixture_entry("--name", "b", prefix="")}
    gateway = gateway_factory(["--servers", "a,b"], catalog=catalog)
    async with gateway.client() as client:
        names = [t.name for t in (await client.list_tools()).tools]
        whoami = await client.call_tool("whoami", {})
    assert names.count("echo") == 1
    argv = whoami.structured_content["argv"]
    assert argv[argv.index("--name") + 1] == "a"  # the first server keeps the name; the second's is refused


def test_ledger_remembers_hashes_across_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "hashes.json"
    tool = {"name": "t", "description": "one", "inputSchema": {"type": "object"}}
    assert ToolLedger(path, accept_changes=False).admit("s", "srv", "tool", tool)
    changed = {**tool, "description": "two"}
    assert not ToolLedger(path, accept_changes=False).admit("s", "srv", "tool", changed)
    assert definition_hash(tool) != definition_hash(changed)
