"""Updating a live sandbox in place (``PATCH /admin/sandboxes/{id}``): only changed servers restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.client import AsyncGatewayClient, GatewayClient, GatewayError
from tests.sandbox_helpers import CATALOG, create, text_of
from tests.support import REPO, RunningGateway, start_gateway

OLD_SECRET = "old-canary-secret-5f1e0c"
NEW_SECRET = "new-canary-secret-a93b72"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("update"), catalog=CATALOG)
    yield gateway
    gateway.stop()


def patch(gateway: RunningGateway, sandbox_id: str, body: Any) -> httpx.Response:
    with gateway.admin() as admin:
        return admin.patch(f"/admin/sandboxes/{sandbox_id}", json=body)


def pids(gateway: RunningGateway, sandbox_id: str) -> dict[str, int | None]:
    with gateway.admin() as admin:
        status = admin.get("/admin/status").json()
    box = next(b for b in status["sandboxes"] if b["id"] == sandbox_id)
    return {server["name"]: server["pid"] for server in box["servers"]}


async def call(gateway: RunningGateway, token: str, name: str, arguments: dict[str, Any]) -> str:
    async with gateway.client(token) as client:
        return text_of(await client.call_tool(name, arguments))


async def tool_names(gateway: RunningGateway, token: str) -> set[str]:
    async with gateway.client(token) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


async def started(gateway: RunningGateway, secret: str = OLD_SECRET) -> dict[str, Any]:
    """A sandbox with canary (holding ``secret``) and plain, both running."""
    sandbox = create(gateway, {"canary": {"canaryToken": secret}, "plain": {}})
    token = sandbox["mcp_token"]
    assert await call(gateway, token, "canary__echo", {"text": "hi"}) == "hi"
    assert await call(gateway, token, "plain__echo", {"text": "hi"}) == "hi"
    return sandbox


async def test_a_new_secret_restarts_only_its_server_and_tokens_keep_working(gateway: RunningGateway) -> None:
    sandbox = await started(gateway)
    before = pids(gateway, sandbox["id"])
    assert before["canary"] and before["plain"]
    response = patch(gateway, sandbox["id"], {"mcp": {"canary": {"canaryToken": NEW_SECRET}}})
    assert response.status_code == 200, response.text
    assert response.json()["changed"] == ["canary"]
    assert response.json()["servers"] == ["canary", "plain"]
    assert NEW_SECRET not in response.text
    token = sandbox["mcp_token"]  # the token minted before the update
    assert await call(gateway, token, "plain__echo", {"text": "still"}) == "still"
    after = pids(gateway, sandbox["id"])
    assert after["plain"] == before["plain"]
    echoed = await call(gateway, token, "canary__secret_echo", {"name": "CANARY_TOKEN"})
    assert echoed == "[REDACTED:canary.token]"
    assert pids(gateway, sandbox["id"])["canary"] not in (None, before["canary"])


async def test_the_new_secret_is_redacted_and_the_old_one_no_longer(gateway: RunningGateway) -> None:
    sandbox = await started(gateway)
    assert patch(gateway, sandbox["id"], {"mcp": {"canary": {"canaryToken": NEW_SECRET}}}).status_code == 200
    token = sandbox["mcp_token"]
    assert await call(gateway, token, "plain__echo", {"text": NEW_SECRET}) == "[REDACTED:canary.token]"
    assert await call(gateway, token, "plain__echo", {"text": OLD_SECRET}) == OLD_SECRET


async def test_null_removes_a_server_and_an_object_adds_one(gateway: RunningGateway) -> None:
    sandbox = create(gateway, {"plain": {}})
    token = sandbox["mcp_token"]
    assert "plain__echo" in await tool_names(gateway, token)
    response = patch(gateway, sandbox["id"], {"mcp": {"plain": None, "canary": {"canaryToken": NEW_SECRET}}})
    assert response.status_code == 200, response.text
    assert response.json()["servers"] == ["canary"] and response.json()["changed"] == ["canary", "plain"]
    names = await tool_names(gateway, token)
    assert "canary__echo" in names and "plain__echo" not in names


async def test_an_unchanged_config_restarts_nothing(gateway: RunningGateway) -> None:
    sandbox = await started(gateway)
    before = pids(gateway, sandbox["id"])
    response = patch(gateway, sandbox["id"], {"mcp": {"canary": {"canaryToken": OLD_SECRET}}})
    assert response.status_code == 200 and response.json()["changed"] == []
    assert pids(gateway, sandbox["id"]) == before


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"mcp": {"nosuch": {}}}, "invalid_config"),
        ({"mcp": {"canary": {"wrongKey": "x"}}}, "invalid_config"),
        ({"mcp": {"noisy": None}}, "invalid_config"),  # not in the sandbox: nothing to remove
        ({"mcp": []}, "invalid_config"),
        ({"mcp": {}, "ttl": 5}, "invalid_request"),
        ({}, "invalid_request"),
    ],
)
def test_a_bad_update_is_refused_as_on_create(gateway: RunningGateway, body: Any, error: str) -> None:
    sandbox = create(gateway, {"canary": {"canaryToken": OLD_SECRET}})
    response = patch(gateway, sandbox["id"], body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    with gateway.admin() as admin:
        assert admin.get(f"/admin/sandboxes/{sandbox['id']}").json()["servers"] == ["canary"]


def test_updating_a_missing_sandbox_is_404(gateway: RunningGateway) -> None:
    response = patch(gateway, "no-such-sandbox", {"mcp": {"plain": {}}})
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_the_python_client_updates_a_sandbox(gateway: RunningGateway) -> None:
    with GatewayClient(gateway.base_url, admin_key=gateway.admin_key) as client:
        sandbox = client.create_sandbox(mcp={"plain": {}})
        assert sandbox.update({"canary": {"canaryToken": NEW_SECRET}}) == ["canary"]
        assert sandbox.servers == ["canary", "plain"]
        assert client.get_sandbox(sandbox.id).servers == ["canary", "plain"]
        with pytest.raises(GatewayError) as refused:
            client.update_sandbox(sandbox.id, {"nosuch": {}})
    assert refused.value.status == 400 and refused.value.error == "invalid_config"


async def test_the_async_python_client_updates_a_sandbox(gateway: RunningGateway) -> None:
    async with AsyncGatewayClient(gateway.base_url, admin_key=gateway.admin_key) as client:
        sandbox = await client.create_sandbox(mcp={"plain": {}, "canary": {"canaryToken": OLD_SECRET}})
        updated = await client.update_sandbox(sandbox.id, {"plain": None})
    assert updated.servers == ["canary"] and updated.changed == ["plain"]


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    command = [sys.executable, "-m", "gateway", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=REPO, env=environment, timeout=60)


def test_the_cli_updates_a_sandbox_from_standard_input(gateway: RunningGateway) -> None:
    sandbox = create(gateway, {"plain": {}})
    config = json.dumps({"canary": {"canaryToken": NEW_SECRET}})
    result = cli(
        "sandbox", "update", sandbox["id"], "--config", "-", "--json", "--data-dir", str(gateway.data_dir), stdin=config
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": sandbox["id"], "servers": ["canary", "plain"], "changed": ["canary"]}
    assert NEW_SECRET not in result.stdout + result.stderr


def test_the_cli_reports_a_bad_update_on_one_line(gateway: RunningGateway) -> None:
    sandbox = create(gateway, {"plain": {}})
    result = cli("sandbox", "update", sandbox["id"], "--config", '{"nosuch": {}}', "--data-dir", str(gateway.data_dir))
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuch" in lines[0] and "HTTP 400" in lines[0], result.stderr
