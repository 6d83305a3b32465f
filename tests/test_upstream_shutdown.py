"""SIGTERM/SIGINT: stop accepting, let calls in flight finish within the grace period, stop every
server, exit 0, leave nothing behind."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry, pid_alive
from tests.upstream_helpers import live_descendants

CATALOG = {"fix": fixture_entry("--name", "fix"), "other": fixture_entry("--name", "other")}


async def wait_exit(gw: RunningGateway, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while gw.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    code = gw.process.poll()
    assert code is not None, f"gateway still running {timeout} s after the signal"
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_lets_the_call_in_flight_finish_then_exits_0_leaving_nothing(
    gateway_factory: Callable[..., RunningGateway], sig: signal.Signals
) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix,other"], catalog=CATALOG)
    async with gw.client() as client:
        await client.list_tools()
        servers = live_descendants(gw.process.pid)
        assert len(servers) == 2
        call = asyncio.ensure_future(client.call_tool("fix__sleep", {"seconds": 2}))
        await asyncio.sleep(0.5)
        gw.process.send_signal(sig)
        result = await asyncio.wait_for(call, 15)
        assert result.content[0].text == "slept"
        code = await wait_exit(gw, 10)
    assert code == 0, gw.output()
    assert "Traceback" not in gw.output()
    assert not any(pid_alive(p) for p in servers)


async def test_new_connections_are_refused_once_shutting_down(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix"], catalog=CATALOG)
    async with gw.client() as client:
        await client.list_tools()
        call = asyncio.ensure_future(client.call_tool("fix__sleep", {"seconds": 2}))
        await asyncio.sleep(0.5)
        gw.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.base_url + "/healthz", timeout=5)
        await asyncio.wait_for(call, 15)
    assert await wait_exit(gw, 10) == 0


async def test_grace_period_bounds_a_hung_call(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix", "--grace-period", "2"], catalog=CATALOG)
    async with gw.client() as client:
        await client.list_tools()
        servers = live_descendants(gw.process.pid)
        call = asyncio.ensure_future(client.call_tool("fix__sleep", {"seconds": 120}))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        with pytest.raises(MCPError) as caught:  # answered with an error, not a cut stream
            await asyncio.wait_for(call, 15)
        code = await wait_exit(gw, 15)
        elapsed = time.monotonic() - started
    assert "the gateway is shutting down" in caught.value.message
    assert code == 0, gw.output()
    # Bounded by the 2 s grace period: well under the default grace (10 s) and the call (120 s),
    # with room for a loaded machine's process start-up and teardown.
    assert elapsed < 7.5, f"took {elapsed:.1f} s with a 2 s grace period"
    assert "Traceback" not in gw.output()
    assert not any(pid_alive(p) for p in servers)


async def test_idle_sessions_do_not_delay_shutdown(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix"], catalog=CATALOG)
    async with gw.client() as legacy, gw.client(mode="2026-07-28") as modern:
        await legacy.list_tools()
        await modern.list_tools()
        await asyncio.sleep(0.5)  # the legacy session's event stream (GET) is open now
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        code = await wait_exit(gw, 15)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 4, f"an idle session held the shutdown for {elapsed:.1f} s"
