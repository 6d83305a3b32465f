"""Starting a sandbox's servers: in parallel, with a start timeout, failures isolated and reported."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.upstream.errors import UpstreamError
from gateway.upstream.launch import LaunchSpec
from gateway.upstream.server import ServerLimits, UpstreamServer
from tests.support import FIXTURE_SERVER, RunningGateway, fixture_entry, pid_alive
from tests.upstream_helpers import live_descendants, server_status


async def test_servers_of_a_sandbox_start_in_parallel(gateway_factory: Callable[..., RunningGateway]) -> None:
    catalog = {name: fixture_entry("--start-delay", "2", "--name", name) for name in ("a", "b", "c")}
    gw = gateway_factory(["--runtime", "host", "--servers", "a,b,c"], catalog=catalog)
    started = time.monotonic()
    async with gw.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
    elapsed = time.monotonic() - started
    assert {"a__echo", "b__echo", "c__echo"} <= names
    assert elapsed < 5.5, f"three servers with a 2 s start took {elapsed:.1f} s: not started in parallel"


async def test_server_that_exits_at_start_is_reported_with_its_stderr(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    catalog = {"ok": fixture_entry(), "broken": fixture_entry("--exit-at-start")}
    gw = gateway_factory(["--runtime", "host", "--servers", "ok,broken"], catalog=catalog)
    async with gw.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "ok__echo" in names and not any(n.startswith("broken__") for n in names)
        assert (await client.call_tool("ok__echo", {"text": "fine"})).structured_content == {"text": "fine"}
    broken = server_status(gw, "broken")
    assert broken["state"] == "failed"
    assert broken["pid"] is None
    assert "exited with code 2" in broken["last_error"]
    assert "fatal: configured to exit" in broken["last_error"]


async def test_server_that_hangs_on_initialize_times_out_and_is_killed(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    catalog = {"ok": fixture_entry(), "hung": fixture_entry("--hang-on-initialize", limits={"start_timeout": 2})}
    gw = gateway_factory(["--runtime", "host", "--servers", "ok,hung"], catalog=catalog)
    started = time.monotonic()
    async with gw.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert time.monotonic() - started < 10
    assert "ok__echo" in names and not any(n.startswith("hung__") for n in names)
    hung = server_status(gw, "hung")
    assert hung["state"] == "failed"
    assert "did not finish starting within 2 s" in hung["last_error"]
    # Only the healthy server is left running under the gateway.
    ok_pid = server_status(gw, "ok")["pid"]
    assert live_descendants(gw.process.pid) == {ok_pid}


async def test_call_to_a_server_that_failed_to_start_names_the_reason(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    from mcp.shared.exceptions import MCPError

    catalog = {"ok": fixture_entry(), "broken": fixture_entry("--exit-at-start")}
    gw = gateway_factory(["--runtime", "host", "--servers", "ok,broken"], catalog=catalog)
    async with gw.client() as client:
        await client.list_tools()
        with pytest.raises(MCPError) as caught:  # its tools were never listed: an unknown tool
            await client.call_tool("broken__echo", {"text": "x"})
    assert caught.value.code == -32602


# -- stop() racing a start in progress (in-process: the race needs precise timing) ----------------


def _fixture_launcher(gate: asyncio.Event | None, *flags: str) -> Callable[[], object]:
    async def launch() -> LaunchSpec:
        if gate is not None:
            await gate.wait()
        return LaunchSpec(argv=[sys.executable, str(FIXTURE_SERVER), *flags], env={"PATH": "/usr/bin:/bin"})

    return launch


def _children() -> set[int]:
    import os

    from tests.support import process_tree

    return {p for p in process_tree(os.getpid()) if pid_alive(p)}


async def test_stop_during_launch_kills_the_process_spawned_after_it(tmp_path: Path) -> None:
    gate = asyncio.Event()
    before = _children()
    server = UpstreamServer("late", "sbx", _fixture_launcher(gate), tmp_path / "late.log", ServerLimits(10, 10))
    start = asyncio.ensure_future(server.ensure_running())
    await asyncio.sleep(0.2)  # the start is inside the launcher now
    stopping = asyncio.ensure_future(server.stop())
    await asyncio.sleep(0.1)
    gate.set()  # the launcher finishes after stop() began: the process is spawned "too late"
    await asyncio.wait_for(stopping, 20)
    with pytest.raises(UpstreamError):
        await start
    assert server.state == "stopped"
    assert _children() - before == set()


async def test_stop_during_initialize_kills_the_starting_process(tmp_path: Path) -> None:
    before = _children()
    launcher = _fixture_launcher(None, "--start-delay", "30")
    server = UpstreamServer("slow", "sbx", launcher, tmp_path / "slow.log", ServerLimits(60, 10))
    start = asyncio.ensure_future(server.ensure_running())
    for _ in range(100):
        if server.process is not None:
            break
        await asyncio.sleep(0.05)
    assert server.process is not None
    began = time.monotonic()
    await asyncio.wait_for(server.stop(), 20)
    assert time.monotonic() - began < 10
    with pytest.raises(UpstreamError):
        await start
    assert _children() - before == set()
