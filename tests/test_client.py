"""The Python client (sync and async) against a real gateway: the E2B-style flow and its errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.client import AsyncGatewayClient, GatewayClient, GatewayError
from tests.sandbox_helpers import CATALOG, mcp_status, text_of
from tests.support import RunningGateway, free_port, start_gateway

SECRET = "client-canary-5e0c2b7a"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("client"), catalog=CATALOG)
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[GatewayClient]:
    with GatewayClient(gateway.base_url, admin_key=gateway.admin_key) as client:
        yield client


async def test_create_sandbox_gives_url_and_token_that_work(gateway: RunningGateway, client: GatewayClient) -> None:
    sandbox = client.create_sandbox(mcp={"canary": {"token": SECRET}})
    assert sandbox.id.startswith("sbx-")
    assert sandbox.mcp_url == gateway.url
    assert sandbox.servers == ["canary"]
    assert sandbox.mcp_token
    async with gateway.client(sandbox.mcp_token) as mcp:
        result = await mcp.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"})
    assert text_of(result) == "[REDACTED:canary.token]"
    sandbox.delete()
    assert mcp_status(gateway, sandbox.mcp_token) == 401


def test_create_with_id_and_ttl(client: GatewayClient) -> None:
    sandbox = client.create_sandbox(mcp={"plain": {}}, id="client-ttl", ttl=600)
    assert sandbox.id == "client-ttl"
    fetched = client.get_sandbox("client-ttl")
    assert fetched.expires_at is not None and fetched.servers == ["plain"]
    assert fetched.mcp_token is None
    sandbox.delete()


def test_list_get_and_delete(gateway: RunningGateway, client: GatewayClient) -> None:
    sandbox = client.create_sandbox(mcp={"plain": {}})
    listed = {s.id: s for s in client.list_sandboxes()}
    assert sandbox.id in listed and "default" in listed
    assert listed[sandbox.id].mcp_url == gateway.url
    assert client.get_sandbox(sandbox.id).servers == ["plain"]
    client.delete_sandbox(sandbox.id)
    with pytest.raises(GatewayError) as caught:
        client.get_sandbox(sandbox.id)
    assert caught.value.status == 404 and sandbox.id in caught.value.message


def test_new_token_works_and_can_be_narrowed(gateway: RunningGateway, client: GatewayClient) -> None:
    sandbox = client.create_sandbox(mcp={"canary": {"token": SECRET}, "plain": {}})
    token = client.new_token(sandbox.id, ttl=120, servers=["plain"])
    assert mcp_status(gateway, token) == 200
    assert sandbox.new_token(ttl=60) == sandbox.mcp_token
    assert sandbox.claude_command().startswith(f"claude mcp add --transport http mcp-gateway {gateway.url} ")
    sandbox.delete()


def test_the_token_is_not_in_repr(client: GatewayClient) -> None:
    sandbox = client.create_sandbox(mcp={"plain": {}})
    assert sandbox.mcp_token and sandbox.mcp_token not in repr(sandbox)
    sandbox.delete()


def test_a_bad_config_raises_with_the_valid_servers(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as caught:
        client.create_sandbox(mcp={"nosuch": {}})
    assert caught.value.status == 400
    assert caught.value.error == "invalid_config"
    assert "canary" in caught.value.message and "plain" in caught.value.message


def test_a_wrong_admin_key_raises_401(gateway: RunningGateway) -> None:
    with GatewayClient(gateway.base_url, admin_key="wrong") as client, pytest.raises(GatewayError) as caught:
        client.list_sandboxes()
    assert caught.value.status == 401


def test_an_unreachable_gateway_raises_status_0() -> None:
    with GatewayClient(f"http://127.0.0.1:{free_port()}", admin_key="x", timeout=5) as client:
        with pytest.raises(GatewayError) as caught:
            client.list_sandboxes()
    assert caught.value.status == 0 and "cannot reach" in caught.value.message


def test_the_admin_key_comes_from_the_environment(gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_ADMIN_KEY", gateway.admin_key)
    monkeypatch.setenv("MCP_GATEWAY_URL", gateway.url)
    with GatewayClient() as client:
        assert any(s.id == "default" for s in client.list_sandboxes())


async def test_async_client_full_flow(gateway: RunningGateway) -> None:
    async with AsyncGatewayClient(gateway.base_url, admin_key=gateway.admin_key) as client:
        sandbox = await client.create_sandbox(mcp={"canary": {"token": SECRET}}, ttl=300)
        assert sandbox.mcp_url == gateway.url and sandbox.servers == ["canary"]
        async with gateway.client(sandbox.mcp_token) as mcp:
            assert text_of(await mcp.call_tool("canary__echo", {"text": "hi"})) == "hi"
        assert sandbox.id in [s.id for s in await client.list_sandboxes()]
        assert (await client.get_sandbox(sandbox.id)).expires_at is not None
        token = await sandbox.new_token(ttl=30)
        assert mcp_status(gateway, token) == 200
        await sandbox.delete()
        with pytest.raises(GatewayError) as caught:
            await client.get_sandbox(sandbox.id)
        assert caught.value.status == 404
        with pytest.raises(GatewayError) as bad:
            await client.create_sandbox(mcp={"canary": {}})
        assert bad.value.status == 400 and "token" in bad.value.message
