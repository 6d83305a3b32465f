"""A server that dies: its calls fail at once, the next call restarts it, a crash loop is stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry, pid_alive
from tests.upstream_helpers import eventually, live_descendants, server_status, zombies_under

CATALOG = {"fix": fixture_entry("--name", "fix"), "other": fixture_entry("--name", "other")}


@pytest.fixture
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(["--runtime", "host", "--servers", "fix,other"], catalog=CATALOG)


async def test_crash_fails_in_flight_calls_at_once(gw: RunningGateway) -> None:
    async with gw.client() as client:
        await client.list_tools()
        slow = asyncio.ensure_future(client.call_tool("fix__sleep", {"seconds": 60}))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(MCPError) as crashed:
            await client.call_tool("fix__crash", {})
        with pytest.raises(MCPError) as in_flight:
            await asyncio.wait_for(slow, 10)
        assert time.monotonic() - started < 5
    for caught in (crashed, in_flight):
        assert "'fix'" in caught.value.message
        assert "exited with code 3" in caught.value.message


async def test_next_call_restarts_a_crashed_server(gw: RunningGateway) -> None:
    async with gw.client() as client:
        await client.list_tools()
        first_pid = server_status(gw, "fix")["pid"]
        with pytest.raises(MCPError):
            await client.call_tool("fix__crash", {})
        crashed = server_status(gw, "fix")
        assert crashed["state"] == "crashed"
        assert "exited with code 3" in crashed["last_error"]
        result = await client.call_tool("fix__echo", {"text": "back"})
    assert result.structured_content == {"text": "back"}
    restarted = server_status(gw, "fix")
    assert restarted["state"] == "running"
    assert restarted["restarts"] == 1
    assert restarted["pid"] not in (None, first_pid)
    assert not pid_alive(first_pid)


async def test_crash_leaves_no_zombie_or_stray_process(gw: RunningGateway) -> None:
    async with gw.client() as client:
        await client.list_tools()
        with pytest.raises(MCPError):
            await client.call_tool("fix__crash", {})
        await eventually(lambda: not zombies_under(gw.process.pid), what="the crashed server to be reaped")
        other_pid = server_status(gw, "other")["pid"]
        assert live_descendants(gw.process.pid) == {other_pid}


async def test_repeated_crashes_mark_the_server_failed_instead_of_restarting(gw: RunningGateway) -> None:
    async with gw.client() as client:
        await client.list_tools()
        for _ in range(5):
            with pytest.raises(MCPError):
                await client.call_tool("fix__crash", {})
        starts_before = server_status(gw, "fix")["restarts"]
        started = time.monotonic()
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__echo", {"text": "again"})
        assert time.monotonic() - started < 2  # refused at once, not restarted
        assert "marked failed" in caught.value.message
        assert "exited with code 3" in caught.value.message
        # The other server of the sandbox is unaffected.
        assert (await client.call_tool("other__echo", {"text": "ok"})).structured_content == {"text": "ok"}
    failed = server_status(gw, "fix")
    assert failed["state"] == "failed"
    assert failed["restarts"] == starts_before
    assert failed["pid"] is None
