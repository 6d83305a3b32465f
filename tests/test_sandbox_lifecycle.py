"""Sandbox lifecycle: delete and expiry stop processes and refuse tokens; restarts keep sandboxes; idle stop."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from tests.sandbox_helpers import CATALOG, child_environments, create, mcp_status, text_of, wait_until
from tests.support import RunningGateway, pid_alive, start_gateway


def sandbox_pids(gateway: RunningGateway, canary: str) -> set[int]:
    """The gateway's descendant processes that hold ``canary`` (one sandbox's server and its wrappers)."""
    return {pid for pid, environ in child_environments(gateway).items() if canary.encode() in environ}


def new_canary() -> str:
    return "canary-" + uuid.uuid4().hex[:12]


async def call_secret(gateway: RunningGateway, token: str) -> str:
    async with gateway.client(token) as client:
        return text_of(await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"}))


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(catalog=CATALOG)


async def test_delete_stops_the_sandbox_processes_and_its_token_gets_401(gateway: RunningGateway) -> None:
    canary = new_canary()
    sandbox = create(gateway, {"canary": {"token": canary}})
    other = create(gateway, {"canary": {"token": new_canary()}})
    assert await call_secret(gateway, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    await call_secret(gateway, other["mcp_token"])
    pids = sandbox_pids(gateway, canary)
    assert pids
    home = gateway.data_dir / "home" / sandbox["id"]
    assert home.is_dir()

    with gateway.admin() as admin:
        assert admin.delete(f"/admin/sandboxes/{sandbox['id']}").status_code == 204
        assert admin.get(f"/admin/sandboxes/{sandbox['id']}").status_code == 404

    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=15)
    assert mcp_status(gateway, sandbox["mcp_token"]) == 401
    assert not home.exists()
    # The other sandbox is untouched.
    assert mcp_status(gateway, other["mcp_token"]) == 200
    assert await call_secret(gateway, other["mcp_token"]) == "[REDACTED:canary.token]"


async def test_deleting_a_sandbox_during_a_session_refuses_the_session(gateway: RunningGateway) -> None:
    sandbox = create(gateway, {"canary": {"token": new_canary()}})
    async with gateway.client(sandbox["mcp_token"]) as client:
        await client.list_tools()
        with gateway.admin() as admin:
            assert admin.delete(f"/admin/sandboxes/{sandbox['id']}").status_code == 204
        with pytest.raises(Exception):  # noqa: B017 - the transport reports the 401 its own way
            await client.call_tool("canary__echo", {"text": "still there?"})


async def test_an_expired_sandbox_is_deleted_on_time(gateway: RunningGateway) -> None:
    canary = new_canary()
    sandbox = create(gateway, {"canary": {"token": canary}}, ttl=3)
    assert await call_secret(gateway, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    pids = sandbox_pids(gateway, canary)
    assert pids

    assert wait_until(lambda: mcp_status(gateway, sandbox["mcp_token"]) == 401, timeout=15)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=15)
    with gateway.admin() as admin:
        assert admin.get(f"/admin/sandboxes/{sandbox['id']}").status_code == 404
        ids = [s["id"] for s in admin.get("/admin/sandboxes").json()["sandboxes"]]
    assert sandbox["id"] not in ids
    assert "expired" in gateway.output()


async def test_sandboxes_and_secrets_survive_a_gateway_restart(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(catalog=CATALOG)
    canary = new_canary()
    sandbox = create(gateway, {"canary": {"token": canary}}, id="keeper")
    assert await call_secret(gateway, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    assert gateway.stop() == 0

    again = gateway_factory(catalog=CATALOG, data_dir=gateway.data_dir, port=gateway.port)
    # The same token still works, and the server gets the same secret (redaction proves the value).
    assert await call_secret(again, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    assert sandbox_pids(again, canary)
    with again.admin() as admin:
        row = admin.get("/admin/sandboxes/keeper").json()
    assert row["servers"] == ["canary"]
    assert canary.encode() not in (again.data_dir / "sandboxes.db").read_bytes()


async def test_idle_servers_stop_and_start_again_on_the_next_call(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory(catalog=CATALOG, env={"MCP_GATEWAY_IDLE_TIMEOUT": "1"})
    canary = new_canary()
    sandbox = create(gateway, {"canary": {"token": canary}})
    assert await call_secret(gateway, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    first = sandbox_pids(gateway, canary)
    assert first

    assert wait_until(lambda: not any(pid_alive(p) for p in first), timeout=15)
    assert "idle" in gateway.output()

    assert await call_secret(gateway, sandbox["mcp_token"]) == "[REDACTED:canary.token]"
    second = sandbox_pids(gateway, canary)
    assert second and not (second & first)


async def test_a_call_in_flight_is_not_stopped_for_idleness(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(catalog=CATALOG, env={"MCP_GATEWAY_IDLE_TIMEOUT": "0.5"})
    sandbox = create(gateway, {"canary": {"token": new_canary()}})
    started = time.monotonic()
    async with gateway.client(sandbox["mcp_token"]) as client:
        result = await client.call_tool("canary__sleep", {"seconds": 3})
    assert text_of(result) == "slept" and not result.is_error
    assert time.monotonic() - started >= 3


def test_an_expired_sandbox_in_the_store_is_reaped_at_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("reap")
    gateway = start_gateway(workdir=workdir, catalog=CATALOG)
    try:
        sandbox = create(gateway, {"plain": {}}, ttl=1)
    finally:
        gateway.stop()
    time.sleep(1.5)
    again = start_gateway(workdir=workdir, catalog=CATALOG, data_dir=gateway.data_dir, port=gateway.port)
    try:
        with again.admin() as admin:
            assert wait_until(lambda: sandbox["id"] not in admin.get("/admin/sandboxes").text, timeout=10)
        assert mcp_status(again, sandbox["mcp_token"]) == 401
    finally:
        again.stop()
